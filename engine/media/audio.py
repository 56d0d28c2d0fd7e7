"""Audio decoding to float32 mono at a fixed rate, resampled by FFmpeg (``av.AudioResampler``)."""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from engine.errors import CorruptMediaError, EmptyMediaError, InputError

from .limits import DEFAULT_LIMITS, Limits
from .source import Packets, check_codec, first_stream, media_errors, open_container

__all__ = ["decode_audio", "audio_channels", "audio_from_array", "has_audio"]


def has_audio(source: Any, limits: Limits | None = None) -> bool:
    """True when ``source`` holds an audio stream with an allowed codec."""
    from .probe import probe
    return probe(source, limits).has_audio


def decode_audio(source: Any, limits: Limits | None = None, sample_rate: int = 16000, *,
                 track: int = 0, channels: bool = False) -> np.ndarray:
    """Decode the first audio stream (the ``track``-th with ``track``) as a float32 mono waveform
    at ``sample_rate`` Hz; with ``channels=True``, each channel alone, shape (channels, samples)
    (in the first frame's channel layout).

    Channels are downmixed and the rate converted by FFmpeg (swresample); the resampler is flushed
    so the tail is not lost.  No audio stream -> EmptyMediaError; longer than
    ``Limits.max_audio_s`` -> MediaLimitError.  A truncated stream returns what decoded (an error
    only if nothing did).
    """
    limits = limits or DEFAULT_LIMITS
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive int, got {sample_rate!r}")
    deadline = limits.deadline()
    with media_errors("audio"), open_container(source, limits) as c:
        st = _track(c, track)
        st.thread_type = "AUTO"
        out = _Resampled(sample_rate, limits, channels)
        errors = 0
        decoded_any = False
        for packet in Packets(c, st, deadline):
            try:
                frames = st.decode(packet)
            except av.error.FFmpegError:
                errors += 1
                if errors > 100 and not decoded_any:
                    break
                continue
            for f in frames:
                decoded_any = True
                out.add(f)
        if not decoded_any:
            raise CorruptMediaError("audio stream does not decode")
        return out.finish()


def audio_channels(source: Any, limits: Limits | None = None, *, track: int = 0) -> int:
    """The channel count the ``track``-th audio stream declares (0: not declared), from the
    container's header without decoding: what ``decode_audio(..., channels=True)`` would return
    as rows, unless the decoder widens it (parametric stereo from a mono core)."""
    with media_errors("audio"), open_container(source, limits or DEFAULT_LIMITS) as c:
        layout = _track(c, track).codec_context.layout
        return layout.nb_channels if layout is not None else 0


def _track(c, track: int):
    """The ``track``-th audio stream of container ``c``, its codec checked."""
    st = first_stream(c, "audio", "input has no audio stream")
    if track:
        if not 0 <= track < len(c.streams.audio):
            raise InputError(f"audio track {track} does not exist ({len(c.streams.audio)} tracks)")
        st = c.streams.audio[track]
        check_codec(st)
    return st


_ARRAY_FORMATS = {np.dtype(np.float32): "flt", np.dtype(np.float64): "dbl", np.dtype(np.int16): "s16",
                  np.dtype(np.int32): "s32"}


def audio_from_array(samples: Any, sample_rate: int = 16000, limits: Limits | None = None,
                     rate: int = 16000) -> np.ndarray:
    """Samples given as an array (PCM a service already holds): ``(n,)`` mono or ``(n, channels)``
    interleaved, float32/float64 (full scale +-1) or int16/int32 PCM, at ``sample_rate`` Hz ->
    float32 mono at ``rate``, downmixed and resampled by FFmpeg like decoded sound, NaN and
    beyond-full-scale values made safe as there, and bounded by ``Limits.max_audio_s``."""
    limits = limits or DEFAULT_LIMITS
    a = np.asarray(samples)
    fmt = _ARRAY_FORMATS.get(a.dtype)
    if fmt is None or a.ndim not in (1, 2) or (a.ndim == 2 and not 1 <= a.shape[1] <= 8):
        raise InputError(f"audio samples must be a (n,) or (n, channels) array of float32, float64, "
                         f"int16 or int32, got {a.dtype} {a.shape}")
    if not isinstance(sample_rate, (int, np.integer)) or not 1000 <= sample_rate <= 768_000:
        raise InputError(f"sample_rate must be an int from 1000 to 768000 Hz, got {sample_rate!r}")
    if a.shape[0] == 0:
        raise EmptyMediaError("audio samples are empty")
    limits.check_audio(a.shape[0] / sample_rate)
    a = np.ascontiguousarray(a.reshape(a.shape[0], -1))
    layout = {1: "mono", 2: "stereo"}.get(a.shape[1], f"{a.shape[1]}c")  # FFmpeg's default layouts
    out = _Resampled(rate, limits)
    for start in range(0, a.shape[0], RUN_SAMPLES):
        chunk = a[start:start + RUN_SAMPLES]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format=fmt, layout=layout)
        frame.sample_rate = int(sample_rate)
        out.add(frame)
    return out.finish()


