"""Still images tagged with a colour profile other than sRGB are shown in sRGB.

Note [colour profiles]
Phones save photographs in Display P3, cameras in Adobe RGB, print workflows in CMYK, each with an
ICC profile that colour-managed viewers (every browser, every phone gallery) apply. Read as if its
numbers were sRGB, a Display P3 photograph comes out 2-4 levels duller on average and up to ~57
levels off on saturated colours (two photographs measured); a CMYK one is converted without the
press profile it was made for. A still whose embedded profile is not sRGB is therefore decoded by
Pillow and converted to sRGB by LittleCMS (relative colorimetric, the intent displays use),
upright by its EXIF orientation. Pictures without a profile or with an sRGB one keep the
zero-copy FFmpeg path; a profile LittleCMS cannot read is ignored, as viewers ignore it. Only the
first 256 KB are scanned for a profile (JPEG APP2 ``ICC_PROFILE``, PNG ``iCCP``, WebP ``ICCP``),
so plain files never reach Pillow.
"""

from __future__ import annotations

import io
import logging
from typing import IO, Any

import numpy as np

from .alpha import WHITE, flattened, image_has_alpha

log = logging.getLogger(__name__)

ICC_SCAN_BYTES = 256 * 1024
_MARKERS = (b"ICC_PROFILE\x00", b"iCCP", b"ICCP")


def may_hold_icc(fileobj: IO[bytes]) -> bool:
    """False when the file plainly has no embedded ICC profile (JPEG, PNG, WebP markers)."""
    fileobj.seek(0)
    head = fileobj.read(ICC_SCAN_BYTES)
    fileobj.seek(0)
    return any(m in head for m in _MARKERS)


def _cms() -> Any:
    """Pillow's ImageCms, or None in a Pillow built without LittleCMS (profiles are then ignored)."""
    try:
        from PIL import ImageCms
    except ImportError:
        return None
    return ImageCms


def cms_info() -> str:
    """What applies colour profiles here (``engine info``)."""
    from PIL import features

    if _cms() is None:
        return "Pillow without LittleCMS: embedded colour profiles are ignored"
    return f"LittleCMS {features.version('littlecms2')} (Pillow ImageCms): non-sRGB ICC profiles of stills to sRGB"


def foreign_profile(im: Any) -> Any:
    """The embedded ICC profile of the PIL image ``im`` when it is not sRGB (read from the headers,
    no pixels decoded); None when there is none, it is sRGB, or LittleCMS cannot read it."""
    ImageCms = _cms()  # noqa: N806 - the module
    icc = im.info.get("icc_profile")
    if not icc or ImageCms is None:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(profile) or "").lower():
            return None
    except (ImageCms.PyCMSError, OSError, ValueError) as e:  # a broken profile: ignored, as viewers do
        log.debug("colour profile ignored: %s", e)
        return None
    return profile


def _to_srgb(im: Any, profile: Any) -> np.ndarray | None:
    """(H, W, 3) uint8: ``im`` converted from ``profile`` to sRGB (Note [colour profiles]); None
    when LittleCMS cannot apply the profile to the image's mode (the numbers are then taken as sRGB)."""
    ImageCms = _cms()  # noqa: N806 - the module (present: foreign_profile returned a profile)
    try:
        src = im if im.mode in ("RGB", "CMYK", "L") else im.convert("RGB")
        out = ImageCms.profileToProfile(src, profile, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        log.debug("colour profile ignored: %s", e)
        return None
    return np.asarray(out)


def rgb_of(im: Any, background: int = WHITE) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of a decoded PIL image as a viewer shows it: its profile applied when
    it is not sRGB, composited over the page ``background`` (grey level) when it is transparent
    (Note [transparent pictures])."""
    profile = foreign_profile(im)
    rgb = _to_srgb(im, profile) if profile is not None else None
    if rgb is None:
        rgb = np.asarray(im.convert("RGB"))
    if not image_has_alpha(im):
        return rgb
    return flattened(np.dstack([rgb, np.asarray(im.convert("RGBA"))[..., 3]]), background)
