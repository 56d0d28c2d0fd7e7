"""Tiled HEIF/AVIF photos (Note [tiled images]): decoded whole, never one tile; probed as images of
their whole size; limits on the whole picture; typed errors without the optional decoder."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from engine.errors import MediaLimitError, UnsupportedMediaError
from engine.media import Limits, Sampling, decode_image, decode_video, frame_to_rgb, probe
from engine.media.tiled_image import decode_tiled
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
    assert np.abs(frame_to_rgb(decode_image(data)).astype(int) - a).mean() < 2  # through FFmpeg
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="AVIF", quality=95)
    avif = buf.getvalue()
    assert probe(avif).kind == "image"
    # the tiled path's AVIF branch (Pillow's own plugin) on the same file: the same picture
    whole = frame_to_rgb(decode_tiled(io.BytesIO(avif), Limits()))
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
