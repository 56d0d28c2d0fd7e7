"""Triton fused preprocessing vs the CPU kernel (engine.ops.preprocess) and the float64 reference.

Small shapes (the interpreter costs ~5 ms per program): 24x40 frames -> 16x16, odd and tiny
sizes, padded row strides, every format, both matrices and ranges, both clamp modes, up- and
downscaling, the three geometries, both filters, layouts, dtypes, channel orders. Every output is
poisoned with NaN first. Tolerances, on the 0..255 scale (level_error divides by the
normalisation gain):
* float32: TOL_LEVELS (cuda_ref: issue 3's 1e-5 relative to the 0..255 range, 0.00255 levels) -
  float32 sums of <= ~50 weighted samples of magnitude <= ~300 (the colour map's biases) differ
  from float64 and from the CPU kernel's summation order by ~1e-4 levels; a wrong tap, weight,
  coefficient or clamp moves results by >> 0.01.
* float16: plus half rounding, 2^-11 of the value against float64; 2^-10 (one ulp) against the
  CPU kernel's float16 output, whose float32 value may round the other way.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cuda_ref import TOL_LEVELS, level_error, saturated_frame
from frames import make_frame
from reference import preprocess_ref
from triton_cases import batched_planes, gpu_only, import_kernels, to_torch

from engine.errors import InputError
from engine.ops import PreprocessSpec
from engine.ops import preprocess as cpu_preprocess

pytest.importorskip("triton")
torch = pytest.importorskip("torch")
kernels = import_kernels()

NORM = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
FP16_RTOL = 2.0**-11
FORMATS = ["i420", "nv12", "i422", "i444", "rgb24", "bgr24", "i420_10", "nv12_10", "i444_10"]
COLOUR = [("bt601", False), ("bt601", True), ("bt709", False), ("bt709", True)]
CLAMPS = ["source", "output"]
# (H, W) of the source -> spec: downscale + crop, upscale of tiny frames, letterbox, stretch crop,
# several programs per frame
GEOMETRIES = [
    ((24, 40), dict(size=(16, 16), resize="shorter")),
    ((1, 1), dict(size=(3, 5), resize="stretch")),
    ((3, 5), dict(size=(7, 9), resize="stretch", filter="bilinear")),
    ((37, 53), dict(size=(16, 17), resize="letterbox", pad_value=-2.5)),
    ((24, 40), dict(size=(16, 16), resize="stretch", resize_to=(19, 21), filter="bilinear")),
    ((13, 7), dict(size=(20, 12), resize="shorter", resize_to=(20, 20))),
    ((37, 53), dict(size=(33, 40), resize="stretch")),  # 1320 pixels: 3 programs, the last partial
]


def _run(planes, spec, frame, *, batch: int = 1):
    shape = spec.output_shape(batch)
    dtype = torch.float16 if spec.dtype == "float16" else torch.float32
    out = torch.full(shape, float("nan"), dtype=dtype, device=planes[0][0].device if isinstance(planes, list) else planes[0].device)
    res = kernels.preprocess(planes, spec, format=frame.format, width=frame.width, height=frame.height,
                             matrix=frame.matrix, full_range=frame.full_range, sar=frame.sar, out=out)
    assert res is out
    got = res.float().cpu().numpy().astype(np.float64)
    assert not np.isnan(got).any(), "output not fully written"
    return got


def _check(got, ref, spec, what, *, ref_is_half: bool = False):
    tol = TOL_LEVELS
    if spec.dtype == "float16":  # half rounding of the output (of both sides when ref is half), in levels
        gain = min(abs(spec.scale / s) for s in spec.std)
        tol += (2 if ref_is_half else 1) * FP16_RTOL * float(np.abs(ref).max()) / gain
    err = level_error(got[None] if got.ndim == 3 else got, ref[None] if ref.ndim == 3 else ref, spec)
    assert err <= tol, f"{what}: {err:.3g} levels off (tolerance {tol:.3g})"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("colour", COLOUR, ids=lambda c: f"{c[0]}-{'full' if c[1] else 'limited'}")
@pytest.mark.parametrize("clamp", CLAMPS)
def test_formats(fmt, colour, clamp, device):
    rng = np.random.default_rng()  # fresh inputs every run
    frame = make_frame(fmt, 24, 40, rng, matrix=colour[0], full_range=colour[1])
    spec = PreprocessSpec(size=(16, 16), resize="shorter", clamp=clamp, **NORM)
    ref = preprocess_ref(frame, spec)
    cpu = cpu_preprocess([frame], spec)[0].astype(np.float64)
    got = _run([to_torch(frame, device)], spec, frame)[0]
    _check(got, ref, spec, "vs float64 reference")
    _check(got, cpu, spec, "vs CPU kernel")


@pytest.mark.parametrize("hw,geom", GEOMETRIES, ids=lambda g: str(g) if isinstance(g, tuple) else g["resize"])
@pytest.mark.parametrize("layout,dtype", [("nchw", "float32"), ("nhwc", "float16")])
@pytest.mark.parametrize("clamp", CLAMPS)
def test_geometry(hw, geom, layout, dtype, clamp, device):
    rng = np.random.default_rng()
    frame = make_frame("i420", *hw, rng, matrix="bt709")
    spec = PreprocessSpec(layout=layout, dtype=dtype, channels="bgr", clamp=clamp, **geom, **NORM)
    ref = preprocess_ref(frame, spec)
    got = _run([to_torch(frame, device, pitch_pad=13)], spec, frame)[0]
    _check(got, ref, spec, "vs float64 reference")
    _check(got, cpu_preprocess([frame], spec)[0].astype(np.float64), spec, "vs CPU kernel", ref_is_half=True)


@pytest.mark.parametrize("sar,geom", [((8, 3), dict(size=(16, 16), resize="shorter")),
                                      ((2, 5), dict(size=(12, 18), resize="letterbox", pad_value=1.0))])
def test_anamorphic(sar, geom, device):
    """Note [sample aspect ratio]: the displayed shape decides the resize of anamorphic frames."""
    frame = make_frame("i420", 24, 40, np.random.default_rng(), matrix="bt709", sar=sar)
    spec = PreprocessSpec(**geom, **NORM)
    ref = preprocess_ref(frame, spec)
    got = _run([to_torch(frame, device)], spec, frame)[0]
    _check(got, ref, spec, "vs float64 reference")
    _check(got, cpu_preprocess([frame], spec)[0].astype(np.float64), spec, "vs CPU kernel")
    as_square = preprocess_ref(dataclasses.replace(frame, sar=(1, 1)), spec)
    assert level_error(ref[None], as_square[None], spec) > 1.0  # the case tells sar apart


@pytest.mark.parametrize("batched", [False, True], ids=["frame-tuples", "batched-planes"])
def test_batch(batched, device):
    rng = np.random.default_rng()
    frames = [make_frame("nv12", 24, 40, rng, pad=3 + 4 * i) for i in range(3)]
    spec = PreprocessSpec(size=(16, 16), **NORM)
    if batched:  # (B, rows, samples) planes with padded pitches: one view per plane
        planes = tuple(batched_planes([to_torch(f, device, pitch_pad=0)[j] for f in frames], pitch_pad=6) for j in range(2))
    else:  # separate allocations with different row strides
        planes = [to_torch(f, device, pitch_pad=1 + 2 * i) for i, f in enumerate(frames)]
    got = _run(planes, spec, frames[0], batch=3)
    for g, f in zip(got, frames):
        _check(g, preprocess_ref(f, spec), spec, "vs float64 reference")


def test_clamp_modes_differ_on_saturated_frames(device):
    # the test frames above would pass a kernel that ignored `clamp` only if both references
    # agreed; on saturated chroma they are far apart, and each mode matches its own reference
    frame = saturated_frame()
    results = {}
    for clamp in CLAMPS:
        spec = PreprocessSpec(size=(16, 16), resize="stretch", clamp=clamp, **NORM)
        results[clamp] = _run([to_torch(frame, device)], spec, frame)[0]
        _check(results[clamp], preprocess_ref(frame, spec), spec, f"clamp={clamp}")
    spec = PreprocessSpec(size=(16, 16), resize="stretch", **NORM)
    assert level_error(results["source"][None], results["output"][None], spec) > 5.0


def test_validation(device, monkeypatch):
    frame = make_frame("i420", 24, 40, np.random.default_rng(0))
    planes = to_torch(frame, device)
    spec = PreprocessSpec(size=(16, 16), **NORM)
    kw = dict(format="i420", width=40, height=24)
    with pytest.raises(InputError, match="needs a tuple of 3 planes"):
        kernels.preprocess([planes[:2]], spec, **kw)
    with pytest.raises(InputError, match="dtype"):
        kernels.preprocess([tuple(p.to(torch.int16) for p in planes)], spec, **kw)
    with pytest.raises(InputError, match="smaller than"):
        kernels.preprocess([planes], spec, format="i420", width=41, height=24)
    with pytest.raises(InputError, match="unsupported format"):
        kernels.preprocess([planes], spec, format="rgb24_10", width=40, height=24)
    with pytest.raises(InputError, match="out must be"):
        kernels.preprocess([planes], spec, **kw, out=torch.empty(1, 3, 16, 15, device=device))
    with pytest.raises(InputError, match="clamp"):
        kernels.preprocess([planes], dataclasses.replace(spec, clamp="never"), **kw)
    if device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(InputError, match="TRITON_INTERPRET"):
            kernels.preprocess([planes], spec, **kw)


def test_ten_bit_planes_as_int16(device):
    # torch's uint16 support is partial: int16 tensors holding the same bits (values < 1024) work
    frame = make_frame("i420_10", 24, 40, np.random.default_rng())
    spec = PreprocessSpec(size=(16, 16), **NORM)
    as_u16 = _run([to_torch(frame, device)], spec, frame)
    as_i16 = _run([tuple(p.view(torch.int16) for p in to_torch(frame, device))], spec, frame)
    np.testing.assert_array_equal(as_u16, as_i16)
    _check(as_i16[0], preprocess_ref(frame, spec), spec, "vs float64 reference")


# ------------------------------------------------------------------------------------------------
# real GPU: production geometry, compiled kernels
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("clamp", CLAMPS)
@pytest.mark.parametrize("fmt", ["i420", "nv12", "i420_10"])
@pytest.mark.parametrize("hw", [(1080, 1920), (721, 1281)])
@gpu_only
def test_gpu_video_sizes(hw, fmt, clamp):
    rng = np.random.default_rng()
    frames = [make_frame(fmt, *hw, rng, pad=64) for _ in range(2)]
    spec = PreprocessSpec(size=(224, 224), resize_to=(256, 256), clamp=clamp, **NORM)
    got = _run([to_torch(f, "cuda") for f in frames], spec, frames[0], batch=2)
    cpu = cpu_preprocess(frames, spec).astype(np.float64)
    for g, c, f in zip(got, cpu, frames):
        _check(g, c, spec, "vs CPU kernel")
        _check(g, preprocess_ref(f, spec), spec, "vs float64 reference")

