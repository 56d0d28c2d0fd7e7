"""Display orientation (Note [display orientation]): the eight turns and mirror images, from FFmpeg
display matrices and EXIF tags, applied to decoded videos and images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.media import decode_image, decode_video, frame_to_rgb
from engine.media import synthetic as syn
from engine.media.orientation import ALL, IDENTITY, Orientation, exif_orientation, frame_orientation
from engine.media.video import Sampling
from media_factory import clip

# every right-angle turn, alone and mirrored either way (the eight, with repeats)
MATRICES = [(deg, h, v) for deg in (0, 90, 180, 270) for h, v in ((0, 0), (1, 0), (0, 1))]


def geometric(coded: np.ndarray, m) -> np.ndarray:
    """The display picture by the matrix's definition (libavutil/display.h): the source point
    (p, q) = (column, row) goes to (a p + c q, b p + d q), translated into the picture."""
    a, b, c, d = (int(np.sign(m[i])) for i in (0, 1, 3, 4))
    rows, cols = np.indices(coded.shape[:2])
    p, q = a * cols + c * rows, b * cols + d * rows
    p, q = p - p.min(), q - q.min()
    out = np.empty((q.max() + 1, p.max() + 1) + coded.shape[2:], coded.dtype)
    out[q, p] = coded
    return out


@pytest.mark.parametrize("deg,hflip,vflip", MATRICES)
def test_display_matrix_is_read_as_its_geometry(deg, hflip, vflip):
    m = syn.display_matrix(deg, hflip=bool(hflip), vflip=bool(vflip))
    coded = np.arange(3 * 5).reshape(3, 5)
    o = Orientation.from_display_matrix(m)
    np.testing.assert_array_equal(o.apply(coded), geometric(coded, m))
    assert o.mirrored == (hflip != vflip)


def test_as_rotation_and_mirror_round_trip():
    coded = np.arange(4 * 7).reshape(4, 7)
    seen = set()
    for o in ALL:
        degrees, mirrored = o.as_rotation()
        shown = np.rot90(coded, degrees // 90)
        np.testing.assert_array_equal(o.apply(coded), shown[:, ::-1] if mirrored else shown)
        assert mirrored == o.mirrored
        seen.add((degrees, mirrored))
    assert len(seen) == 8
    assert Orientation.from_rotation(-90).as_rotation() == (270, False)
    assert Orientation.from_rotation(float("nan")) == IDENTITY


PIL_EXIF = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("value", range(1, 9))
def test_exif_values_turn_as_pillow_does(value):
    coded = np.random.default_rng(value).integers(0, 255, (3, 5), dtype=np.uint8)
    im = Image.fromarray(coded)
    want = np.asarray(im.transpose(PIL_EXIF[value]) if value in PIL_EXIF else im)
    np.testing.assert_array_equal(Orientation.from_exif(value).apply(coded), want)
    with pytest.raises(ValueError):
        Orientation.from_exif(9)


def exif_image(fmt: str, value: int | None, size=(48, 30)) -> bytes:
    rng = np.random.default_rng(7)
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 3] = (250, 40, 40)  # a red block in the top-left corner
    img[h // 2 :, w // 3 :] = rng.integers(60, 200, (h - h // 2, w - w // 3, 3))
    buf = io.BytesIO()
    kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    if value is not None:
        exif = Image.Exif()
        exif[0x0112] = value
        kw["exif"] = exif.tobytes()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("value", range(1, 9))
def test_images_come_upright_as_pillow_shows_them(fmt, value):
    data = exif_image(fmt, value)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")).astype(int)
    got = frame_to_rgb(decode_image(data)).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 4  # lossy codecs, two decoders
    # the red corner lands where Pillow puts it (a wrong turn moves it)
    red = (got[..., 0] > 200) & (got[..., 1] < 90)
    want_red = (want[..., 0] > 200) & (want[..., 1] < 90)
    assert (red == want_red).mean() > 0.97


@pytest.mark.parametrize("value", [1, 5, 6])
def test_pil_images_come_upright_like_files(value):
    data = exif_image("PNG", value)
    from_file = frame_to_rgb(decode_image(data))
    from_pil = frame_to_rgb(decode_image(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(from_pil, from_file)


def test_images_without_or_with_damaged_exif():
    plain = exif_image("JPEG", None)
    assert exif_orientation(io.BytesIO(plain)) is None
    assert frame_to_rgb(decode_image(plain)).shape == (30, 48, 3)
    data = bytearray(exif_image("JPEG", 6))
    i = data.find(b"Exif\x00\x00")
    data[i + 6 : i + 14] = b"\xff" * 8  # TIFF header gone: the tag cannot be read
    assert exif_orientation(io.BytesIO(bytes(data))) is None
    frame = decode_image(bytes(data))  # FFmpeg's reading stands, without an error
    assert frame.width * frame.height == 48 * 30
    assert exif_orientation(io.BytesIO(b"not an image")) is None


@pytest.mark.parametrize("deg,hflip,vflip", MATRICES)
def test_videos_come_upright_as_their_display_matrix_says(deg, hflip, vflip):
    base = clip(width=96, height=64, fps=10, duration=1.0, gop=10)
    m = syn.display_matrix(deg, hflip=bool(hflip), vflip=bool(vflip))
    dv = decode_video(syn.set_mp4_rotation(base, matrix=m), Sampling("fps", 1.0))
    coded = frame_to_rgb(decode_video(base, Sampling("fps", 1.0)).frames[0])
    want = geometric(coded, m)
    got = frame_to_rgb(dv.frames[0])
    assert got.shape == want.shape and (dv.width, dv.height) == (want.shape[1], want.shape[0])
    # turned frames go through 4:4:4 (chroma interpolated by swscale): close, not equal
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 3
    degrees, mirrored = Orientation.from_display_matrix(m).as_rotation()
    assert (dv.rotation, dv.mirrored) == (degrees, mirrored)
    assert mirrored == (hflip != vflip)


class _Unreadable:
    """A frame whose side data this PyAV cannot list (FFmpeg 8's EXIF type on PyAV 18)."""

    rotation = -90.0

    @property
    def side_data(self):
        raise ValueError("31 is not a valid Type")


def test_unreadable_side_data_falls_back_to_the_angle():
    assert frame_orientation(_Unreadable()) == Orientation.from_rotation(-90)
    assert frame_orientation(_Unreadable()).as_rotation() == (270, False)


@pytest.mark.parametrize("deg,hflip,vflip", MATRICES)
def test_decord_frames_come_upright_too(deg, hflip, vflip):
    from engine.media import decord_available

    if not decord_available():
        pytest.skip("decord not installed")
    base = clip(width=96, height=64, fps=10, duration=1.0, gop=10)
    data = syn.set_mp4_rotation(base, matrix=syn.display_matrix(deg, hflip=bool(hflip), vflip=bool(vflip)))
    ours = decode_video(data, Sampling("fps", 1.0))
    theirs = decode_video(data, Sampling("fps", 1.0), backend="decord")
    assert (theirs.rotation, theirs.mirrored) == (ours.rotation, ours.mirrored)
    a, b = frame_to_rgb(ours.frames[0]).astype(int), frame_to_rgb(theirs.frames[0]).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 4  # two RGB conversions, one orientation


def test_after_composes():
    for want in ALL:
        for done in ALL:
            coded = np.arange(4 * 7).reshape(4, 7)
            np.testing.assert_array_equal(want.after(done).apply(done.apply(coded)), want.apply(coded))


def test_pillow_reads_only_files_that_hold_exif(monkeypatch):
    """Most uploads carry no EXIF: the marker check spares them Pillow's header parse."""
    from PIL import Image as PILImage

    opened = []
    real_open = PILImage.open
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    for fmt in ("JPEG", "PNG", "WEBP"):
        plain = exif_image(fmt, None)
        assert exif_orientation(io.BytesIO(plain)) is None
    assert opened == []
    for fmt in ("JPEG", "PNG", "WEBP"):
        assert exif_orientation(io.BytesIO(exif_image(fmt, 6))) == Orientation.from_exif(6)
    assert len(opened) == 3
