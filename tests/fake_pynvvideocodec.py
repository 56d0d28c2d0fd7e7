"""A fake ``PyNvVideoCodec`` module for the CPU tests of engine.media.nvdec.

Only what engine.media.nvdec uses, behaving as PyNvVideoCodec 2.2.4 does where the engine relies
on it (see the API notes in engine/media/nvdec.py):

* ``SimpleDecoder(data, gpu_id=, use_device_memory=, need_scanned_stream_metadata=,
  output_color_type=)`` decodes every frame with PyAV (the clips are small); like the real one it
  raises when the container has no frame count and no scan was asked for, and its constructions
  are recorded in ``module.constructed`` (so a test can prove the decoder never saw an input);
* ``len(decoder)`` and ``get_batch_frames_by_index`` (frames in the order asked, out-of-range
  and repeated indices dropped);
* frames with ``timestamp``: the k-th frame in presentation order carries the k-th smallest decode
  timestamp in time-base ticks, as the real one does on B-frame streams (= the pts without
  B-frames; Note [NVDEC timestamps] in engine/media/nvdec.py), and exports through DLPack one
  ``(H * 3 / 2, W)`` uint8 NV12 buffer, Y rows above interleaved UV rows, whose rows are padded
  (a decoder's pitch), so the engine must honour the strides;
* the core decoder (Note [NVDEC keyframe packets]): ``CreateDecoder(gpuid=, codec=,
  usedevicememory=)`` with a ``cudaVideoCodec`` member, ``PacketData`` (``bsl_data`` address,
  ``bsl`` bytes, ``pts``) and ``Decode(packet)``, which decodes the Annex B bytes with FFmpeg's own
  decoder of that codec (so packets it cannot decode on their own fail here too), stamps each
  frame with its packet's pts, flushes on an empty packet, and scribbles over the buffers of the
  frames it returned before, as later Decode calls of the real one may reuse them.
"""

from __future__ import annotations

import ctypes
import io
import types

import av
import numpy as np

from engine.media.frame import frame_from_av
from engine.media.orientation import IDENTITY

PITCH_PAD = 32  # bytes of padding after each row of the fake decoder's buffers


class DecodedFrame:
    """One NV12 picture in host memory, exported as the real one is (DLPack, ``timestamp``)."""

    def __init__(self, vf):
        if vf.format.name not in ("yuv420p", "yuvj420p"):
            raise RuntimeError(f"the fake decodes 8-bit 4:2:0 only, got {vf.format.name}")
        y, u, v = frame_from_av(vf, orientation=IDENTITY).planes
        h, w = y.shape
        buf = np.zeros((h * 3 // 2, w + PITCH_PAD), np.uint8)
        buf[:h, :w] = y
        buf[h:, 0:w:2] = u
        buf[h:, 1:w:2] = v
        self.buffer = buf
        self.nv12 = buf[:, :w]  # the padded pitch shows in the exported strides
        self.timestamp = int(vf.pts)

    def __dlpack__(self, **kwargs):
        return self.nv12.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.nv12.__dlpack_device__()


class SimpleDecoder:
    """Decodes the whole clip with PyAV; frames in presentation order."""

    constructed: list  # per fake module (fake_nvc)

    def __init__(self, enc_file_path, gpu_id=0, use_device_memory=True,
                 need_scanned_stream_metadata=False, output_color_type=None):
        self.constructed.append({"kind": "simple", "gpu_id": gpu_id, "use_device_memory": use_device_memory,
                                   "scanned": need_scanned_stream_metadata,
                                   "output_color_type": output_color_type})
        if not isinstance(enc_file_path, bytes):
            raise TypeError("the engine hands the decoder the validated bytes")
        with av.open(io.BytesIO(enc_file_path)) as c:
            vs = c.streams.video[0]
            counted = vs.frames
            self.frames = sorted((DecodedFrame(f) for f in c.decode(vs)), key=lambda f: f.timestamp)
        with av.open(io.BytesIO(enc_file_path)) as c:  # stamped as the real one (Note [NVDEC timestamps])
            dts = sorted(p.dts for p in c.demux(c.streams.video[0]) if p.dts is not None and p.size)
        for frame, stamp in zip(self.frames, dts):
            frame.timestamp = int(stamp)
        self.num_frames = counted or (len(self.frames) if need_scanned_stream_metadata else 0)
        if self.num_frames == 0:  # as SimpleDecoder.__init__ does
            raise Exception("Elementary streams not supported by Simple Decoder. Invalid input stream.")

    def __len__(self):
        return self.num_frames

    def get_batch_frames_by_index(self, indices):
        seen, out = set(), []
        for i in indices:
            if 0 <= i < len(self) and i not in seen:
                seen.add(i)
                out.append(self.frames[i])
        return out


class PacketData:
    def __init__(self):
        self.bsl_data, self.bsl, self.pts = 0, 0, 0


class CoreDecoder:
    """FFmpeg's decoder of the codec over Annex B packets, frames stamped with their packet's pts."""

    def __init__(self, codec: str):
        self.context = av.CodecContext.create(codec, "r")
        self.returned: list[DecodedFrame] = []  # frames of the last call, whose buffers the next reuses
        self.decoded_packets = 0

    def Decode(self, packet):  # noqa: N802 - PyNvVideoCodec's name
        for old in self.returned:
            old.buffer[:] = 0xAB
        if packet.bsl:
            pkt = av.Packet(ctypes.string_at(packet.bsl_data, packet.bsl))
            pkt.pts = packet.pts
            self.decoded_packets += 1
            frames = self.context.decode(pkt)
        else:
            frames = self.context.decode(None)
        self.returned = [DecodedFrame(vf) for vf in frames]
        return list(self.returned)


def fake_nvc() -> types.ModuleType:
    """A fresh fake module whose ``constructed`` lists its decoders' constructor arguments."""
    module = types.ModuleType("PyNvVideoCodec")
    module.__version__ = "2.2.4-fake"
    module.constructed = []
    module.SimpleDecoder = type("SimpleDecoder", (SimpleDecoder,), {"constructed": module.constructed})
    module.OutputColorType = types.SimpleNamespace(NATIVE="NATIVE", RGB="RGB", RGBP="RGBP")
    module.cudaVideoCodec = types.SimpleNamespace(H264="h264", HEVC="hevc", VP9="vp9", AV1="av1")
    module.PacketData = PacketData
    module.decoders = []  # the core decoders made, for tests

    def create_decoder(gpuid=0, codec=None, cudacontext=0, cudastream=0, usedevicememory=False):
        module.constructed.append({"kind": "core", "gpu_id": gpuid, "use_device_memory": usedevicememory,
                                   "codec": codec})
        module.decoders.append(CoreDecoder(codec))
        return module.decoders[-1]

    module.CreateDecoder = create_decoder
    return module