# Note [batched resampling]
# PyAV's AudioResampler holds the GIL for the whole of each call. Called per decoded frame (1024
# samples of AAC: ~40 calls per second of audio) it made concurrent decodes thrash the GIL: on
# 2 cores, two threads decoded samples/speech.m4a at 0.64x the rate of one, and a Session decodes
# on many worker threads. Decoded frames are therefore resampled in runs of up to RUN_SAMPLES
# input samples that share a sample format, channel layout and rate, copied into one frame, one
# call per run. swresample is a streaming filter, so the output is the same samples as frame by
# frame (tests/test_media_audio_image.py compares the two). Same-process A/B against the
# frame-by-frame version on 2 cores (10 s 44.1 kHz stereo AAC): 1.25x on one thread, 2.8x on two,
# 2.3x on four. The decode suite's decode/audio rows track it against the frame-by-frame loop a
# PyAV user writes (three quick runs): 0.95-1.22x of it on one thread (the engine also validates
# the input) and 1.7-2.8x on four threads, where the loop falls to a third to a half of its
# one-thread rate.
RUN_SAMPLES = 1 << 16


_SAMPLE_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}


def _joined(frames: list, fmt: str, layout: str, rate: int):
    """One AudioFrame holding the samples of ``frames`` (same format, layout and rate) in order,
    copied plane by plane (planar: a plane per channel; packed: one interleaved plane); None for a
    sample format or layout it cannot carry, or frames whose plane count does not match their
    layout (damaged AAC), which are then resampled one by one."""
    dtype = _SAMPLE_DTYPES.get(fmt.removesuffix("p"))
    if dtype is None:
        return None
    per = 1 if fmt.endswith("p") else frames[0].layout.nb_channels  # plane values per sample
    total = sum(f.samples for f in frames)
    try:
        joined = av.AudioFrame(format=fmt, layout=layout, samples=total)
    except Exception:  # noqa: BLE001 - a layout PyAV cannot allocate: frame by frame instead
        return None
    if any(len(f.planes) != len(joined.planes) for f in frames):
        return None
    for i, plane in enumerate(joined.planes):
        np.concatenate([np.frombuffer(f.planes[i], dtype, count=f.samples * per) for f in frames],
                       out=np.frombuffer(plane, dtype, count=total * per))
    joined.sample_rate = rate
    return joined


class _Resampled:
    """Float32 mono at ``rate`` of the frames given to :meth:`add`, in order (Note [batched
    resampling]); a change of format, layout or rate mid-stream starts a new resampler. With
    ``channels``: each channel alone, (channels, samples), in the first frame's layout."""

    def __init__(self, rate: int, limits: Limits, channels: bool = False):
        self.rate, self.limits = rate, limits
        self.channels = channels
        self.layout = "mono"  # of the output; the first frame's, with channels
        self.max_samples = None if limits.max_audio_s is None else int(limits.max_audio_s * rate)
        self.resampler = None
        self.key: tuple | None = None
        self.run: list = []  # decoded frames not resampled yet
        self.run_samples = 0
        self.chunks: list[np.ndarray] = []
        self.total = 0

    def add(self, frame) -> None:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self.key:
            self._flush_run()
            if self.resampler is not None:
                self._take(self.resampler.resample(None))
            if self.channels and self.key is None:
                self.layout = frame.layout.name
            self.resampler = av.AudioResampler(format="fltp" if self.channels else "flt",
                                               layout=self.layout, rate=self.rate)
            self.key = key
        self.run.append(frame)
        self.run_samples += frame.samples
        if self.run_samples >= RUN_SAMPLES:
            self._flush_run()

    def finish(self) -> np.ndarray:
        self._flush_run()
        if self.resampler is not None:
            self._take(self.resampler.resample(None))
        empty = np.zeros((av.AudioLayout(self.layout).nb_channels, 0) if self.channels else 0, np.float32)
        wave = np.concatenate(self.chunks, axis=-1) if self.chunks else empty
        # Float formats can hold NaN, infinity and values far beyond full scale, which no speaker
        # plays: NaN made every score of the clip NaN (below any threshold), 3e38 overflowed the
        # model to scores of 0. They are heard as silence and clipped full scale, and so judged.
        np.nan_to_num(wave, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(wave, -1.0, 1.0, out=wave)

    def _flush_run(self) -> None:
        run, self.run, self.run_samples = self.run, [], 0
        joined = _joined(run, *self.key) if len(run) > 1 else None
        for f in [joined] if joined is not None else run:
            self._take(self.resampler.resample(f))

    def _take(self, frames) -> None:
        for rf in frames:
            a = rf.to_ndarray()
            a = a if self.channels else a.reshape(-1)  # planar: (channels, samples)
            self.total += a.shape[-1]
            if self.max_samples is not None and self.total > self.max_samples:
                self.limits.check_audio(self.total / self.rate)
            self.chunks.append(a.astype(np.float32, copy=False))
