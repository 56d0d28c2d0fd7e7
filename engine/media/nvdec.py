"""Hardware video decoding with NVIDIA's PyNvVideoCodec (NVDEC): NV12 planes on the device.

A thin layer over ``PyNvVideoCodec.SimpleDecoder``; the module is passed in (``nvc``), so the CPU
tests drive this code with a fake (tests/fake_pynvvideocodec.py). For one video:

1. Validation, the CPU decoder's own: :func:`~engine.media.source.open_container` (input kind,
   ``max_bytes``, playlist sniffing, container whitelist) and
   :func:`~engine.media.video.open_video_stream` (codec allow-list, picture size, duration). The
   input is read once, bounded by ``max_bytes``, and the decoder gets those validated bytes, never
   a path it would open again: NVDEC's own FFmpeg demuxer has no format whitelist.
2. The demux-only index and the sampling plan of the CPU decoder
   (:func:`~engine.media.video.index_stream`, :func:`~engine.media.video.plan_samples`), so both
   paths take the same frames, with the same ``Limits.max_frames`` and deadline checks.
3. Qualification (:func:`qualify`) from the first picture, decoded by FFmpeg on the CPU: PyAV has
   no getter for a stream's display matrix, and the frame's pixel format and colour tags are the
   ones the CPU path would use.
4. For the "keyframes" strategy on H.264 / HEVC, the chosen keyframes' packets alone through the
   core decoder (Note [NVDEC keyframe packets]); otherwise one ``SimpleDecoder`` and one
   ``get_batch_frames_by_index`` call for the planned frames.

A stream that does not qualify, a decoder that raises, or one whose output disagrees with the
CPU-side index (frame count, a frame's timestamp, the buffer's shape) gives a :class:`Fallback`
with the reason; the caller then decodes on the CPU.

PyNvVideoCodec 2.2.4 facts relied on, and where they come from
--------------------------------------------------------------
* ``SimpleDecoder(enc_file_path, gpu_id=, use_device_memory=, need_scanned_stream_metadata=,
  output_color_type=)`` takes ``bytes`` (copied once into native memory); ``len(decoder)`` is the
  container's frame count, or the scanned one when the container has none and
  ``need_scanned_stream_metadata`` is set (the constructor raises when it is 0);
  ``get_batch_frames_by_index`` returns the frames in the order asked, skipping out-of-range
  indices with a warning: PyNvVideoCodec/decoders/SimpleDecoder.py in the 2.2.4 wheel, and
  https://docs.nvidia.com/video-technologies/pynvvideocodec/pynvc-api-reference/index.html
  (SimpleDecoder constructor parameters).
* ``OutputColorType.NATIVE`` gives NV12 for 8-bit 4:2:0 streams, one 2-D uint8 buffer of shape
  ``(height * 3 / 2, width)``: the luma plane (``height`` rows) above the interleaved UV plane
  (``height / 2`` rows): the comment in samples/advanced/simple_decode_from_memory.py of the
  2.2.4 wheel. The row pitch is not documented, so it is read from the DLPack strides.
* The core decoder: ``CreateDecoder(gpuid=, codec=, usedevicememory=)`` with a
  ``cudaVideoCodec`` member (H264, HEVC: names the 2.2.4 module's strings hold), and
  ``Decode(PacketData)`` returning the frames it completed; a ``PacketData()`` carries the
  bitstream as ``bsl_data`` (an address) and ``bsl`` (bytes) with its ``pts``, and an empty one
  (``bsl`` 0) ends the stream, flushing the frames still held: samples/advanced/decode.py and
  decode_with_cuda_control.py of the 2.2.4 wheel. Its frames stay valid only until later Decode
  calls reuse their buffers ("decodes a frame and returns the locked frame buffers ... without the
  buffers getting overwritten, even if subsequent decode calls are made": the docstring of the
  locked-frame variant, strings of PyNvVideoCodec_130.so).
* ``DecodedFrame`` exports ``__dlpack__`` / ``__dlpack_device__`` ("Export the buffer as a DLPack
  tensor", ``strings`` of PyNvVideoCodec_130.so; samples/utils/Utils.py calls
  ``torch.from_dlpack(frame)``) and has a ``timestamp`` (``<DecodedFrame [timestamp=`` in the
  same strings). Its units are stream time-base ticks; see Note [NVDEC timestamps].

Note [NVDEC timestamps]
On an H100 (PyNvVideoCodec 2.2.4, driver 580), an H.264 MP4 with B-frames stamped its first
frame -1024 (time base 1/12800) where its pts is 0: the first packet's dts. The engine takes the
timestamp of the k-th frame in display order to be the k-th smallest decode timestamp (the pts
where there are no B-frames, as in the three clips without them that matched), so a frame is
accepted when its timestamp is either; anything else falls back to the CPU. tests/test_nvdec.py
compares the frames with the CPU decoder's, byte for byte, on a GPU.

Note [NVDEC keyframe packets]
``SimpleDecoder`` seeks to each index and decodes from there; on an H100 a 480p 6 s clip at 1 fps
took 82-92 ms (its construction 18-20 ms, the 6-frame fetch 53-69 ms) where FFmpeg on the CPU
decodes the 6 keyframes in 11-17 ms. For the "keyframes" strategy (the pipeline's 1 fps wherever
keyframes are at least that dense) only the chosen keyframes need decoding, and each decodes on
its own: their packets alone go to the core decoder, converted to Annex B by FFmpeg's
``h264_mp4toannexb`` / ``hevc_mp4toannexb`` (parameter sets in band, as NVDEC's parser needs them;
Annex B input passes through), each with its pts, then one flush. Each frame is copied at once
into rows every 64 bytes (the device staging's layout), since the next Decode may reuse its
buffer; the host waits for the copies (and the work queued before them on torch's stream) before
it calls Decode again. Not yet run on a GPU: tests/test_nvdec.py drives it with a fake whose core decoder is
FFmpeg's and whose buffers are overwritten by the next Decode call.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from .frame import Frame, frame_sdr, full_range_for, matrix_for, stream_sar
from .hdr import SdrConversion
from .limits import DEFAULT_LIMITS, Limits
from .orientation import Orientation, frame_orientation
from .source import Packets, media_errors, open_container, read_source
from .video import (DecodedVideo, Sampling, first_picture, index_stream, open_video_stream,
                    plan_samples)

__all__ = ["NVDEC_CODECS", "Fallback", "qualify", "decode_video_nvdec"]

# Codecs NVDEC decodes in 8-bit 4:2:0 (AV1 from Ampere on: an older GPU's decoder raises, which
# falls back). Other allow-listed codecs (vp8, mpeg4, mpeg2video, prores, image codecs) stay on
# the CPU.
NVDEC_CODECS = frozenset({"h264", "hevc", "vp9", "av1"})
_NV12_SOURCES = frozenset({"yuv420p", "yuvj420p"})  # 8-bit 4:2:0: NATIVE output is NV12


@dataclass(frozen=True)
class Fallback:
    """NVDEC did not decode this video; ``reason`` says why (for the log)."""

    reason: str


def qualify(codec: str, pix_fmt: str, orientation: Orientation, matrix: str | None, width: int,
            height: int, sdr: SdrConversion | None = None, interlaced: bool = False) -> str | None:
    """Why NVDEC must not take a stream, or None when it may.

    NV12 output needs an 8-bit 4:2:0 source and even dimensions (whole chroma rows); the fused
    kernel neither turns nor mirrors pictures, nor converts matrices other than BT.601/BT.709,
    nor maps HDR / BT.2020 pictures to SDR (``sdr``: engine/media/hdr.py, done on the CPU).
    """
    if codec not in NVDEC_CODECS:
        return _codec_reason(codec)
    if pix_fmt not in _NV12_SOURCES:
        return f"pixel format {pix_fmt!r} is not 8-bit 4:2:0 (NVDEC's NV12 output)"
    if not orientation.is_identity:
        degrees, mirrored = orientation.as_rotation()
        how = f"rotated by {degrees} degrees" + (" and mirrored" if mirrored else "")
        return f"the stream is {how} for display (the fused kernel does not turn pictures)"
    if matrix is None:
        return "the colour matrix is neither BT.601 nor BT.709"
    if sdr is not None:
        return f"the picture is {sdr.transfer.upper()} in {sdr.primaries.upper()} (mapped to SDR on the CPU)"
    if interlaced:
        return "the picture is interlaced (its top field is taken on the CPU: Note [interlaced frames])"
    if width % 2 or height % 2:
        return f"odd picture size {width}x{height} (NV12 needs whole chroma rows)"
    return None


def _codec_reason(codec: str) -> str:
    return f"codec {codec!r} is not decoded by NVDEC here (only {', '.join(sorted(NVDEC_CODECS))})"


def decode_video_nvdec(source: Any, sampling: Sampling | None = None, limits: Limits | None = None,
                       *, nvc: Any, gpu_id: int = 0) -> DecodedVideo | Fallback:
    """Decode the frames the CPU decoder would sample, with NVDEC, as "nv12" Frames whose planes
    are torch views of the decoder's device buffers (copies of them for keyframe packets: Note
    [NVDEC keyframe packets]); a :class:`Fallback` when NVDEC cannot.

    Raises the CPU decoder's typed errors for inputs that fail validation (before any decoder is
    constructed).
    """
    sampling = sampling or Sampling()
    limits = limits or DEFAULT_LIMITS
    deadline = limits.deadline()
    opened = read_source(source, limits)
    try:
        data = opened.fileobj.read()
    finally:
        if opened.close:
            opened.fileobj.close()
    with media_errors("video"), open_container(data, limits) as c:
        vs, codec, start, duration, fps = open_video_stream(c, limits)
        if codec not in NVDEC_CODECS:  # before any more work on the CPU
            return Fallback(_codec_reason(codec))
        index = index_stream(c, vs, start, duration, fps, limits, deadline)
        first = first_picture(c, vs, index.first_seek_time(), limits, deadline)
        if first is None:
            return Fallback("the first picture does not decode")
        pix_fmt, width, height, orientation = (first.format.name, first.width, first.height,
                                               frame_orientation(first, codec))
        matrix = matrix_for(int(first.colorspace), height)
        sdr = frame_sdr(first)
        sar, interlaced = stream_sar(vs), bool(getattr(first, "interlaced_frame", False))
        full_range = full_range_for(pix_fmt, int(first.color_range))
        tb, scanned = vs.time_base, not vs.frames  # no frame count in the container (Matroska)
    reason = qualify(codec, pix_fmt, orientation, matrix, width, height, sdr, interlaced)
    if reason is not None:
        return Fallback(reason)
    shots: list[float] = []
    if sampling.mode == "all":
        strategy, picked, targets = "all", index.times[:sampling.max_frames], []
    else:
        plan = plan_samples(sampling, index)
        strategy, picked, targets, shots = plan.strategy, plan.frames, plan.targets, plan.shots
        duration = index.duration
    indices = [bisect.bisect_left(index.times, t) for t in picked]
    decoded = _decode_cost(indices, [bisect.bisect_left(index.times, k) for k in index.keys])
    limits.check_frames(decoded)
    if strategy == "keyframes" and codec in _ANNEXB:
        fetched = _fetch_keyframes(nvc, data, limits, deadline, codec, [int(round(t / tb)) for t in picked],
                                   gpu_id, width, height)
    else:
        fetched = _fetch(nvc, data, gpu_id, scanned, indices, len(index.times))
    if isinstance(fetched, Fallback):
        return fetched
    deadline.check()
    frames, stamps = [], []
    for i, t, frame in zip(indices, picked, fetched[1]):
        ticks = {int(round(t / tb)), int(round(index.decode_times[i] / tb))}  # Note [NVDEC timestamps]
        if int(frame.timestamp) not in ticks:
            return Fallback(f"NVDEC frame {i} has timestamp {frame.timestamp}, the index pts/dts "
                            f"{'/'.join(map(str, sorted(ticks)))} (time base {tb})")
        planes = _nv12_planes(frame, width, height)
        if isinstance(planes, Fallback):
            return planes
        rel = round(t - start, 6)
        frames.append(Frame("nv12", planes, width, height, matrix, full_range, rel, sar))
        stamps.append(rel)
    return DecodedVideo(
        frames=frames, timestamps=stamps, duration=float(duration), fps=float(fps), width=width,
        height=height, rotation=0, decoded_frames=decoded, strategy=strategy, codec=codec,
        keyframe_interval=index.key_gap if strategy != "all" else None, decode_errors=index.errors,
        complete=_complete(sampling, index, picked, start, duration, fps),
        targets=[round(t - start, 6) for t in targets], shots=[round(t - start, 6) for t in shots],
        keepalive=fetched, sar=sar)


def _complete(sampling: Sampling, index, picked: list[float], start: float, duration: float,
              fps: float) -> bool:
    """The CPU decoder's completeness rule for the same frames: "all" must reach the declared end
    unless capped; sampled modes must not end well before it; no demuxer errors."""
    if index.errors:
        return False
    if sampling.mode != "all":
        return not index.short
    capped = sampling.max_frames is not None and len(picked) >= sampling.max_frames
    return capped or duration <= 0 or fps <= 0 or picked[-1] >= start + duration - 1.5 / fps


def _decode_cost(indices: list[int], key_indices: list[int]) -> int:
    """Frames NVDEC decodes to return ``indices`` (sorted): from the keyframe at or before each,
    continuing instead when the previous one lies in the same GOP before it. Checked against
    ``Limits.max_frames`` like the CPU decoder's count."""
    total, pos = 0, -1
    for i in indices:
        k = key_indices[max(bisect.bisect_right(key_indices, i) - 1, 0)] if key_indices else 0
        total += i - pos if k <= pos < i else i - k + 1
        pos = i
    return total


