"""Transparent pictures are judged as they are shown: over a light page and over a dark one.

Note [transparent pictures]
Stickers, logos and cut-outs (PNG, WebP, GIF, APNG) carry an alpha channel. The colour of a fully
transparent pixel is never seen, yet dropping the alpha channel hands it to the model: whatever an
encoder left there, or a decoy an uploader hid there (a harmless scene behind a small opaque
region), would decide a verdict no viewer shares. A picture with an alpha channel is therefore
composited over a page: rgb = (c a + page (255 - a)) / 255, rounded. Which page depends on the
viewer: white in light mode, black in dark mode, and content drawn in the page's own colour on a
transparent layer (white strokes, say) vanishes on that page and shows on the other. A transparent
still or animation is therefore judged over each page of ``[vision] backgrounds`` (white and
black), and each policy keeps the stronger score (engine.Session; its evidence names the page).
Decoding gives the picture over white unless asked for other pages (decode_image's
``background``, decode_image_views, decode_video's ``backgrounds``). Pictures that are opaque
everywhere are not changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BACKGROUNDS = {"white": 255, "black": 0}  # the pages of light and dark mode, on every channel
WHITE = BACKGROUNDS["white"]


def format_has_alpha(fmt: Any) -> bool:
    """Whether frames of the PyAV VideoFormat ``fmt`` may be transparent (an alpha component, or a
    palette, whose entries carry alpha)."""
    return bool(fmt.has_palette) or any(c.is_alpha for c in fmt.components)


HEAD_BYTES = 64 * 1024  # what may_be_transparent reads of a file


def may_be_transparent(head: bytes) -> bool:
    """False when a file's first bytes show a picture without transparency: JPEG; PNG whose colour
    type has no alpha and no tRNS chunk before its pixels; lossy WebP, or a WebP whose header says
    no alpha; BMP of under 32 bits per pixel; GIF whose first graphic control extension has no
    transparent colour; HEIF or AVIF whose meta box declares no auxiliary (alpha) image. True for
    anything else and where the bytes read end before the answer."""
    if head[:3] == b"\xff\xd8\xff":
        return False
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_may_be_transparent(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8 ":
            return False
        if kind == b"VP8L":  # bit 28 of the 32 bits after the 0x2f signature: alpha_is_used
            return bool(int.from_bytes(head[21:25], "little") >> 28 & 1)
        if kind == b"VP8X":  # feature flags: alpha (ANMF frames carry their own, under it)
            return bool(head[20] & 0x10)
        return True
    if head[:2] == b"BM" and len(head) >= 30:
        return int.from_bytes(head[28:30], "little") >= 32
    if head[:4] == b"GIF8":
        return _gif_may_be_transparent(head)
    if head[4:8] == b"ftyp":  # HEIF, AVIF
        return _heif_may_be_transparent(head)
    return True


def _heif_may_be_transparent(head: bytes) -> bool:
    # an alpha plane is an auxiliary image, declared by an auxC property in the meta box
    pos = 0
    while pos + 8 <= len(head):
        size, kind = int.from_bytes(head[pos:pos + 4], "big"), head[pos + 4:pos + 8]
        if size == 1 and pos + 16 <= len(head):
            size = int.from_bytes(head[pos + 8:pos + 16], "big")
        if kind == b"meta":
            return size < 8 or pos + size > len(head) or b"auxC" in head[pos:pos + size]
        if size < 8:
            break
        pos += size
    return True


def _gif_may_be_transparent(head: bytes) -> bool:
    # the first picture's transparency is the flag of the graphic control extension before it;
    # without one in the whole file the picture is opaque
    gce = head.find(b"\x21\xf9\x04")
    if gce < 0:
        return len(head) >= HEAD_BYTES  # only part of the file was read
    return gce + 3 >= len(head) or bool(head[gce + 3] & 1)


def _png_may_be_transparent(head: bytes) -> bool:
    if len(head) < 26 or head[25] in (4, 6):  # grey + alpha, RGBA
        return True
    pos = 8
    while pos + 8 <= len(head):  # chunks up to the first IDAT: a tRNS makes a colour transparent
        size, kind = int.from_bytes(head[pos:pos + 4], "big"), head[pos + 4:pos + 8]
        if kind == b"tRNS":
            return True
        if kind == b"IDAT":
            return False
        pos += 12 + size
    return True


def image_has_alpha(im: Any) -> bool:
    """Whether the PIL image ``im`` may be transparent."""
    return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info


def composite(rgba: np.ndarray, background: int = WHITE) -> np.ndarray:
    """(H, W, 3) uint8: an (H, W, 4) uint8 RGBA picture over a page of grey level ``background``
    (Note [transparent pictures])."""
    a = rgba[..., 3:4].astype(np.uint32)
    c = rgba[..., :3].astype(np.uint32)
    return ((c * a + background * (255 - a) + 127) // 255).astype(np.uint8)


def flattened(rgba: np.ndarray, background: int = WHITE) -> np.ndarray:
    """The RGB of an RGBA picture: its colours when it is opaque everywhere, else composited."""
    if (rgba[..., 3] == 255).all():
        return np.ascontiguousarray(rgba[..., :3])
    return composite(rgba, background)
