"""Fused preprocessing vs a float64 reference and vs torch / PIL / OpenCV resizers.

Style of vLLM tests/kernels/core/test_layernorm.py: module-level parameter lists with awkward
sizes and padded strides, the reference computed first, outputs poisoned with NaN before each
run, tolerances stated with their reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from frames import make_frame, rgb_frame
from reference import geometry, preprocess_ref

from engine.errors import InputError
from engine.ops import PreprocessSpec, build_info, preprocess

FORMATS = ["i420", "nv12", "i422", "i444", "rgb24", "bgr24", "i420_10", "i422_10", "i444_10"]
SIZES = [(1, 1), (3, 5), (2, 2), (37, 53), (61, 17), (96, 130)]  # (H, W): odd, tiny, non-x8 widths
COLOUR = [("bt601", False), ("bt601", True), ("bt709", False), ("bt709", True)]
GEOMETRIES = [
    dict(size=(24, 24), resize="shorter"),  # downscale + centre crop
    dict(size=(20, 28), resize="stretch", resize_to=(31, 33)),  # crop of a stretch
    dict(size=(40, 33), resize="stretch"),  # plain stretch (up and down per axis)
    dict(size=(19, 27), resize="letterbox", pad_value=-2.5),
    dict(size=(150, 150), resize="shorter", resize_to=(160, 160)),  # upscale
]
FILTERS = ["antialias", "bilinear"]
LAYOUTS = ["nchw", "nhwc"]
DTYPES = ["float32", "float16"]
NORM = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# Tolerance in levels of the 0..255 pixel scale, far inside the brief's bound for the kernel vs a
# float64 reference of the same math (0.5 levels) so that small slips still show: float32
# accumulation of <= ~40 products of 8/10-bit samples is off by ~1e-4 levels.
TOL_PX = 0.5 / 255
# float16 output: rounding to 11 significant bits, relative 2^-11 of the value.
FP16_RTOL = 2.0**-11


def _run(frames, spec, **kw):
    out = np.full(spec.output_shape(len(frames)), np.nan, dtype=spec.dtype)  # poisoned
    res = preprocess(frames, spec, out=out, **kw)
    assert res is out
    return res.astype(np.float64)


def _check(got, ref, spec):
    # per output channel tolerance in output units: TOL_PX * scale / std
    gain = np.abs(spec.scale / np.asarray(spec.std, np.float64))
    ch_axis = 0 if spec.layout == "nchw" else -1
    shape = [1, 1, 1]
    shape[ch_axis] = 3
    atol = (TOL_PX * gain).reshape(shape) + 1e-6
    if spec.dtype == "float16":
        atol = atol + FP16_RTOL * np.abs(ref)
    assert not np.isnan(got).any(), "output not fully written"
    err = np.abs(got - ref)
    assert (err <= atol).all(), f"max err {err.max():.3g}, worst excess {(err - atol).max():.3g}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("colour", COLOUR)
def test_formats_vs_reference(fmt, hw, colour):
    rng = np.random.default_rng(abs(hash((fmt, hw, colour))) % 2**32)
    frame = make_frame(fmt, *hw, rng, matrix=colour[0], full_range=colour[1])
    spec = PreprocessSpec(size=(13, 11), resize="shorter", resize_to=(15, 15), **NORM)
    ref = preprocess_ref(frame, spec)
    got = _run([frame], spec)[0]
    _check(got, ref, spec)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"{g['resize']}{g['size']}")
@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_geometry_vs_reference(geom, filt, layout, dtype):
    rng = np.random.default_rng(1234)
    frames = [
        make_frame("i420", 61, 97, rng, matrix="bt709"),
        make_frame("nv12", 90, 46, rng, full_range=True),
        make_frame("rgb24", 45, 45, rng, rgb3d=True),
        make_frame("i444_10", 33, 70, rng),
    ]
    spec = PreprocessSpec(filter=filt, layout=layout, dtype=dtype, channels="bgr", **geom, **NORM)
    refs = np.stack([preprocess_ref(f, spec) for f in frames])
    got = _run(frames, spec, threads=2)
    for g, r in zip(got, refs):
        _check(g, r, spec)


@pytest.mark.parametrize("hw", [(1080, 1920), (720, 1280), (480, 854)])
def test_video_sizes_vs_reference(hw):
    # the production geometry: shorter side 256, centre crop 224 (reference on the crop only)
    rng = np.random.default_rng(7)
    frame = make_frame("i420", *hw, rng, pad=32)
    spec = PreprocessSpec(size=(224, 224), resize_to=(256, 256), **NORM)
    ref = preprocess_ref(frame, spec)
    _check(_run([frame], spec)[0], ref, spec)


def test_geometry_convention():
    # torchvision Resize(256) + CenterCrop(224) on 1920x1080: 455 wide, crop offset round(115.5)=116
    assert geometry("shorter", 1080, 1920, 224, 224, (256, 256)) == ((256, 16), (455, 116))
    from engine import _C

    for args in [("shorter", 1080, 1920, 224, 224), ("letterbox", 1080, 1920, 320, 320), ("letterbox", 7, 3, 5, 9)]:
        mode = {"stretch": 0, "shorter": 1, "letterbox": 2}[args[0]]
        assert _C.resize_geometry(mode, *args[1:], 256, 256) == geometry(*args, (256, 256))


def test_anamorphic_geometry():
    """Note [sample aspect ratio]: PAL DVD 720x576 at 16:15 is shown 768x576; HDV 1440x1080 at 4:3
    is shown as 1920x1080, so it gets 1080p's geometry; stretch ignores the aspect."""
    from engine import _C

    assert geometry("shorter", 576, 720, 224, 224, (256, 256), (16, 15)) == ((256, 16), (341, 58))
    assert geometry("shorter", 1080, 1440, 224, 224, (256, 256), (4, 3)) == geometry(
        "shorter", 1080, 1920, 224, 224, (256, 256))
    cases = [("shorter", 576, 720, 224, 224, (16, 15)), ("shorter", 480, 720, 224, 224, (8, 9)),
             ("letterbox", 576, 720, 320, 320, (64, 45)), ("letterbox", 7, 3, 5, 9, (3, 11)),
             ("stretch", 576, 720, 224, 224, (64, 45)), ("shorter", 64, 96, 32, 32, (1, 2))]
    for mode, h, w, oh, ow, sar in cases:
        code = {"stretch": 0, "shorter": 1, "letterbox": 2}[mode]
        assert _C.resize_geometry(code, h, w, oh, ow, 256, 256, *sar) == geometry(mode, h, w, oh, ow, (256, 256), sar)