def _fetch(nvc: Any, data: bytes, gpu_id: int, scanned: bool, indices: list[int],
           count: int) -> tuple[Any, list] | Fallback:
    """``(decoder, frames)`` for ``indices``, or a Fallback when the decoder raises or its frame
    count disagrees with the index (its indices would then name other frames). The decoder is
    returned to be kept alive with its frames, whose device memory it may own."""
    try:
        decoder = nvc.SimpleDecoder(data, gpu_id=gpu_id, use_device_memory=True,
                                    need_scanned_stream_metadata=scanned,
                                    output_color_type=nvc.OutputColorType.NATIVE)
        n = len(decoder)
        if n != count:
            return Fallback(f"NVDEC counts {n} frames, the demuxer {count}")
        out = list(decoder.get_batch_frames_by_index(indices))
    except Exception as e:  # noqa: BLE001 - any decoder failure: the CPU path decodes (or refuses)
        return Fallback(f"NVDEC failed: {type(e).__name__}: {e}")
    if len(out) != len(indices):
        return Fallback(f"NVDEC returned {len(out)} of {len(indices)} frames")
    return decoder, out


# codec -> (FFmpeg bitstream filter to Annex B, cudaVideoCodec member): Note [NVDEC keyframe packets]
_ANNEXB = {"h264": ("h264_mp4toannexb", "H264"), "hevc": ("hevc_mp4toannexb", "HEVC")}


