"""Optional decord backend: RGB frames through decord's ``VideoReader`` (``pip install decord``).

Same safety path as PyAV: the input is validated by :func:`engine.media.source.read_source` and
probed by PyAV (demuxer/codec allow-list, size, pixel and duration limits) before decord sees it,
and decord always gets a Python file object (never a path or URL).  Frames are ``rgb24`` (decord
converts with its own swscale setup).  Sampling picks exact frames from decord's frame index (the
frame on screen at each target, as the PyAV backend's exact sampling; "keyframes" uses
``get_key_indices``).  Frames come upright as
from the PyAV backend (Note [display orientation]): decord turns them by the display matrix's angle
but does not mirror them, so PyAV reads the whole matrix from the first picture and the rest is
applied here, and they carry the stream's sample aspect ratio as PyAV reads it.  HDR / BT.2020
streams are not mapped to SDR (decord converts them itself; a warning is logged).
``decoded_frames`` reports the frames returned because decord does not expose its decoder count.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from engine.errors import CorruptMediaError, EmptyMediaError, MediaError, UnsupportedMediaError

from .frame import frame_from_array
from .limits import DEFAULT_LIMITS, Limits
from .orientation import IDENTITY, Orientation, frame_orientation
from .source import media_errors, open_container, read_source

__all__ = ["decord_available", "DecordSource", "decode_video_decord"]

log = logging.getLogger(__name__)


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _import_decord():
    try:
        import decord
    except ImportError as e:
        raise UnsupportedMediaError(
            "the decord backend needs the optional 'decord' package (pip install decord==0.6.0); "
            "use backend='pyav' otherwise") from e
    return decord


def _stream_facts(f, limits: Limits) -> tuple[Orientation, Orientation, tuple[int, int]]:
    """The display orientation of the video in ``f`` (from the first picture PyAV decodes), what
    is left of it after decord's own turn by the matrix's angle, and the sample aspect ratio in
    display orientation. Logs when the stream is HDR or BT.2020: decord's RGB is not mapped to SDR."""
    from .frame import frame_sdr, stream_sar
    from .video import first_picture, open_video_stream

    f.seek(0)
    with media_errors("video"), open_container(f, limits) as c:
        vs, codec, start, _, _ = open_video_stream(c, limits)
        sar = stream_sar(vs)
        first = first_picture(c, vs, start, limits, limits.deadline())
    if first is None:
        return IDENTITY, IDENTITY, sar
    if frame_sdr(first) is not None:
        log.warning("decord backend: the stream is HDR / BT.2020 and decord's RGB is not mapped to SDR "
                    "(backend='pyav' is: engine/media/hdr.py)")
    upright = frame_orientation(first, codec)
    if upright.transpose:
        sar = (sar[1], sar[0])
    return upright, upright.after(Orientation.from_rotation(float(first.rotation or 0))), sar


class DecordSource:
    """A validated video opened with decord.  Use as a context manager or call ``close()``."""

    def __init__(self, source: Any, limits: Limits | None = None, *, num_threads: int = 0):
        from .probe import probe

        decord = _import_decord()
        self.limits = limits or DEFAULT_LIMITS
        self._opened = read_source(source, self.limits)
        f = self._opened.fileobj
        try:
            self.info = probe(f, self.limits)
            if self.info.kind != "video":
                raise EmptyMediaError(f"input is {self.info.kind}, not a video")
            self.orientation, self._left, self.sar = _stream_facts(f, self.limits)
            f.seek(0)
            try:
                self.reader = decord.VideoReader(f, ctx=decord.cpu(0), num_threads=num_threads)
            except Exception as e:  # noqa: BLE001 - decord raises DECORDError/RuntimeError
                raise CorruptMediaError(f"decord cannot open the video: {e}") from None
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.reader)

    def timestamps(self) -> np.ndarray:
        """Presentation time (s) of every frame (start of each frame)."""
        return np.asarray(self.reader.get_frame_timestamp(range(len(self.reader))))[:, 0]

    def keyframe_indices(self) -> list[int]:
        return [int(i) for i in self.reader.get_key_indices()]

    def get(self, indices) -> np.ndarray:
        return self.reader.get_batch(list(indices)).asnumpy()

    def close(self) -> None:
        self.reader = None
        if self._opened.close:
            try:
                self._opened.fileobj.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_video_decord(source: Any, sampling=None, limits: Limits | None = None):
    from .video import DecodedVideo, Sampling, _on_screen, _targets, _thin, with_shots

    sampling = sampling or Sampling()
    limits = limits or DEFAULT_LIMITS
    with DecordSource(source, limits) as ds:
        try:
            n = len(ds)
            if n == 0:
                raise CorruptMediaError("video holds no frames")
            times = [float(t) for t in ds.timestamps()]
            fps = float(ds.reader.get_avg_fps() or 0.0)
            frame_dur = 1.0 / fps if fps else 0.04
            limits.check_duration(times[-1] + frame_dur - times[0], "frame timestamps span")  # as index_stream
            targets: list[float] = []
            shots: list[float] = []
            if sampling.mode == "all":
                idx = list(range(n if sampling.max_frames is None else min(n, sampling.max_frames)))
            elif sampling.mode == "keyframes":
                idx = _thin(ds.keyframe_indices(), sampling.max_frames)
            else:
                targets, _ = _targets(sampling, times[0], times[-1], frame_dur)
                eps = min(frame_dur * 0.25, 1e-3)
                idx = sorted({_on_screen(times, t, eps) for t in targets})
                keys = [times[i] for i in ds.keyframe_indices()]
                shots = with_shots(sampling, [times[i] for i in idx], times, keys)
                idx = sorted(idx + [times.index(t) for t in shots])
            limits.check_frames(len(idx))
            arrays = ds.get(idx)
        except MediaError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CorruptMediaError(f"decord failed to decode: {e}") from None
        frames = [dataclasses.replace(frame_from_array(np.ascontiguousarray(ds._left.apply(a)),
                                                       pts=round(times[i], 6)), sar=ds.sar)
                  for a, i in zip(arrays, idx)]
        duration = ds.info.duration or (times[-1] + frame_dur)
        rotation, mirrored = ds.orientation.as_rotation()
    return DecodedVideo(
        frames=frames, timestamps=[f.pts for f in frames], duration=float(duration), fps=fps,
        width=frames[0].width, height=frames[0].height, rotation=rotation, decoded_frames=len(frames),
        strategy="decord", codec=ds.info.video_codec or "", targets=[round(t, 6) for t in targets],
        shots=[round(t, 6) for t in shots], mirrored=mirrored, sar=ds.sar)
