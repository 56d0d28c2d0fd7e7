"""Where RGB is clamped: before resampling (clamp="source", the default, an RGB pipeline's
semantics) or after (clamp="output"). See csrc Note [clamp before resampling]."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from frames import make_frame
from reference import preprocess_ref, rgb_to_yuv_planes
from test_preprocess import _check, _run

from engine.media.frame import Frame
from engine.ops.preprocess import PreprocessSpec

YUV_FORMATS = ["i420", "nv12", "i422", "i444", "i420_10", "i422_10", "i444_10"]
SIZES = [(2, 2), (7, 5), (33, 47), (120, 161)]
SPEC = PreprocessSpec(size=(21, 19), resize="shorter", resize_to=(23, 23))


@pytest.mark.parametrize("clamp", ["source", "output"])
@pytest.mark.parametrize("fmt", YUV_FORMATS)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("full_range", [False, True])
def test_both_clamp_modes_vs_reference(clamp, fmt, hw, full_range):
    # uniformly random Y'CbCr: a large share of the pixels lies outside the RGB gamut
    rng = np.random.default_rng(abs(hash((clamp, fmt, hw, full_range))) % 2**32)
    frame = make_frame(fmt, *hw, rng, matrix="bt709", full_range=full_range)
    spec = dataclasses.replace(SPEC, clamp=clamp)
    _check(_run([frame], spec)[0], preprocess_ref(frame, spec), spec)


def _saturated_edge(fmt: str = "i420") -> Frame:
    """Limited-range 4:2:0 planes of a saturated red/blue edge with extreme luma: out of gamut."""
    h, w = 64, 96
    y = np.full((h, w), 40, np.uint8)
    y[:, w // 2:] = 230
    u = np.full((h // 2, w // 2), 240, np.uint8)
    v = np.full((h // 2, w // 2), 16, np.uint8)
    u[:, w // 4:], v[:, w // 4:] = 16, 240
    return Frame(format=fmt, planes=(y, u, v), width=w, height=h, matrix="bt601",
                 full_range=False, pts=0.0)


def test_modes_differ_on_out_of_gamut_content():
    frame = _saturated_edge()
    spec = PreprocessSpec(size=(16, 24), resize="stretch", resize_to=(16, 24))
    src = _run([frame], spec)[0]
    out = _run([frame], dataclasses.replace(spec, clamp="output"))[0]
    assert np.abs(src - out).max() > 10  # the flag reaches the kernel and matters here
    _check(src, preprocess_ref(frame, spec), spec)


def test_modes_agree_on_in_gamut_frames():
    rng = np.random.default_rng(7)
    # well inside the gamut, constant over each 2x2 chroma block so 4:2:0 averaging keeps it there
    rgb = np.kron(rng.uniform(40, 215, (24, 32, 3)), np.ones((2, 2, 1)))
    planes = rgb_to_yuv_planes(rgb, "i420", "bt709", False)
    frame = Frame(format="i420", planes=tuple(planes), width=64, height=48, matrix="bt709",
                  full_range=False, pts=0.0)
    src = _run([frame], SPEC)[0]
    np.testing.assert_allclose(src, _run([frame], dataclasses.replace(SPEC, clamp="output"))[0],
                               atol=1e-4)


def test_rgb_input_is_unaffected():
    rng = np.random.default_rng(3)
    frame = make_frame("rgb24", 37, 53, rng)
    a = _run([frame], SPEC)[0]
    b = _run([frame], dataclasses.replace(SPEC, clamp="output"))[0]
    np.testing.assert_array_equal(a, b)


def test_invalid_clamp_mode():
    from engine.errors import InputError
    from engine.ops.preprocess import preprocess

    with pytest.raises(InputError, match="clamp"):
        preprocess([_saturated_edge()], dataclasses.replace(SPEC, clamp="sometimes"))


@pytest.mark.parametrize("fmt", ["i420", "nv12", "i444", "i420_10"])
@pytest.mark.parametrize("hw, size, resize", [
    ((11, 150), (57, 45), "stretch"),      # vertical upscale x5: rows reused by many output rows
    ((150, 131), (40, 44), "shorter"),     # downscale, 8-pixel vectors plus a scalar tail
    ((96, 200), (50, 50), "letterbox"),
])
def test_clamp_source_batches_blocks_and_threads(fmt, hw, size, resize):
    # several frames and two threads split every frame into row blocks, each converting its own
    # window of source rows (Note [clamp before resampling]); uniformly random Y'CbCr is mostly out
    # of gamut
    rng = np.random.default_rng(abs(hash((fmt, hw, size))) % 2**32)
    frames = [make_frame(fmt, *hw, rng, matrix="bt601", full_range=False) for _ in range(3)]
    spec = PreprocessSpec(size=size, resize=resize, pad_value=-1.0)
    got = _run(frames, spec, threads=2)
    for k, frame in enumerate(frames):
        _check(got[k], preprocess_ref(frame, spec), spec)


# (format, (height, width), spec): odd crops (first source column odd), up- and downscales, a
# window of hundreds of rows, padding, fp16 and NHWC outputs
BANDED_CASES = [
    ("i420", (151, 233), dict(size=(37, 29), resize="shorter", resize_to=(41, 41))),
    ("nv12", (96, 200), dict(size=(50, 50), resize="letterbox", pad_value=-1.0)),
    ("i422_10", (65, 131), dict(size=(23, 19), resize="shorter", dtype="float16")),
    ("i444", (11, 150), dict(size=(57, 45), resize="stretch", layout="nhwc")),
    ("i420_10", (1500, 903), dict(size=(5, 6), resize="stretch")),
    ("i420", (1080, 1920), dict(size=(224, 224), resize="shorter", resize_to=(256, 256))),
]


def test_banded_path_matches_ring_path(tmp_path):
    # With AVX-512 the converted rows stay in registers (csrc Note [converted in registers]); the
    # vertical sums are the ring path's in its order, the horizontal ones in another order: the
    # two must agree to float32 rounding (2.7e-7 relative seen), far inside the reference bar.
    import os
    import subprocess
    import sys
    from pathlib import Path

    from engine.ops import build_info

    if not build_info().get("avx512_kernels"):
        pytest.skip("this CPU has no AVX-512: only the ring path runs")
    code = (
        "import numpy as np, sys, pickle; sys.path.insert(0, sys.argv[2]);"
        "from test_clamp import BANDED_CASES, _banded_inputs; from engine.ops import preprocess, build_info;"
        "assert not build_info()['avx512_kernels'] and build_info()['avx2_kernels'];"
        "outs = [preprocess(fr, spec, threads=2) for fr, spec in _banded_inputs()];"
        "pickle.dump(outs, open(sys.argv[1], 'wb'))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ENGINE_DISABLE_AVX512": "1", "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.pkl"), str(Path(__file__).parent)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import pickle

    ring = pickle.load(open(tmp_path / "o.pkl", "rb"))
    for (frames, spec), want in zip(_banded_inputs(), ring, strict=True):
        got = _run(frames, spec, threads=2).astype(spec.dtype)
        rtol = 1e-3 if spec.dtype == "float16" else 2e-6  # float16: one rounding step apart at most
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                   err_msg=f"{frames[0].format} {spec}")
        for k, frame in enumerate(frames[:1]):
            _check(got[k].astype(np.float64), preprocess_ref(frame, spec), spec)


def _banded_inputs():
    out = []
    for i, (fmt, hw, kw) in enumerate(BANDED_CASES):
        rng = np.random.default_rng(100 + i)
        frames = [make_frame(fmt, *hw, rng, matrix="bt709", full_range=bool(i % 2)) for _ in range(2)]
        out.append((frames, PreprocessSpec(**kw)))
    return out
