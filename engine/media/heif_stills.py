"""HEIF and AVIF still images (iPhone HEIC photos): decoded whole and upright by Pillow where
FFmpeg's frames would be a tile, or would lose a mirror.

Note [HEIF and AVIF stills]
~~~~~~~~~~~~~~~~~~~~~~~~~~~
A large HEIF or AVIF picture is usually stored as a grid of separately coded tiles (an iPhone's
4032x3024 HEIC photo: 48 HEVC tiles of 512x512). FFmpeg demuxes it as one stream per tile, each
marked "dependent", plus a stream group that lays them out; PyAV 18 does not expose stream groups,
so the first video stream is the top-left tile, and moderating it judges a corner of the photo.
HEIF pictures also carry their orientation as ``irot``/``imir`` properties; FFmpeg turns them into a
display matrix on a frame whose side data PyAV 18 cannot read (it also holds the EXIF block, a type
PyAV does not know), and Pillow does not read HEIF's EXIF without a plugin, so only the angle
(Note [display orientation]) would survive: a mirrored HEIC would come out upside down.

So Pillow decodes:
* a tiled HEIF/AVIF file (its ``major_brand``, and a dependent video stream): AVIF with Pillow's own
  plugin (libavif), then turned by its EXIF orientation as an untiled AVIF is; HEIC with the
  optional ``pillow-heif`` (libheif; ``pip install 'moderation-engine[heif]'``), which composes the
  grid and applies the HEIF transforms. Without it such a file is refused with an
  :class:`UnsupportedMediaError` that says what to install;
* every HEIF still when ``pillow-heif`` is installed (orientation, mirrors included).
``pillow-heif`` is used through its API, so Pillow's global plugin registry is left alone. Untiled
AVIF stills, and untiled HEIF ones without ``pillow-heif`` (whose mirrors are then lost), keep
FFmpeg's planes.
"""

from __future__ import annotations

from typing import IO, Any, Callable

import numpy as np

from engine.errors import UnsupportedMediaError

from .alpha import WHITE
from .frame import Frame, frame_from_array
from .icc import rgb_of
from .limits import Limits
from .orientation import IDENTITY, exif_orientation
from .source import pillow_errors

__all__ = ["is_tiled", "is_still_image", "pillow_decodes", "decode_with_pillow", "pillow_size", "decoders"]

DEPENDENT = 0x80000  # AV_DISPOSITION_DEPENDENT: a stream meant to be shown only with others
HEIF_BRANDS = frozenset({"heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"})
AVIF_BRANDS = frozenset({"avif", "avis"})
STILL_BRANDS = frozenset({"heic", "heix", "heim", "heis", "mif1", "avif"})


def _brand(container: Any) -> str:
    return (container.metadata or {}).get("major_brand", "").strip().lower()


def is_still_image(container: Any) -> bool:
    """A HEIF/AVIF still picture (not an image sequence: brands ``msf1``, ``hevc``, ``avis``)."""
    return _brand(container) in STILL_BRANDS


def is_tiled(container: Any) -> bool:
    """A HEIF/AVIF file whose picture FFmpeg splits into dependent tile streams."""
    if _brand(container) not in HEIF_BRANDS | AVIF_BRANDS:
        return False
    return any(int(getattr(s, "disposition", 0)) & DEPENDENT for s in container.streams.video)


def _have_pillow_heif() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def decoders() -> dict[str, str]:
    """What decodes HEIF and AVIF stills here (``engine info``)."""
    from PIL import features

    if _have_pillow_heif():
        import pillow_heif

        heif = f"pillow-heif {pillow_heif.__version__}: every HEIC through libheif"
    else:
        heif = "pillow-heif not installed: tiled HEIC refused, mirrors of untiled HEIC lost"
    avif = "Pillow's AVIF plugin" if features.check("avif") else "no AVIF plugin in this Pillow: tiled AVIF refused"
    return {"heif": heif, "avif": avif}


def pillow_decodes(container: Any) -> bool:
    """The picture goes to :func:`decode_with_pillow` (Note [HEIF and AVIF stills])."""
    if is_tiled(container):
        return True
    return _brand(container) in STILL_BRANDS - AVIF_BRANDS and _have_pillow_heif()


def _open(f: IO[bytes]) -> tuple[tuple[int, int], Callable[[int], np.ndarray]]:
    """``((width, height), load)``: the whole picture's size from its headers, and a call that
    decodes it to an RGB array (grid composed, HEIF transforms applied, transparency over the page
    given as its argument)."""
    from PIL import Image

    f.seek(0)
    head = f.read(12)
    f.seek(0)
    if head[8:12].decode("latin-1").lower() in AVIF_BRANDS:
        # libavif leaves the orientation to the caller, as for untiled AVIF
        orientation = exif_orientation(f) or IDENTITY
        f.seek(0)
        im = Image.open(f, formats=["AVIF"])
        size = im.size[::-1] if orientation.transpose else im.size
        return size, lambda background: orientation.apply(rgb_of(im, background))
    try:
        import pillow_heif
    except ImportError:
        raise UnsupportedMediaError(
            "tiled HEIF image (e.g. an iPhone HEIC photo): decoding it needs the optional "
            "pillow-heif package (pip install 'moderation-engine[heif]'); FFmpeg alone gives one tile "
            "(Note [HEIF and AVIF stills])"
        ) from None
    heif = pillow_heif.open_heif(f, convert_hdr_to_8bit=True)
    return heif.size, lambda background: rgb_of(heif.to_pillow(), background)


def _guarded(f: IO[bytes], limits: Limits, use: Callable[[tuple[int, int], Callable[[int], np.ndarray]], Any]):
    """``use(size, load)`` after the pixel limit, every decoder error typed."""
    with pillow_errors("tiled image"):
        size, load = _open(f)
        limits.check_pixels(*size)
        return use(size, load)


def pillow_size(f: IO[bytes], limits: Limits) -> tuple[int, int]:
    """``(width, height)`` of the whole picture, from its headers."""
    return _guarded(f, limits, lambda size, load: size)


def decode_with_pillow(f: IO[bytes], limits: Limits, background: int = WHITE) -> Frame:
    """The whole picture as an ``rgb24`` Frame (transparency over the page ``background``, as for
    other stills)."""
    return _guarded(f, limits,
                    lambda size, load: frame_from_array(np.ascontiguousarray(load(background)), pts=0.0))
