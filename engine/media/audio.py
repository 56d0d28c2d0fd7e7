"""Audio decoding to float32 mono at a fixed rate, resampled by FFmpeg (``av.AudioResampler``)."""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from engine.errors import CorruptMediaError, InputError

from .limits import DEFAULT_LIMITS, Limits
from .source import Packets, first_stream, media_errors, open_container

__all__ = ["decode_audio", "has_audio"]


def has_audio(source: Any, limits: Limits | None = None) -> bool:
    """True when ``source`` holds an audio stream with an allowed codec."""
    from .probe import probe
    return probe(source, limits).has_audio


def decode_audio(source: Any, limits: Limits | None = None, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream as a float32 mono waveform at ``sample_rate`` Hz.

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
        st = first_stream(c, "audio", "input has no audio stream")
        st.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        errors = 0
        decoded_any = False
        max_samples = None if limits.max_audio_s is None else int(limits.max_audio_s * sample_rate)

        def take(frames) -> None:
            nonlocal total
            for rf in frames:
                a = rf.to_ndarray().reshape(-1)
                total += a.shape[0]
                if max_samples is not None and total > max_samples:
                    limits.check_audio(total / sample_rate)
                chunks.append(a.astype(np.float32, copy=False))

        packets = Packets(c, st, deadline)
        for packet in packets:
            try:
                frames = st.decode(packet)
            except av.error.FFmpegError:
                errors += 1
                if errors > 100 and not decoded_any:
                    break
                continue
            for f in frames:
                decoded_any = True
                take(resampler.resample(f))
        take(resampler.resample(None))
        if not decoded_any:
            raise CorruptMediaError("audio stream does not decode")
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks)
