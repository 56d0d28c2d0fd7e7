"""Transparent pictures are composited over white, as a page shows them (Note [transparent
pictures] in engine/media/alpha.py): what hides under alpha 0 never reaches the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.media import Sampling, decode_image, decode_video
from engine.media.frame import frame_to_rgb

H, W = 40, 60


def _sticker() -> tuple[np.ndarray, np.ndarray]:
    """RGBA: an opaque square, a half-transparent band, and a decoy under alpha 0 elsewhere."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([40 + 3 * x, 30 + 4 * y, 200 - 2 * x], -1).astype(np.uint8)  # the visible scene
    a = np.zeros((H, W), np.uint8)
    a[10:30, 20:40] = 255
    a[32:36, :] = 128
    decoy = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[a == 0] = decoy[a == 0]  # visible only when the alpha channel is dropped
    return rgb, a


def _over_white(rgb, a) -> np.ndarray:
    a = a[..., None].astype(np.float64)
    return rgb * a / 255 + 255 * (1 - a / 255)


def _rgba(fmt: str, **kw) -> bytes:
    rgb, a = _sticker()
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, a])).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 95})])
def test_transparent_stills_are_shown_over_white(fmt, kw):
    data = _rgba(fmt, **kw)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))  # what the file holds (lossy: decoded by libwebp)
    rgb, a = stored[..., :3], stored[..., 3]
    got = frame_to_rgb(decode_image(data)).astype(np.float64)
    want = _over_white(rgb, a)
    hidden = a == 0
    assert hidden.mean() > 0.5 and (got[hidden] == 255).all()  # nothing of the decoy
    err = np.abs(got - want)[~hidden]
    if kw.get("lossless", fmt == "PNG"):
        assert err.max() <= 0.5
    else:  # lossy 4:2:0 WebP: FFmpeg's and libwebp's decoders differ a little
        assert err.mean() < 5  # measured 3.0


def test_gif_transparency_is_white():
    rgb, a = _sticker()
    im = Image.fromarray(rgb).quantize(64)
    pal = np.asarray(im).copy()
    pal[a < 255] = 63  # the transparent index (the half-transparent band too: GIF has no partial alpha)
    gif = Image.fromarray(pal, "P")
    palette = im.getpalette()
    palette[63 * 3 : 63 * 3 + 3] = [255, 0, 0]  # its colour, red: what dropping the alpha would show
    gif.putpalette(palette)
    buf = io.BytesIO()
    gif.save(buf, "GIF", transparency=63)
    got = frame_to_rgb(decode_image(buf.getvalue()))
    assert (got[a < 255] == 255).all() and not (got[a == 255] == 255).all()


def test_opaque_rgba_keeps_its_colours():
    rgb, _ = _sticker()
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)])).save(buf, "PNG")
    np.testing.assert_array_equal(frame_to_rgb(decode_image(buf.getvalue())), rgb)


def test_pil_and_animated_inputs_are_composited():
    rgb, a = _sticker()
    want = _over_white(rgb, a)
    got = frame_to_rgb(decode_image(Image.fromarray(np.dstack([rgb, a])))).astype(np.float64)
    assert np.abs(got - want).max() <= 0.5
    frames = [Image.fromarray(np.dstack([np.roll(rgb, k, 1), a])) for k in range(3)]
    for fmt in ("WEBP", "PNG"):  # animated WebP (Pillow) and APNG (FFmpeg)
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
        video = decode_video(buf.getvalue(), Sampling(mode="all"))
        assert len(video.frames) == 3
        first = frame_to_rgb(video.frames[0]).astype(np.float64)
        assert (first[a == 0] == 255).all(), fmt
        assert np.abs(first - want)[a > 0].max() <= 0.5, fmt