ANAMORPHIC = [((8, 9), dict(size=(24, 24), resize="shorter")),
              ((16, 11), dict(size=(30, 20), resize="letterbox", pad_value=-1.0)),
              ((1, 3), dict(size=(20, 20), resize="shorter", resize_to=(22, 22), filter="bilinear"))]


@pytest.mark.parametrize("fmt", ["i420", "nv12_10", "rgb24"])
@pytest.mark.parametrize("sar,geom", ANAMORPHIC)
@pytest.mark.parametrize("clamp", ["source", "output"])
def test_anamorphic_frames_match_reference(fmt, sar, geom, clamp):
    import dataclasses

    rng = np.random.default_rng()
    frame = make_frame(fmt, 37, 53, rng, sar=sar)
    spec = PreprocessSpec(clamp=clamp, **geom, **NORM)
    ref = preprocess_ref(frame, spec)
    _check(_run([frame], spec)[0], ref, spec)
    as_square = preprocess_ref(dataclasses.replace(frame, sar=(1, 1)), spec)
    assert np.abs(ref - as_square).max() > 0.05  # the case tells the aspect apart


def test_bad_sar_is_an_input_error():
    import dataclasses

    frame = make_frame("i420", 8, 8, np.random.default_rng(0))
    spec = PreprocessSpec(size=(4, 4), **NORM)
    for sar in [(0, 1), (1, 70000), (1.5, 1), "1:1", (1, 2, 3)]:
        with pytest.raises(InputError, match="sar"):
            preprocess([dataclasses.replace(frame, sar=sar)], spec)


# ---- agreement with the resizers a user would otherwise call ---------------------------------
RESIZE_CASES = [((37, 53), (19, 29)), ((64, 64), (224, 224)), ((120, 97), (31, 200)), ((5, 3), (1, 1)), ((300, 200), (71, 70))]


