"""Small generated media for the media tests (cached per test session, nothing written to the repo)."""

from __future__ import annotations

import functools
import io

import av
import numpy as np

from engine.media import synthetic as syn


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001
        return False
    return True


@functools.lru_cache(maxsize=None)
def clip(width=160, height=96, fps=30, duration=4.0, gop=30, codec="libx264", pix_fmt="yuv420p",
         container="mp4", audio=False, bframes=None, options=None, colorspace=None,
         color_range=None, container_options=None, audio_codec="aac") -> bytes:
    return syn.encode_video(width=width, height=height, fps=fps, duration=duration, gop=gop,
                            codec=codec, pix_fmt=pix_fmt, container=container, audio=audio,
                            audio_codec=audio_codec, bframes=bframes, options=dict(options) if options else None,
                            colorspace=colorspace, color_range=color_range,
                            container_options=dict(container_options) if container_options else None)


VFR_PTS = (0.0, 0.1, 0.15, 0.5, 0.55, 0.9, 1.0, 1.7, 1.75, 2.3, 2.9)


@functools.lru_cache(maxsize=None)
def vfr_clip() -> bytes:
    return syn.encode_video(width=96, height=64, fps=30, pts=list(VFR_PTS), gop=1000)


@functools.lru_cache(maxsize=None)
def rotated_clip(degrees: int) -> bytes:
    return syn.set_mp4_rotation(clip(width=96, height=64, fps=10, duration=1.0, gop=10), degrees)


@functools.lru_cache(maxsize=None)
def tone_file(seconds=1.0, rate=44100, codec="pcm_s16le", container="wav", channels=1) -> bytes:
    return syn.encode_audio(seconds=seconds, rate=rate, codec=codec, container=container,
                            channels=channels)


def float_wav(x: np.ndarray, rate: int = 16000) -> bytes:
    """A float32 WAV of the samples ``x`` ((n,) mono or (n, 2) stereo), as they are (no clipping,
    NaN kept)."""
    x = np.asarray(x, np.float32)
    layout = "stereo" if x.ndim == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as oc:
        st = oc.add_stream("pcm_f32le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x).reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate = rate
        for p in [*st.encode(frame), *st.encode()]:
            oc.mux(p)
    return buf.getvalue()


def typed_errors_on_damage(data: bytes, calls, rounds: int, keep: int = 21) -> int:
    """Damage ``data`` afresh ``rounds`` times (a few bytes changed; every third copy also cut
    short, keeping at least ``keep`` bytes) and run each of ``calls`` on it: any error must be a
    MediaError. Returns how many were; fails with the seed otherwise."""
    import numpy as np
    import pytest

    from engine.errors import MediaError

    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    typed = 0
    for n in range(rounds):
        b = bytearray(data)
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] = rng.integers(0, 256)
        if n % 3 == 0:
            b = b[: rng.integers(keep, len(b))]
        for call in calls:
            try:
                call(bytes(b))
            except MediaError:
                typed += 1
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"seed {seed}, damage {n}, {getattr(call, '__name__', call)}: "
                            f"{type(e).__name__}: {e}")
    return typed
