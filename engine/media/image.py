"""Still images: JPEG, PNG, WebP, GIF, BMP (first frame of animations) through PyAV's image demuxers
(animated WebP through Pillow), and numpy arrays.

JPEG decodes to ``i420`` full range (``yuvj420p``; 4:4:4/4:2:2 JPEGs to ``i444``/``i422``), PNG/WebP
RGB to ``rgb24`` (palette and grey formats are converted by FFmpeg; transparent pictures are
composited over white, Note [transparent pictures]),
lossy WebP to ``i420``; an animated WebP gives its first frame (Note [animated WebP]); a tiled
HEIF/AVIF photo comes whole (Note [HEIF and AVIF stills]).  The EXIF orientation is honoured
(Note [display orientation]).  A still whose embedded colour profile is not sRGB (Display P3,
Adobe RGB, CMYK) is converted to sRGB by Pillow and LittleCMS (Note [colour profiles]).
:func:`decode_image_views` gives a transparent picture over each page it may be seen on.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from engine.errors import CorruptMediaError, InputError

from .alpha import BACKGROUNDS, HEAD_BYTES, WHITE, flattened, image_has_alpha, may_be_transparent
from .frame import Frame, frame_from_array, frame_from_av, page_views
from .heif_stills import decode_with_pillow, pillow_decodes
from .icc import foreign_profile, may_hold_icc, rgb_of
from .limits import DEFAULT_LIMITS, Limits
from .orientation import exif_orientation, frame_orientation
from .source import (IMAGE_DEMUXERS, cover_stream, demuxer_names, first_stream, media_errors, open_container,
                     pillow_errors, read_source)
from .webp_animation import first_frame, is_animated_webp

__all__ = ["decode_image", "decode_image_views"]


def decode_image(source: Any, limits: Limits | None = None, *, background: int = WHITE,
                 cover: bool = False) -> Frame:
    """Decode one picture.  ``source``: path, bytes, binary file object, an ``(H, W, 3)`` uint8
    RGB numpy array (wrapped without copying) or ``(H, W, 4)`` RGBA one, or a PIL image (turned
    upright by its EXIF orientation, converted to RGB).  A transparent picture is composited over a
    page of grey level ``background`` (Note [transparent pictures]).  ``cover``: the picture
    stored with the media (album art, a video's thumbnail) rather than its first picture."""
    limits = limits or DEFAULT_LIMITS
    if isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 4 and source.dtype == np.uint8:
            source = flattened(source, background)
        frame = frame_from_array(source)
        limits.check_pixels(frame.width, frame.height)
        return frame
    if type(source).__module__.startswith("PIL."):
        from PIL import ImageOps

        try:  # upright, in sRGB, opaque: as the same image given as a file
            arr = rgb_of(ImageOps.exif_transpose(source), background)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"PIL image cannot be converted to RGB: {e}") from None
        return decode_image(arr, limits)
    deadline = limits.deadline()
    opened = read_source(source, limits)
    if not cover and is_animated_webp(opened.fileobj):
        with opened, media_errors("image"):
            return first_frame(opened.fileobj, limits, background)
    with media_errors("image"), open_container(opened, limits) as c:
        if cover:
            return _decoded_first(c, cover_stream(c), opened, limits, deadline, background)
        if pillow_decodes(c):
            return decode_with_pillow(opened.fileobj, limits, background)
        if demuxer_names(c) & IMAGE_DEMUXERS and may_hold_icc(opened.fileobj):  # a still, not cover art
            frame = _profiled(opened.fileobj, limits, background)
            if frame is not None:
                return frame
        return _decoded_first(c, first_stream(c, "video", "input holds no image"), opened, limits, deadline,
                              background)


def _decoded_first(c, vs, opened, limits: Limits, deadline, background: int) -> Frame:
    """The first picture of stream ``vs``, upright."""
    limits.check_pixels(vs.codec_context.width, vs.codec_context.height)
    frame = None
    errors = 0
    for packet in c.demux(vs):
        deadline.check()
        try:
            out = vs.decode(packet)
        except av.error.FFmpegError:
            errors += 1
            if errors > 8:
                break
            continue
        if out:
            frame = out[0]
            break
    if frame is None:
        raise CorruptMediaError("image does not decode")
    limits.check_pixels(frame.width, frame.height)
    orientation = exif_orientation(opened.fileobj) or frame_orientation(frame, vs.codec_context.name)
    return frame_from_av(frame, pts=0.0, orientation=orientation, background=background)


def decode_image_views(source: Any, limits: Limits | None = None,
                       backgrounds: tuple[str, ...] = tuple(BACKGROUNDS), *,
                       cover: bool = False) -> list[tuple[str, Frame]]:
    """The picture as each page of ``backgrounds`` ("white", "black") shows it, for a transparent
    picture: ``[(page, frame), ...]``; for an opaque one (the same on every page) ``[("",
    frame)]`` (Note [transparent pictures]). Only a picture whose header allows transparency is
    decoded more than once. ``cover``: as :func:`decode_image`'s."""
    limits = limits or DEFAULT_LIMITS
    if hasattr(source, "read") and not isinstance(source, (bytes, bytearray, memoryview)):
        with read_source(source, limits) as opened:  # a file object is read once, for every page
            opened.fileobj.seek(0)
            source = opened.fileobj.read()
    first = decode_image(source, limits, background=BACKGROUNDS[backgrounds[0]], cover=cover)
    if len(backgrounds) == 1 or not _may_be_transparent(source, limits):
        return [("", first)]
    views = page_views([first], backgrounds,
                       lambda level: [decode_image(source, limits, background=level, cover=cover)])
    return [(page, frames[0]) for page, frames in views]


def _may_be_transparent(source: Any, limits: Limits) -> bool:
    if isinstance(source, np.ndarray):
        return source.ndim == 3 and source.shape[2] == 4
    if type(source).__module__.startswith("PIL."):
        return image_has_alpha(source)
    with read_source(source, limits) as opened:
        return may_be_transparent(opened.fileobj.read(HEAD_BYTES))


def _profiled(f, limits: Limits, background: int) -> Frame | None:
    """The sRGB picture of a still whose colour profile is not sRGB, upright (Note [colour
    profiles] in icc.py); None for the others, which FFmpeg decodes."""
    from PIL import Image, ImageOps

    with pillow_errors("image"):
        f.seek(0)
        with Image.open(f) as im:
            profile = foreign_profile(im)
            if profile is None:
                return None
            limits.check_pixels(*im.size)
            rgb = rgb_of(ImageOps.exif_transpose(im), background)
    return frame_from_array(np.ascontiguousarray(rgb))