def _fetch_keyframes(nvc: Any, data: bytes, limits: Limits, deadline, codec: str, ticks: list[int],
                     gpu_id: int, width: int, height: int) -> tuple[None, list] | Fallback:
    """``(None, frames)``: the keyframes whose pts are ``ticks`` (sorted), decoded from their own
    packets by the core decoder and copied out of its buffers (Note [NVDEC keyframe packets]);
    a Fallback when the decoder raises or returns other frames than asked."""
    from av.bitstream import BitStreamFilterContext

    filt, name = _ANNEXB[codec]
    try:
        decoder = nvc.CreateDecoder(gpuid=gpu_id, codec=getattr(nvc.cudaVideoCodec, name), usedevicememory=True)
    except Exception as e:  # noqa: BLE001 - no decoder: the CPU decodes
        return Fallback(f"NVDEC failed: {type(e).__name__}: {e}")
    out: list = []
    left = set(ticks)
    with media_errors("video"), open_container(data, limits) as c:
        vs = open_video_stream(c, limits)[0]
        annexb = BitStreamFilterContext(filt, vs)
        for p in Packets(c, vs, deadline):
            if not left:
                break
            t = p.pts if p.pts is not None else p.dts
            if not p.is_keyframe or t not in left:
                continue
            left.discard(t)
            for q in annexb.filter(p):
                got = _decode_annexb(nvc, decoder, bytes(q), t, width, height)
                if isinstance(got, Fallback):
                    return got
                out += got
    got = _decode_annexb(nvc, decoder, b"", 0, width, height)  # an empty packet flushes
    if isinstance(got, Fallback):
        return got
    out += got
    if len(out) != len(ticks):
        return Fallback(f"NVDEC returned {len(out)} of {len(ticks)} keyframes")
    return None, sorted(out, key=lambda f: f.timestamp)


