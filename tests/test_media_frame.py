"""Frame construction from PyAV frames: formats, zero-copy planes, range, matrix, rotation."""

from __future__ import annotations

import av
import numpy as np
import pytest

from engine.errors import InputError
from engine.media import Frame, frame_from_array, frame_from_av, frame_to_rgb
from engine.media.orientation import Orientation
from engine.media.synthetic import pattern_rgb, read_index

W, H = 96, 64


def av_frame(pix_fmt: str, width=W, height=H, colorspace=None, color_range=None, index=5):
    rgb = av.VideoFrame.from_ndarray(pattern_rgb(index, width, height), format="rgb24")
    kw = {}
    if colorspace is not None:
        kw["dst_colorspace"] = colorspace
    if color_range is not None:
        kw["dst_color_range"] = color_range
    f = rgb.reformat(format=pix_fmt, **kw) if pix_fmt != "rgb24" else rgb
    if colorspace is not None:
        f.colorspace = colorspace
    if color_range is not None:
        f.color_range = color_range
    return f


DIRECT = [
    # pix_fmt, Frame.format, dtype, plane shapes (H, row elems), full range
    ("yuv420p", "i420", np.uint8, [(H, W), (H // 2, W // 2), (H // 2, W // 2)], False),
    ("yuvj420p", "i420", np.uint8, [(H, W), (H // 2, W // 2), (H // 2, W // 2)], True),
    ("nv12", "nv12", np.uint8, [(H, W), (H // 2, W)], False),
    ("yuv422p", "i422", np.uint8, [(H, W), (H, W // 2), (H, W // 2)], False),
    ("yuv444p", "i444", np.uint8, [(H, W)] * 3, False),
    ("yuv420p10le", "i420_10", np.uint16, [(H, W), (H // 2, W // 2), (H // 2, W // 2)], False),
    ("yuv422p10le", "i422_10", np.uint16, [(H, W), (H, W // 2), (H, W // 2)], False),
    ("yuv444p10le", "i444_10", np.uint16, [(H, W)] * 3, False),
    ("rgb24", "rgb24", np.uint8, [(H, W, 3)], True),
    ("bgr24", "bgr24", np.uint8, [(H, W, 3)], True),
]


@pytest.mark.parametrize("pix_fmt,fmt,dtype,shapes,full", DIRECT, ids=[d[0] for d in DIRECT])
def test_direct_formats_are_zero_copy_views(pix_fmt, fmt, dtype, shapes, full):
    vf = av_frame(pix_fmt)
    fr = frame_from_av(vf)
    assert isinstance(fr, Frame)
    assert fr.format == fmt and (fr.width, fr.height) == (W, H) and fr.full_range is full
    assert [p.shape for p in fr.planes] == shapes
    for p, plane in zip(fr.planes, vf.planes):
        assert p.dtype == dtype
        assert p.strides[0] == plane.line_size           # FFmpeg's padded stride is kept
        assert not p.flags.writeable
        # same memory as the AVFrame buffer (no copy)
        base = np.frombuffer(plane, dtype=np.uint8)
        assert np.shares_memory(p, base)
    assert fr.pts == 0.0 or fr.pts is not None


@pytest.mark.parametrize("pix_fmt", [d[0] for d in DIRECT])
def test_planes_convert_like_ffmpeg(pix_fmt):
    vf = av_frame(pix_fmt, colorspace=5 if pix_fmt not in ("rgb24", "bgr24") else None)
    fr = frame_from_av(vf)
    ref = vf.to_ndarray(format="rgb24")
    ours = frame_to_rgb(fr)
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 4.0


def test_ten_bit_samples_are_ten_bit():
    fr = frame_from_av(av_frame("yuv420p10le"))
    y = fr.planes[0]
    assert y.max() <= 1023 and y.max() > 255
    assert read_index(y) == 5


@pytest.mark.parametrize("pix_fmt,expect", [
    ("yuv420p12le", "i420_10"), ("yuv444p12le", "i444_10"), ("p010le", "i420_10"),
    ("gray", "rgb24"), ("rgba", "rgb24"), ("bgra", "rgb24"),
    ("yuva420p", "rgb24"), ("nv21", "i420"), ("gbrp", "rgb24"), ("yuv411p", "i422"),
    ("yuv440p", "i420"), ("rgb48le", "rgb24"),
])
def test_other_formats_are_converted_by_ffmpeg(pix_fmt, expect):
    vf = av_frame(pix_fmt)
    fr = frame_from_av(vf)
    assert fr.format == expect
    # grey and palette lose colour: compare with FFmpeg's own RGB of the frame instead
    ref = vf.to_ndarray(format="rgb24") if pix_fmt in ("gray", "pal8") else pattern_rgb(5, W, H)
    assert np.abs(frame_to_rgb(fr).astype(int) - ref.astype(int)).mean() < 6.0


def test_bt2020_is_converted_to_rgb_with_its_matrix():
    vf = av_frame("yuv420p", colorspace=9)  # BT2020 NCL
    fr = frame_from_av(vf)
    assert fr.format == "rgb24"
    ref = pattern_rgb(5, W, H)
    assert np.abs(frame_to_rgb(fr).astype(int) - ref.astype(int)).mean() < 6.0


@pytest.mark.parametrize("cs,height,expect", [
    (1, 64, "bt709"), (5, 64, "bt601"), (6, 800, "bt601"), (2, 64, "bt601"), (2, 720, "bt709"),
])
def test_matrix_rule(cs, height, expect):
    vf = av_frame("yuv420p", width=64, height=height)
    vf.colorspace = cs
    assert frame_from_av(vf).matrix == expect


def test_range_from_color_range_tag():
    vf = av_frame("yuv420p", color_range=2)
    fr = frame_from_av(vf)
    assert fr.full_range is True and fr.format == "i420"
    assert np.abs(frame_to_rgb(fr).astype(int) - vf.to_ndarray(format="rgb24").astype(int)).mean() < 4


@pytest.mark.parametrize("rotation", [90, 180, -90, 270])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p", "yuv420p10le", "rgb24"])
def test_rotation_gives_display_orientation(rotation, pix_fmt):
    vf = av_frame(pix_fmt, index=77)
    fr = frame_from_av(vf, orientation=Orientation.from_rotation(rotation))
    k = (rotation // 90) % 4
    if k % 2:
        assert (fr.width, fr.height) == (H, W)
    else:
        assert (fr.width, fr.height) == (W, H)
    if pix_fmt != "rgb24":
        assert fr.format in ("i444", "i444_10")  # chroma siting: rotated as 4:4:4
        assert fr.full_range is (pix_fmt == "yuvj420p")
    rgb = frame_to_rgb(fr)
    assert rgb.shape == (fr.height, fr.width, 3)
    back = np.rot90(rgb, k=-k)  # undo the display rotation -> coded orientation
    assert read_index(back[..., 1]) == 77 or read_index(back.mean(-1)) == 77
    ref = vf.to_ndarray(format="rgb24")
    assert np.abs(back.astype(int) - ref.astype(int)).mean() < 4.0


def test_frame_from_array_and_validation():
    a = pattern_rgb(3, W, H)
    fr = frame_from_array(a, pts=1.5)
    assert fr.format == "rgb24" and fr.planes[0].shape == (H, W, 3) and fr.pts == 1.5
    assert np.shares_memory(fr.planes[0], a)
    assert frame_from_array(a, channels="bgr").format == "bgr24"
    for bad in (a.astype(np.float32), a[..., :2], a[..., 0], np.zeros((0, 4, 3), np.uint8), [[1]]):
        with pytest.raises(InputError):
            frame_from_array(bad)
    with pytest.raises(InputError):
        frame_from_array(a, channels="rgba")
