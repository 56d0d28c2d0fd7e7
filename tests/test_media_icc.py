"""Stills with a colour profile other than sRGB are shown in sRGB (Note [colour profiles] in
engine/media/icc.py). The Display P3 profile is written here from its definition (a v4-style
matrix/TRC ICC profile: D50-adapted colorants, the sRGB curve); the reference conversion is the
float64 matrix between the two sets of primaries."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.media.frame import frame_to_rgb
from engine.media.image import decode_image

D65 = (0.3127, 0.3290)
SRGB_XY = [(0.640, 0.330), (0.300, 0.600), (0.150, 0.060)]
P3_XY = [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
D50_XYZ = np.array([0.9642, 1.0, 0.8249])


def _to_xyz(xy, white=D65) -> np.ndarray:
    m = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in xy]).T
    w = np.array([white[0] / white[1], 1.0, (1 - white[0] - white[1]) / white[1]])
    return m * np.linalg.solve(m, w)


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _icc(description: str, xy) -> bytes:
    """A matrix/TRC RGB display profile: colorants adapted to D50 (Bradford), the sRGB curve."""
    w = np.array([D65[0] / D65[1], 1.0, (1 - D65[0] - D65[1]) / D65[1]])
    adapt = np.linalg.inv(BRADFORD) @ np.diag((BRADFORD @ D50_XYZ) / (BRADFORD @ w)) @ BRADFORD
    colorants = adapt @ _to_xyz(xy)
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)  # noqa: E731
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(
        _s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    text = description.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 12 + b"\0" * 67
    tags = [(b"desc", desc), (b"wtpt", xyz(D50_XYZ)), (b"rXYZ", xyz(colorants[:, 0])),
            (b"gXYZ", xyz(colorants[:, 1])), (b"bXYZ", xyz(colorants[:, 2])), (b"rTRC", curve),
            (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0")]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = 128 + 4 + len(table) + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(_s15(c) for c in D50_XYZ)
              + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


def _srgb_of_p3(rgb: np.ndarray) -> np.ndarray:
    """float64 reference: Display P3 numbers -> sRGB numbers (same curve, primaries converted)."""
    v = rgb / 255.0
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    lin = np.clip(lin @ np.linalg.solve(_to_xyz(SRGB_XY), _to_xyz(P3_XY)).T, 0, 1)
    return 255 * np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def _picture() -> np.ndarray:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:60, 0:90]
    img = np.stack([x * 255 / 89, y * 255 / 59, 255 - x * 255 / 89], -1)
    img[20:40, 30:60] = rng.integers(0, 256, (20, 30, 3))  # saturated, out of sRGB's gamut too
    return img.astype(np.uint8)


def _saved(img: np.ndarray, fmt: str, icc: bytes | None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **({"icc_profile": icc} if icc else {}), **kw)
    return buf.getvalue()


P3 = _icc("Display P3", P3_XY)


def test_the_hand_written_profile_is_display_p3():
    """LittleCMS reads it, and maps P3's red primary outside sRGB (clipped) and white to white."""
    p = ImageCms.ImageCmsProfile(io.BytesIO(P3))
    assert ImageCms.getProfileDescription(p).strip() == "Display P3"
    im = Image.fromarray(np.array([[[255, 0, 0], [255, 255, 255], [128, 128, 128]]], np.uint8))
    out = np.asarray(ImageCms.profileToProfile(im, p, ImageCms.createProfile("sRGB"), outputMode="RGB"))
    np.testing.assert_allclose(out[0, 1:], np.rint(_srgb_of_p3(np.asarray(im)[0, 1:])), atol=1)
    assert out[0, 0, 0] == 255 and out[0, 0, 1] <= 2  # pure P3 red: beyond sRGB red


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("JPEG", {"quality": 100, "subsampling": 0}), ("WEBP", {"lossless": True})])
def test_display_p3_stills_come_out_in_srgb(fmt, kw):
    img = _picture()
    data = _saved(img, fmt, P3, **kw)
    got = frame_to_rgb(decode_image(data)).astype(np.float64)
    numbers = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64)  # as stored
    want = _srgb_of_p3(numbers)  # the float64 reference of the conversion
    assert np.abs(got - want).max() <= 2 and np.abs(got - want).mean() < 0.6
    plain = frame_to_rgb(decode_image(_saved(img, fmt, None, **kw))).astype(np.float64)
    assert np.abs(plain - want).mean() > 3  # the numbers read as sRGB (the engine before): off


def test_srgb_and_broken_profiles_keep_the_plain_path():
    img = _picture()
    plain = frame_to_rgb(decode_image(_saved(img, "PNG", None)))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (srgb, b"not a profile" * 20):
        np.testing.assert_array_equal(frame_to_rgb(decode_image(_saved(img, "PNG", icc))), plain)


def test_profiled_stills_come_upright():
    img = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    data = _saved(img, "JPEG", P3, quality=100, subsampling=0, exif=exif.tobytes())
    f = decode_image(data)
    assert (f.height, f.width) == (img.shape[1], img.shape[0])


def test_damaged_profiled_stills_give_typed_errors():
    """Damage anywhere (in the ICC profile too) gives a MediaError or a picture, nothing else."""
    from media_factory import typed_errors_on_damage

    img = _picture()
    for fmt, kw in (("JPEG", {"quality": 90}), ("PNG", {})):
        data = _saved(img, fmt, P3, **kw)
        typed_errors_on_damage(data, [decode_image], rounds=40, keep=len(data) // 2)


def test_display_p3_heic_comes_out_in_srgb():
    """iPhone photographs: HEIC with a Display P3 profile, decoded by libheif (pillow-heif)."""
    pillow_heif = pytest.importorskip("pillow_heif")
    img = _picture()
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(img)).save(buf, quality=-1, icc_profile=P3)
    numbers = np.asarray(pillow_heif.open_heif(io.BytesIO(buf.getvalue())).to_pillow().convert("RGB"))
    want = _srgb_of_p3(numbers.astype(np.float64))
    got = frame_to_rgb(decode_image(buf.getvalue())).astype(np.float64)
    assert np.abs(got - want).max() <= 2 and np.abs(numbers - want).mean() > 3
