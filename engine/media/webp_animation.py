"""Animated WebP (stickers, memes): decoded by Pillow, sampled like any video.

Note [animated WebP]
~~~~~~~~~~~~~~~~~~~~
FFmpeg's WebP decoder (the one PyAV ships) refuses animated WebP files (their frames live in
``ANMF`` chunks), so they used to fail as corrupt. Pillow decodes them with libwebp's own animation
decoder, which composites each frame onto the canvas as browsers do. Like an animated GIF, such a
file is a video for :func:`probe` (when it holds more than one frame) and :func:`decode_video`, and
:func:`decode_image` takes its first frame.

The frame index (each frame's start time) comes from the ``ANMF`` chunk headers, read without
decoding (RIFF: a 4-byte tag and a little-endian 32-bit size per chunk; an ``ANMF`` payload starts
with the frame's offset and size, then its duration in ms, 24 bits at byte 12). Durations under
20 ms count as 100 ms, as FFmpeg's GIF demuxer and browsers treat them. The frames to return are
chosen by the video decoder's own :func:`plan_samples`, with every frame taken as a keyframe (Pillow
decodes forward from the last full frame itself); frames are decoded in order, one at a time (the
time and frame limits are checked between them), up to the last one chosen. Frames are ``rgb24``,
transparency composited over white as for still images (Note [transparent pictures]).
"""

from __future__ import annotations

import contextlib
from typing import IO, Iterator

import numpy as np

from engine.errors import CorruptMediaError

from .alpha import BACKGROUNDS, WHITE, image_has_alpha
from .frame import Frame, frame_from_array, page_views
from .icc import rgb_of
from .limits import Deadline, Limits
from .orientation import IDENTITY, Orientation, exif_orientation
from .source import pillow_errors

__all__ = ["is_animated_webp", "webp_index", "probe_webp_animation", "decode_webp_animation", "first_frame"]

MIN_DURATION_MS = 20      # shorter frame durations are shown for DEFAULT_DURATION_MS
DEFAULT_DURATION_MS = 100
_ANIMATION_FLAG = 0x02    # VP8X flags byte: the file holds an animation


def is_animated_webp(f: IO[bytes]) -> bool:
    """True for a WebP file whose VP8X header announces an animation (``f`` is left where it was)."""
    pos = f.tell()
    try:
        head = f.read(21)
    finally:
        f.seek(pos)
    return (len(head) == 21 and head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] == b"VP8X"
            and bool(head[20] & _ANIMATION_FLAG))


def webp_index(data: bytes) -> list[float]:
    """Start time (s) of every frame of an animated WebP, from its ANMF chunk headers."""
    starts: list[float] = []
    t = 0
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if pos + 8 + size > len(data):
            raise CorruptMediaError(f"animated WebP: chunk {tag!r} runs past the end of the file")
        if tag == b"ANMF":
            if size < 16:
                raise CorruptMediaError("animated WebP: ANMF chunk too short")
            ms = int.from_bytes(data[pos + 20:pos + 23], "little")
            starts.append(t / 1000.0)
            t += ms if ms >= MIN_DURATION_MS else DEFAULT_DURATION_MS
        pos += 8 + size + (size & 1)
    if not starts:
        raise CorruptMediaError("animated WebP holds no frames")
    starts.append(t / 1000.0)  # the end of the last frame
    return starts


@contextlib.contextmanager
def _pillow(f: IO[bytes], limits: Limits) -> Iterator:
    """The file opened by Pillow as WebP, its canvas size checked; Pillow's errors typed."""
    from PIL import Image

    with pillow_errors("animated WebP"):
        f.seek(0)
        with Image.open(f, formats=["WEBP"]) as im:
            limits.check_pixels(*im.size)
            yield im


def probe_webp_animation(f: IO[bytes], limits: Limits) -> tuple[int, int, list[float]]:
    """``(width, height, frame start times + end)`` of an animated WebP, without decoding frames."""
    f.seek(0)
    bounds = webp_index(f.read())
    with _pillow(f, limits) as im:
        width, height = im.size
    limits.check_duration(bounds[-1])
    return width, height, bounds


def _frame(im, pts: float, orientation: Orientation, background: int = WHITE) -> Frame:
    return frame_from_array(orientation.apply(rgb_of(im, background)), pts=pts)


def first_frame(f: IO[bytes], limits: Limits, background: int = WHITE) -> Frame:
    """The first frame, upright, transparency over the page ``background`` (:func:`decode_image`
    of an animated WebP)."""
    orientation = exif_orientation(f) or IDENTITY
    with _pillow(f, limits) as im:
        return _frame(im, 0.0, orientation, background)


def decode_webp_animation(f: IO[bytes], sampling, limits: Limits, deadline: Deadline,
                          backgrounds: tuple[str, ...] = ("white",)):
    """:func:`decode_video` of an animated WebP (Note [animated WebP])."""
    from .video import DecodedVideo, StreamIndex, plan_samples

    f.seek(0)
    bounds = webp_index(f.read())
    times, duration = bounds[:-1], bounds[-1]
    limits.check_duration(duration)
    gaps = [b - a for a, b in zip(bounds, bounds[1:])]
    frame_dur = float(np.median(gaps))
    if sampling.mode == "all":
        strategy, chosen, targets = "all", times[:sampling.max_frames], []
    else:
        index = StreamIndex(times=times, keys=times, errors=0, frame_dur=frame_dur, duration=duration,
                            short=False, key_gap=max(gaps), decode_times=times, end=duration)
        plan = plan_samples(sampling, index)
        strategy, chosen, targets = plan.strategy, plan.frames, plan.targets
    position = {t: i for i, t in enumerate(times)}
    wanted = {position[t]: t for t in chosen}
    orientation = exif_orientation(f) or IDENTITY
    with _pillow(f, limits) as im:
        # the wanted frames over each page (over the first only when the animation is opaque)
        levels = [BACKGROUNDS[page] for page in backgrounds[:None if image_has_alpha(im) else 1]]
        over: list[list[Frame]] = [[] for _ in levels]
        if getattr(im, "n_frames", 1) != len(times):
            raise CorruptMediaError(f"animated WebP: {len(times)} frames indexed, "
                                    f"{getattr(im, 'n_frames', 1)} decodable")
        for i in range(max(wanted) + 1):  # one frame per seek: the limits hold between frames
            deadline.check()
            limits.check_frames(i + 1)
            im.seek(i)
            if i in wanted:
                for frames, level in zip(over, levels):
                    frames.append(_frame(im, wanted[i], orientation, level))
    frames, pages = over[0], []
    if len(levels) > 1:
        views = page_views(frames, backgrounds, lambda level: over[levels.index(level)])
        pages = views if len(views) > 1 else []
    width, height = frames[0].width, frames[0].height
    rotation, mirrored = orientation.as_rotation()
    return DecodedVideo(
        frames=frames, timestamps=[fr.pts for fr in frames], duration=duration,
        fps=len(times) / duration if duration else 0.0, width=width, height=height, rotation=rotation,
        decoded_frames=max(wanted) + 1, strategy=strategy, codec="webp", keyframe_interval=None,
        targets=targets, mirrored=mirrored, pages=pages)
