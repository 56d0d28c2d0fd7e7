"""Resource limits applied to every decode (bytes, pixels, duration, frames, time) and text.

Any limit exceeded raises :class:`engine.errors.MediaLimitError`.  ``None`` disables a limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.errors import MediaLimitError

__all__ = ["Limits", "DEFAULT_LIMITS", "Deadline"]


@dataclass(frozen=True)
class Limits:
    max_bytes: int | None = 512 * 1024 * 1024     # input size, checked before any decoding
    max_pixels: int | None = 7680 * 4320          # width*height of one picture (8K UHD)
    max_duration_s: float | None = 4 * 3600.0     # declared container/stream duration, and the
                                                  # span of a video stream's frame timestamps
    max_frames: int | None = 10_000               # video frames decoded by FFmpeg in one call
    max_audio_s: float | None = 4 * 3600.0        # seconds of audio decoded (after resampling)
    timeout_s: float | None = 120.0               # wall-clock budget of one decode call
    max_text_chars: int | None = 100_000          # characters of one text (Note [text segments])

    def check_bytes(self, n: int, what: str = "input") -> None:
        if self.max_bytes is not None and n > self.max_bytes:
            raise MediaLimitError(f"{what} is {n} bytes, more than max_bytes={self.max_bytes}")

    def check_pixels(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            return
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise MediaLimitError(
                f"picture is {width}x{height} = {width * height} pixels, "
                f"more than max_pixels={self.max_pixels}")

    def check_duration(self, seconds: float | None, what: str = "duration") -> None:
        if seconds is not None and self.max_duration_s is not None and seconds > self.max_duration_s:
            raise MediaLimitError(
                f"{what} {seconds:.1f} s is more than max_duration_s={self.max_duration_s}")

    def check_frames(self, decoded: int) -> None:
        if self.max_frames is not None and decoded > self.max_frames:
            raise MediaLimitError(f"decoded more than max_frames={self.max_frames} frames")

    def check_audio(self, seconds: float) -> None:
        if self.max_audio_s is not None and seconds > self.max_audio_s:
            raise MediaLimitError(f"audio longer than max_audio_s={self.max_audio_s} s")

    def check_text(self, chars: int) -> None:
        if self.max_text_chars is not None and chars > self.max_text_chars:
            raise MediaLimitError(f"text of {chars} characters is more than "
                                  f"max_text_chars={self.max_text_chars}")

    def deadline(self) -> "Deadline":
        return Deadline(self.timeout_s)


DEFAULT_LIMITS = Limits()


class Deadline:
    """Wall-clock budget; ``check()`` raises MediaLimitError once it is spent."""

    __slots__ = ("_end", "_timeout")

    def __init__(self, timeout_s: float | None):
        self._timeout = timeout_s
        self._end = None if timeout_s is None else time.monotonic() + timeout_s

    def check(self) -> None:
        if self._end is not None and time.monotonic() > self._end:
            raise MediaLimitError(f"decoding took longer than timeout_s={self._timeout}")
