"""HEIF/AVIF stills (Note [HEIF and AVIF stills]): tiled photos decoded whole, never one tile; probed as images of
their whole size; limits on the whole picture; typed errors without the optional decoder."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from engine.errors import MediaLimitError, UnsupportedMediaError
from engine.media import Limits, Sampling, decode_image, decode_video, frame_to_rgb, probe
from engine.media.heif_stills import decode_with_pillow
from media_factory import typed_errors_on_damage

pillow_heif = pytest.importorskip("pillow_heif")

H, W = 1100, 1500  # 3 x 3 tiles of 512, the last row and column cropped


def picture(h: int = H, w: int = W) -> np.ndarray:
    """Blocks of 100 px in random colours: a tile alone, or a misplaced one, shows at once."""
    blocks = np.random.default_rng(5).integers(0, 256, ((h + 99) // 100, (w + 99) // 100, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((100, 100, 1), np.uint8))[:h, :w])


def heic(a: np.ndarray, tile_size: int | None = 512) -> bytes:
    buf = io.BytesIO()
    kw = {"tile_size": tile_size} if tile_size else {}
    pillow_heif.from_pillow(Image.fromarray(a)).save(buf, format="HEIF", quality=95, **kw)
    return buf.getvalue()


def libheif_rgb(data: bytes) -> np.ndarray:
    return np.asarray(pillow_heif.open_heif(io.BytesIO(data)).to_pillow().convert("RGB"))


def test_a_tiled_photo_decodes_whole():
    a = picture()
    data = heic(a)
    assert pillow_heif.open_heif(io.BytesIO(data)).info.get("tiling", {}).get("num_columns") == 3
    info = probe(data)
    assert (info.kind, info.width, info.height, info.video_codec) == ("image", W, H, "hevc")
    got = frame_to_rgb(decode_image(data))
    np.testing.assert_array_equal(got, libheif_rgb(data))
    assert np.abs(got.astype(int) - a).mean() < 2  # the picture, not a 512 x 512 corner of it
    with pytest.raises(UnsupportedMediaError, match="tiled"):
        decode_video(data, Sampling("fps", 1.0))  # a still: not one tile as a one-frame video


def test_untiled_heif_and_avif_stills_are_images():
    a = picture(64, 96)
    data = heic(a, tile_size=None)
    info = probe(data)
    assert (info.kind, info.width, info.height) == ("image", 96, 64)
    assert np.abs(frame_to_rgb(decode_image(data)).astype(int) - a).mean() < 2
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="AVIF", quality=95)
    avif = buf.getvalue()
    assert probe(avif).kind == "image"
    # the tiled path's AVIF branch (Pillow's own plugin) on the same file: the same picture
    whole = frame_to_rgb(decode_with_pillow(io.BytesIO(avif), Limits()))
    np.testing.assert_array_equal(whole, np.asarray(Image.open(io.BytesIO(avif)).convert("RGB")))


def test_limits_count_the_whole_picture_not_a_tile():
    data = heic(picture())
    with pytest.raises(MediaLimitError):
        decode_image(data, Limits(max_pixels=1000 * 1000))  # each tile is 512 x 512: under it
    with pytest.raises(MediaLimitError):
        probe(data, Limits(max_pixels=1000 * 1000))


def test_without_pillow_heif_the_refusal_says_what_to_install(monkeypatch):
    data = heic(picture())
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails
    with pytest.raises(UnsupportedMediaError, match="pillow-heif"):
        decode_image(data)


def test_damaged_tiled_photos_give_typed_errors_only():
    assert typed_errors_on_damage(heic(picture(600, 700)), (probe, decode_image), rounds=30, keep=64)


@pytest.mark.models
def test_session_judges_the_whole_photo(model_repo):
    from engine import Session

    data = heic(picture())
    with Session(model_repo.path) as s:
        got = s.moderate(image=data).policies["sexual_content"].score
        want = s.moderate(image=libheif_rgb(data)).policies["sexual_content"].score
    assert got == pytest.approx(want, abs=1e-6)


def smooth(h: int = 64, w: int = 96) -> np.ndarray:
    """Gradients and a red block in the top-left corner: where the block lands shows the turn."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 2.5, y * 3.5, (x + y) * 1.5], -1).clip(0, 255).astype(np.uint8)
    a[4:20, 6:30] = (250, 30, 30)
    return a


EXIF_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("tile_size", [None, 32])
@pytest.mark.parametrize("value", [2, 5, 6])
def test_oriented_photos_come_upright_mirrors_included(value, tile_size):
    """HEIC (libheif applies irot/imir) and AVIF (EXIF, as for untiled AVIF) the way Pillow shows
    the picture they were saved from."""
    im = Image.fromarray(smooth())
    want = np.asarray(im.transpose(EXIF_TURNS[value])).astype(int)
    exif = Image.Exif()
    exif[0x0112] = value
    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, format="HEIF", quality=95, exif=exif.tobytes(),
                                     **({"tile_size": tile_size} if tile_size else {}))
    got = frame_to_rgb(decode_image(buf.getvalue())).astype(int)
    assert got.shape == want.shape and np.abs(got - want).mean() < 2
    if tile_size is None:  # untiled AVIF keeps FFmpeg's planes; the tiled path's AVIF branch here
        buf = io.BytesIO()
        im.save(buf, format="AVIF", quality=95, exif=exif.tobytes())
        for got in (decode_image(buf.getvalue()), decode_with_pillow(io.BytesIO(buf.getvalue()), Limits())):
            got = frame_to_rgb(got).astype(int)
            assert got.shape == want.shape and np.abs(got - want).mean() < 3
