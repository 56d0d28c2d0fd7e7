"""Interlaced video is judged by the top field of each sampled frame (Note [interlaced frames] in
engine/media/frame.py): no combs where things move, the displayed shape kept."""

from __future__ import annotations

import io

import av
import numpy as np

from engine.media import synthetic as syn
from engine.media.video import Sampling, decode_video
from engine.ops import PreprocessSpec, preprocess

H, W = 96, 128
NORM = dict(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _scene(dx: float) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    disc = (x - W / 2 - dx) ** 2 + (y - H / 2) ** 2 < 30**2
    return np.stack([230 * disc + 10, 60 + 0 * x, 255 * y / H], -1).astype(np.uint8)


def _woven() -> av.VideoFrame:
    """An interlaced 4:2:0 frame of a moving disc: the top field's rows from the scene, the bottom
    field's from the scene 1/50 s later (12 pixels to the right), each field subsampled on its own
    as interlaced chroma is (its chroma rows alternate with the other field's)."""
    fields = [av.VideoFrame.from_ndarray(np.ascontiguousarray(_scene(dx)[k::2]), format="rgb24")
              .reformat(format="yuv420p").to_ndarray() for k, dx in ((0, -6), (1, 6))]
    y = np.empty((H, W), np.uint8)
    c = np.empty((H // 2, W // 2), np.uint8), np.empty((H // 2, W // 2), np.uint8)
    for k, f in enumerate(fields):  # (H/2 * 3/2, W): Y rows, then U, then V of the field
        y[k::2] = f[: H // 2]
        u = f[H // 2 : H // 2 + H // 8].reshape(H // 4, W // 2)
        v = f[H // 2 + H // 8 :].reshape(H // 4, W // 2)
        c[0][k::2], c[1][k::2] = u, v
    return av.VideoFrame.from_ndarray(np.concatenate([y, c[0].reshape(-1, W), c[1].reshape(-1, W)]),
                                      format="yuv420p")


def _interlaced_clip() -> bytes:
    return syn.encode_picture(_woven(), options={"x264-params": "interlaced=1:tff=1", "crf": "4",
                                                 "preset": "ultrafast"})


def test_interlaced_frames_are_their_top_field():
    data = _interlaced_clip()
    dv = decode_video(data, Sampling(mode="all"))
    f = dv.frames[0]
    assert dv.interlaced and (f.height, f.width, f.sar) == (H // 2, W, (1, 2)) and dv.sar == (1, 2)
    assert dv.picture_facts() == {"sar": [1, 2], "interlaced": True}
    with av.open(io.BytesIO(data)) as c:
        vf = next(c.decode(video=0))
        assert vf.interlaced_frame
        full = vf.to_ndarray()  # (H * 3 / 2, W) I420 as FFmpeg decodes it
    np.testing.assert_array_equal(np.asarray(f.planes[0]), full[:H][0::2])  # the field's rows, as views
    assert f.planes[0].strides[0] >= 2 * W and f.planes[1].shape == (H // 4, W // 2)


def test_no_combs_where_things_move():
    """Preprocessed (shorter side, centre crop), the interlaced frame is its top field's scene;
    the woven frame taken as one picture is combed where the disc moves."""
    inter = decode_video(_interlaced_clip(), Sampling(mode="all")).frames[0]
    opts = {"crf": "4", "preset": "ultrafast"}
    scene = decode_video(syn.encode_picture(_scene(-6), options=opts), Sampling(mode="all")).frames[0]
    as_progressive = decode_video(syn.encode_picture(_woven(), options=opts), Sampling(mode="all")).frames[0]
    spec = PreprocessSpec(size=(48, 48), resize="shorter", **NORM)
    want = preprocess([scene], spec)[0]
    err = np.abs(preprocess([inter], spec)[0] - want).mean() * NORM["std"][0] * 255  # levels
    combed = np.abs(preprocess([as_progressive], spec)[0] - want).mean() * NORM["std"][0] * 255
    assert err < 3 and combed > 2 * err, (err, combed)


def test_progressive_video_is_untouched():
    dv = decode_video(syn.encode_video(width=64, height=48, duration=0.2), Sampling(mode="all"))
    assert not dv.interlaced and dv.frames[0].height == 48 and dv.frames[0].sar == (1, 1)


def _adam7_png(rgb: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit RGB PNG: the seven passes of sub-images, filter type 0."""
    import struct
    import zlib

    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b"".join(b"".join(b"\0" + row.tobytes() for row in rgb[y0::dy, x0::dx])
                   for x0, y0, dx, dy in passes if rgb[y0::dy, x0::dx].size)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb.shape
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_adam7_png_is_a_whole_picture():
    """FFmpeg flags an Adam7 PNG as interlaced, but its passes make one picture: nothing is dropped."""
    from engine.media.frame import frame_to_rgb
    from engine.media.image import decode_image

    rgb = _scene(0)[:37, :45]
    data = _adam7_png(rgb)
    with av.open(io.BytesIO(data)) as c:
        assert next(c.decode(video=0)).interlaced_frame  # what makes the case
    f = decode_image(data)
    assert (f.height, f.width, f.sar) == (37, 45, (1, 1))
    np.testing.assert_array_equal(frame_to_rgb(f), rgb)