class _CopiedFrame:
    """An NV12 picture copied out of the core decoder's buffer (rows every 64 bytes), exported
    through DLPack as a DecodedFrame is, with the decoder's ``timestamp``."""

    def __init__(self, timestamp: int, nv12):
        self.timestamp, self.nv12 = timestamp, nv12

    def __dlpack__(self, **kwargs):
        return self.nv12.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.nv12.__dlpack_device__()


def _decode_annexb(nvc: Any, decoder: Any, payload: bytes, pts: int, width: int,
                   height: int) -> list | Fallback:
    """The frames ``Decode`` completes for one Annex B packet (empty: the flush), copied."""
    import numpy as np
    import torch

    from engine.device_staging import padded_row

    buf = np.frombuffer(payload, np.uint8)  # alive until Decode returns
    packet = nvc.PacketData()
    packet.bsl_data = int(buf.ctypes.data) if buf.size else 0
    packet.bsl = int(buf.size)
    packet.pts = int(pts)
    try:
        frames = list(decoder.Decode(packet))
    except Exception as e:  # noqa: BLE001 - any decoder failure: the CPU path decodes
        return Fallback(f"NVDEC failed: {type(e).__name__}: {e}")
    out = []
    try:
        for frame in frames:
            planes = _nv12_planes(frame, width, height)
            if isinstance(planes, Fallback):
                return planes
            y = planes[0]
            copy = torch.empty((height * 3 // 2, padded_row(width, 1)), dtype=torch.uint8, device=y.device)
            copy[:height, :width].copy_(y)
            copy[height:, :width].copy_(planes[1])
            out.append(_CopiedFrame(int(frame.timestamp), copy[:, :width]))
    finally:  # the copies are only queued: they must read the buffers before the next Decode
        if out:  # (or before the decoder goes, when a later frame falls back)
            _wait_for_copies(out[0].nv12)
    return out


def _wait_for_copies(copy: Any) -> None:
    """Block until the work queued on torch's current stream of ``copy``'s device has run."""
    import torch

    if copy.is_cuda:
        torch.cuda.current_stream(copy.device).synchronize()


def _nv12_planes(frame: Any, width: int, height: int) -> tuple | Fallback:
    """(Y, UV) torch views of one NV12 frame buffer: rows [0, H) and [H, H + H/2) of the
    ``(H * 3 / 2, W)`` uint8 buffer, with the buffer's own row pitch (no copy)."""
    import torch

    try:
        t = torch.from_dlpack(frame)
    except Exception as e:  # noqa: BLE001 - an export torch cannot take: decode on the CPU
        return Fallback(f"NVDEC frame does not export through DLPack: {e}")
    if t.dim() != 2 or t.dtype != torch.uint8 or t.shape[0] < height * 3 // 2 or t.shape[1] < width:
        return Fallback(f"NVDEC frame buffer is {tuple(t.shape)} {t.dtype}, not NV12 "
                        f"({height * 3 // 2}, {width}) uint8")
    return t[:height, :width], t[height:height * 3 // 2, :width]