@pytest.mark.parametrize("src,dst", RESIZE_CASES)
def test_antialias_vs_torch(src, dst):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    # float64 input: torch's own float32 path is up to ~1.2e-3 off the exact value at 64 -> 224
    # (float32 weights); in float64 it is exact and our float32 kernel stays ~1e-4 from it.
    x = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(x, size=dst, mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    spec = PreprocessSpec(size=dst, resize="stretch")
    got = _run([rgb_frame(img)], spec)[0]
    # different summation order (torch: width first) and float32 accumulation: 1e-3 on 0..255.
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("src,dst", RESIZE_CASES)
def test_antialias_vs_pil(src, dst):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(img).resize(dst[::-1], Image.BILINEAR), np.float64).transpose(2, 0, 1)
    spec = PreprocessSpec(size=dst, resize="stretch", scale=1 / 255)
    got = _run([rgb_frame(img)], spec)[0]
    # PIL rounds to uint8 after each pass (and at the end): up to one level apart.
    np.testing.assert_allclose(got, ref / 255, atol=1 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize("src,dst", RESIZE_CASES)
def test_bilinear_vs_cv2(src, dst):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float64).transpose(2, 0, 1)
    spec = PreprocessSpec(size=dst, resize="stretch", filter="bilinear", scale=1 / 255)
    got = _run([rgb_frame(img, "bgr24")], spec.__class__(**{**spec.__dict__, "channels": "bgr"}))[0]
    # OpenCV: 11-bit fixed-point weights and a uint8 result: within one level.
    np.testing.assert_allclose(got, ref / 255, atol=1 / 255 + 1e-6, rtol=0)


def test_bilinear_vs_torch_upscale():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    x = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(x, size=(40, 23), mode="bilinear", align_corners=False)[0].numpy()
    got = _run([rgb_frame(img)], PreprocessSpec(size=(40, 23), resize="stretch", filter="bilinear"))[0]
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


# ---- behaviour ----------------------------------------------------------------------------------
def test_fp16_conversion_bit_exact():
    # values spanning subnormal, normal and overflow ranges: RNE like numpy's astype(float16)
    rng = np.random.default_rng(8)
    frame = make_frame("rgb24", 16, 16, rng)
    for scale in (1e-9, 3e-7, 1e-3, 1.0, 300.0, 1e4):
        s32 = PreprocessSpec(size=(16, 16), resize="stretch", scale=scale, mean=(0.0, 1e-7, -3.0))
        s16 = PreprocessSpec(**{**s32.__dict__, "dtype": "float16"})
        a = preprocess([frame], s32)
        with np.errstate(over="ignore"):
            expect = a.astype(np.float16)
        b = preprocess([frame], s16)
        np.testing.assert_array_equal(b.view(np.uint16), expect.view(np.uint16))


def test_threads_and_batch_consistent():
    rng = np.random.default_rng(9)
    frames = [make_frame(f, 50 + i, 70 - i, rng) for i, f in enumerate(FORMATS)]
    spec = PreprocessSpec(size=(32, 32), **NORM)
    a = _run(frames, spec, threads=1)
    b = _run(frames, spec, threads=2)
    np.testing.assert_array_equal(a, b)  # same per-pixel arithmetic whatever the split
    single = np.concatenate([_run([f], spec) for f in frames])
    np.testing.assert_array_equal(a, single)


def test_noncontiguous_planes_are_copied():
    rng = np.random.default_rng(10)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rot = np.rot90(img)  # (40, 30, 3) view with negative/odd strides
    spec = PreprocessSpec(size=(20, 15), resize="stretch")
    got = _run([rgb_frame(rot)], spec)
    want = _run([rgb_frame(np.ascontiguousarray(rot))], spec)
    np.testing.assert_array_equal(got, want)
    f = make_frame("i444", 20, 24, rng)
    rot_planes = tuple(np.rot90(p) for p in f.planes)
    g = f.__class__(format="i444", planes=rot_planes, width=20, height=24, matrix="bt601", full_range=False, pts=0.0)
    h = f.__class__(format="i444", planes=tuple(np.ascontiguousarray(p) for p in rot_planes), width=20, height=24,
                    matrix="bt601", full_range=False, pts=0.0)
    np.testing.assert_array_equal(_run([g], spec), _run([h], spec))


def test_empty_batch_and_alloc():
    spec = PreprocessSpec(size=(8, 8), layout="nhwc", dtype="float16")
    out = preprocess([], spec)
    assert out.shape == (0, 8, 8, 3) and out.dtype == np.float16


BAD_SPECS = [
    dict(size=(0, 4)),
    dict(size=(4, 4), resize="zoom"),
    dict(size=(4, 4), crop="top"),
    dict(size=(4, 4), filter="bicubic"),
    dict(size=(4, 4), std=(1.0, 0.0, 1.0)),
    dict(size=(4, 4), layout="chw"),
    dict(size=(4, 4), dtype="float64"),
    dict(size=(4, 4), channels="rgba"),
]


