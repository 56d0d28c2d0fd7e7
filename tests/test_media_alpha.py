"""Transparent pictures are composited over a page, as a viewer sees them (Note [transparent
pictures] in engine/media/alpha.py): what hides under alpha 0 never reaches the model, and a
transparent still is decoded over the pages of light and dark mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.media import Sampling, decode_image, decode_image_views, decode_video
from engine.media.alpha import HEAD_BYTES, may_be_transparent
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


def _over(rgb, a, page: int) -> np.ndarray:
    a = a[..., None].astype(np.float64)
    return rgb * a / 255 + page * (1 - a / 255)


def _over_white(rgb, a) -> np.ndarray:
    return _over(rgb, a, 255)


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


def _saved(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **kw)
    return buf.getvalue()


def _palette_gif(transparent: bool) -> bytes:
    rgb, a = _sticker()
    im = Image.fromarray(rgb).quantize(64)
    buf = io.BytesIO()
    im.save(buf, "GIF", **({"transparency": int(np.asarray(im)[0, 0])} if transparent else {}))
    return buf.getvalue()


def test_may_be_transparent_reads_the_header():
    rgb, a = _sticker()
    rgba = np.dstack([rgb, a])
    opaque = {"JPEG": _saved(rgb, "JPEG"), "PNG RGB": _saved(rgb, "PNG"), "PNG palette": _saved(rgb, "PNG", bits=4),
              "lossy WebP": _saved(rgb, "WEBP"), "lossless WebP RGB": _saved(rgb, "WEBP", lossless=True),
              "BMP": _saved(rgb, "BMP"), "GIF": _palette_gif(False)}
    transparent = {"PNG RGBA": _saved(rgba, "PNG"), "PNG LA": _saved(np.dstack([rgb[..., 0], a]), "PNG"),
                   "PNG palette tRNS": _rgba_palette_png(), "lossy WebP RGBA": _saved(rgba, "WEBP"),
                   "lossless WebP RGBA": _saved(rgba, "WEBP", lossless=True), "GIF": _palette_gif(True),
                   "unknown": b"\x00" * 64}
    assert [k for k, v in opaque.items() if may_be_transparent(v)] == []
    assert [k for k, v in transparent.items() if not may_be_transparent(v)] == []
    png = opaque["PNG RGB"]  # the answer needs the chunks before the pixels: a cut header may hide a tRNS
    assert may_be_transparent(png[:30]) and not may_be_transparent(png)
    gif = opaque["GIF"]  # a file read only in part may have its control extension further on
    assert may_be_transparent(gif[:12] + b"\x00" * HEAD_BYTES) and not may_be_transparent(gif[:12] + b"\x00" * 100)


def _rgba_palette_png() -> bytes:
    rgb, a = _sticker()
    im = Image.fromarray(rgb).quantize(64)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=int(np.asarray(im)[0, 0]))
    return buf.getvalue()


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WEBP", {"lossless": True})])
def test_transparent_stills_over_black(fmt, kw):
    rgb, a = _sticker()
    data = _rgba(fmt, **kw)
    got = frame_to_rgb(decode_image(data, background=0)).astype(np.float64)
    assert np.abs(got - _over(rgb, a, 0)).max() <= 0.5 and (got[a == 0] == 0).all()
    for source in (Image.open(io.BytesIO(data)), data):  # PIL input too
        views = decode_image_views(source)
        assert [page for page, _ in views] == ["white", "black"]
        for (page, frame), level in zip(views, (255, 0)):
            np.testing.assert_allclose(frame_to_rgb(frame), _over(rgb, a, level), atol=0.5, err_msg=page)
    assert [page for page, _ in decode_image_views(data, backgrounds=("black",))] == [""]


def test_every_still_decoder_takes_the_page():
    """FFmpeg (PNG), Pillow with a colour profile, animated WebP's first frame: the same page."""
    from test_media_icc import P3, _saved as icc_saved

    rgb, a = _sticker()
    rgba = np.dstack([rgb, a])
    frames = [Image.fromarray(np.dstack([np.roll(rgb, k, 1), a])) for k in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    for name, data in {"png": _rgba("PNG"), "profiled png": icc_saved(rgba, "PNG", P3),
                       "animated webp": buf.getvalue()}.items():
        white, black = (frame_to_rgb(decode_image(data, background=p)).astype(int) for p in (255, 0))
        assert (white[a == 0] == 255).all() and (black[a == 0] == 0).all(), name
        assert np.array_equal(white[a == 255], black[a == 255]), name  # opaque pixels whatever the page


def test_opaque_pictures_are_decoded_once(monkeypatch):
    import engine.media.image as image

    rgb, _ = _sticker()
    calls = []
    real = image.decode_image
    monkeypatch.setattr(image, "decode_image", lambda *a, **k: calls.append(k) or real(*a, **k))
    opaque_rgba = _saved(np.dstack([rgb, np.full((H, W), 255, np.uint8)]), "PNG")
    cases = [(_saved(rgb, "JPEG"), 1, [""]), (_saved(rgb, "PNG"), 1, [""]), (_palette_gif(False), 1, [""]),
             (opaque_rgba, 2, [""]),  # an alpha channel opaque everywhere: decoded on both pages, equal
             (_palette_gif(True), 2, ["white", "black"])]
    for data, decodes, pages in cases:
        calls.clear()
        assert [page for page, _ in image.decode_image_views(data)] == pages
        assert len(calls) == decodes
    assert [p for p, _ in image.decode_image_views(rgb)] == [""]  # an RGB array


def _animation(fmt: str, alpha: np.ndarray | None) -> bytes:
    rgb, _ = _sticker()
    frames = [np.roll(rgb, 7 * k, 1) for k in range(3)]
    if alpha is not None:
        frames = [np.dstack([f, alpha]) for f in frames]
    buf = io.BytesIO()
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(buf, fmt, save_all=True, append_images=rest, duration=1000, lossless=True, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])  # APNG through FFmpeg, animated WebP through Pillow
def test_transparent_animations_over_each_page(fmt):
    rgb, a = _sticker()
    data = _animation(fmt, a)
    plain = decode_video(data, Sampling("all"))
    assert plain.pages == []  # one page asked for: white
    video = decode_video(data, Sampling("all"), backgrounds=("white", "black"))
    assert [page for page, _ in video.pages] == ["white", "black"] and video.pages[0][1] is video.frames
    for (page, frames), level in zip(video.pages, (255, 0)):
        assert len(frames) == 3 and [f.pts for f in frames] == video.timestamps
        for k, f in enumerate(frames):
            want = _over(np.roll(rgb, 7 * k, 1), a, level)
            np.testing.assert_allclose(frame_to_rgb(f), want, atol=0.5, err_msg=f"{fmt} {page} {k}")
    for k, f in enumerate(plain.frames):
        np.testing.assert_array_equal(frame_to_rgb(f), frame_to_rgb(video.frames[k]))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_opaque_animations_have_no_pages(fmt):
    data = _animation(fmt, np.full((H, W), 255, np.uint8))  # an alpha channel, opaque everywhere
    assert decode_video(data, Sampling("all"), backgrounds=("white", "black")).pages == []
    assert decode_video(_animation(fmt, None), Sampling("all"), backgrounds=("white", "black")).pages == []


def test_heif_alpha_is_read_from_its_meta_box():
    """HEIC photos are opaque and costly to decode: only one whose meta box declares an auxiliary
    (alpha) image is decoded over the second page."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    rgb, a = _sticker()
    opaque, transparent = _saved(rgb, "HEIF"), _saved(np.dstack([rgb, a]), "HEIF")
    assert not may_be_transparent(opaque) and may_be_transparent(transparent)
    assert may_be_transparent(opaque[:40])  # the meta box not read whole: no answer, so maybe
    assert [p for p, _ in decode_image_views(opaque)] == [""]
    assert [p for p, _ in decode_image_views(transparent)] == ["white", "black"]


def test_rgba_arrays():
    rgb, a = _sticker()
    views = decode_image_views(np.dstack([rgb, a]))
    assert [page for page, _ in views] == ["white", "black"]
    for (page, frame), level in zip(views, (255, 0)):
        np.testing.assert_allclose(frame_to_rgb(frame), _over(rgb, a, level), atol=0.5, err_msg=page)
    opaque = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    assert [page for page, _ in decode_image_views(opaque)] == [""]
    np.testing.assert_array_equal(frame_to_rgb(decode_image(opaque)), rgb)