@pytest.mark.parametrize("kw", BAD_SPECS)
def test_bad_spec(kw):
    frame = make_frame("i420", 8, 8, np.random.default_rng(0))
    with pytest.raises(InputError):
        preprocess([frame], PreprocessSpec(**kw))


def test_bad_frames_and_out():
    rng = np.random.default_rng(11)
    spec = PreprocessSpec(size=(4, 4))
    f = make_frame("i420", 8, 8, rng)
    bad = [
        f.__class__(**{**f.__dict__, "format": "yuv410"}),
        f.__class__(**{**f.__dict__, "planes": f.planes[:2]}),
        f.__class__(**{**f.__dict__, "planes": (f.planes[0].astype(np.uint16),) + f.planes[1:]}),
        f.__class__(**{**f.__dict__, "width": 9}),  # chroma plane too small for width 9
        f.__class__(**{**f.__dict__, "matrix": "bt2020"}),
        f.__class__(**{**f.__dict__, "format": "rgb24_10"}),
        "not a frame",
    ]
    for b in bad:
        with pytest.raises(InputError):
            preprocess([b], spec)
    for out in [np.zeros((1, 3, 4, 5), np.float32), np.zeros((1, 3, 4, 4), np.float64),
                np.zeros((1, 4, 4, 3), np.float32), np.zeros((1, 3, 4, 8), np.float32)[..., ::2]]:
        with pytest.raises(InputError):
            preprocess([f], spec, out=out)
    with pytest.raises(InputError):
        preprocess([f], spec, threads=0)


def test_build_info():
    info = build_info()
    assert set(info) >= {"compiler", "openmp", "simd_compiled", "simd_runtime", "cuda_compiled", "version"}
    # True exactly when the CUDA extension engine._C_cuda was built (tests/gpu/test_cuda_build.py)
    import importlib.util

    assert info["cuda_compiled"] is (importlib.util.find_spec("engine._C_cuda") is not None)
    assert "baseline" in info["simd_compiled"]


def test_portable_path_matches_avx2(tmp_path):
    # ENGINE_DISABLE_AVX2=1 selects the portable loops; they must agree with the SIMD ones (AVX2 or
    # AVX-512, whichever this CPU runs).
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import numpy as np, sys; sys.path.insert(0, sys.argv[2]);"
        "from frames import make_frame; from engine.ops import PreprocessSpec, preprocess, build_info;"
        "rng = np.random.default_rng(0);"
        "fr = [make_frame(f, 300, 451, rng) for f in ('i420', 'i422_10', 'nv12', 'rgb24')];"
        "out = preprocess(fr, PreprocessSpec(size=(64, 64), filter='antialias'));"
        "assert not build_info()['avx2_kernels'];"
        "np.save(sys.argv[1], out)"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**__import__("os").environ, "ENGINE_DISABLE_AVX2": "1", "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.npy"), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    portable = np.load(tmp_path / "o.npy")
    rng = np.random.default_rng(0)
    fr = [make_frame(f, 300, 451, rng) for f in ("i420", "i422_10", "nv12", "rgb24")]
    fast = preprocess(fr, PreprocessSpec(size=(64, 64), filter="antialias"))
    # (FMA vs separate multiply-add, other summation order: float32 rounding only; spec.scale is 1)
    np.testing.assert_allclose(fast, portable, atol=1e-3, rtol=0)


EXTREMES = [
    ("i420", (1500, 2100), dict(size=(6, 5), resize="stretch")),  # ~300 taps per output
    ("i422_10", (700, 900), dict(size=(3, 40), resize="letterbox", pad_value=7.0)),
    ("nv12", (3, 3), dict(size=(300, 301), resize="shorter", filter="bilinear")),  # 100x upscale
    ("rgb24", (2000, 30), dict(size=(4, 4), resize="shorter")),  # shorter side crop of a sliver
]


@pytest.mark.parametrize("fmt,hw,kw", EXTREMES, ids=[e[0] for e in EXTREMES])
def test_extreme_scales_vs_reference(fmt, hw, kw):
    rng = np.random.default_rng(12)
    frame = make_frame(fmt, *hw, rng)
    spec = PreprocessSpec(**kw)
    ref = preprocess_ref(frame, spec)
    _check(_run([frame], spec)[0], ref, spec)
