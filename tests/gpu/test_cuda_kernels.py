"""CUDA kernels on a GPU against float64 references (torch CUDA tensors as inputs).

Preprocess: the float64 references of reference.py in the spec's clamp mode (own code, so these
tests do not depend on the CPU kernel's semantics); every output poisoned with NaN first; planes
with padded row strides whose padding holds garbage. float32: within TOL_LEVELS (issue 3's
1e-5 relative to the 0..255 range) of the float64 reference and of the CPU kernel, which covers
float accumulation over up to ~870 taps plus device FMA contraction. float16 output: half
rounding (2^-11 relative).
Pooling: float64 accumulation on the device, so 1e-5 relative.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cuda_ref import (CASES, NORM, TOL_LEVELS, assert_matches_references, level_error,
                      preprocess_ref_clamp_before, saturated_frame)
from frames import make_frame
from reference import masked_mean_ref, preprocess_ref, segment_pool_ref

from engine.ops.preprocess import PreprocessSpec

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
cuda_ops = pytest.importorskip("engine.ops.cuda")


class U16:
    """__cuda_array_interface__ of a torch tensor holding uint16 bits (torch's uint16 support is
    partial); keeps the tensor alive."""

    def __init__(self, t):
        self.t = t
        self.device = t.device
        self.__cuda_array_interface__ = {
            "shape": tuple(t.shape), "typestr": "<u2", "data": (t.data_ptr(), False),
            "strides": tuple(s * 2 for s in t.stride()), "version": 3,
        }


def to_device(p: np.ndarray, rng, pitch_pad: int = 24):
    """Plane -> CUDA tensor view with a padded row pitch whose padding is garbage."""
    a = np.asarray(p)
    rows, cols = a.shape[0], int(np.prod(a.shape[1:]))
    buf = rng.integers(0, 256 if a.dtype == np.uint8 else 1024, (rows, cols + pitch_pad)).astype(a.dtype)
    buf[:, :cols] = a.reshape(rows, cols)
    if a.dtype == np.uint16:
        t = torch.from_numpy(buf.view(np.int16)).cuda()[:, :cols]
        return U16(t)
    return torch.from_numpy(buf).cuda()[:, :cols]


def run_gpu(frames, spec, *, direct=False, batched=False, pitch_pad=24):
    rng = np.random.default_rng(0)
    f0 = frames[0]
    dtype = torch.float16 if spec.dtype == "float16" else torch.float32
    out = torch.full(spec.output_shape(len(frames)), float("nan"), dtype=dtype, device="cuda")
    if batched:  # one tensor per plane with a leading batch dim (uint8 only)
        planes = tuple(
            torch.stack([torch.from_numpy(np.ascontiguousarray(f.planes[j])) for f in frames]).cuda()
            for j in range(len(f0.planes))
        )
    else:
        planes = [tuple(to_device(p, rng, pitch_pad) for p in f.planes) for f in frames]
    cuda_ops.preprocess(planes, spec, format=f0.format, width=f0.width, height=f0.height, matrix=f0.matrix,
                        full_range=f0.full_range, sar=f0.sar, out=out, force_direct=direct)
    torch.cuda.synchronize()
    return out.float().cpu().numpy()


@pytest.mark.parametrize("clamp", ["source", "output"])
@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}-{c[5].get('resize')}" for c in CASES])
def test_preprocess_matches_reference(case, direct, clamp):
    fmt, h, w, matrix, full_range, kw = case
    rng = np.random.default_rng(h * 1000 + w)
    spec = PreprocessSpec(**kw, **NORM, clamp=clamp)
    frames = [make_frame(fmt, h, w, rng, matrix=matrix, full_range=full_range) for _ in range(3)]
    err = assert_matches_references(run_gpu(frames, spec, direct=direct), frames, spec)
    print(f"{case[0]} {h}x{w} {kw} direct={direct} clamp={clamp}: max error {err:.3g} levels")


@pytest.mark.parametrize(
    "fmt,h,w,kw",
    [
        ("i420", 1080, 1920, dict(size=(224, 224), resize="shorter", resize_to=(256, 256))),
        ("nv12", 720, 1280, dict(size=(320, 320), resize="letterbox", pad_value=0.0)),
        ("i420", 1080, 1920, dict(size=(224, 224), resize="stretch")),
    ],
)
@pytest.mark.parametrize("pitch_pad,block,clamp", [(24, None, "source"), (24, "vfirst-prefetch", "source"),
                                                   (24, "vfirst-late", "source"), (25, None, "source"),
                                                   (24, None, "output"), (25, None, "output")],
                         ids=["aligned", "aligned-prefetch", "aligned-late", "odd-pitch", "aligned-clamp-output",
                              "odd-pitch-clamp-output"])
def test_preprocess_video_sizes(fmt, h, w, kw, pitch_pad, block, clamp, monkeypatch):
    """Rows of 1944 / 984 / 1304 bytes: aligned words, so the vertical-first block (or its
    temporary A/B variants, ENGINE_CUDA_PREPROCESS=vfirst-prefetch / vfirst-late; with
    clamp="output" its resampled-planes variant); rows one byte longer: the 8-bit fast path with
    byte loads, with clamp="output" the general block (the 8.6x stretch has too many x taps for
    either fast block: the general block)."""
    if block is not None:
        monkeypatch.setenv("ENGINE_CUDA_PREPROCESS", block)
    rng = np.random.default_rng(7)
    spec = PreprocessSpec(**kw, **NORM, clamp=clamp)
    frames = [make_frame(fmt, h, w, rng, matrix="bt709") for _ in range(2)]
    err = assert_matches_references(run_gpu(frames, spec, pitch_pad=pitch_pad), frames, spec)
    print(f"{fmt} {h}x{w} {kw} pitch +{pitch_pad}: max error {err:.3g} levels")


@pytest.mark.parametrize("sar,kw", [((16, 15), dict(size=(224, 224), resize="shorter", resize_to=(256, 256))),
                                    ((32, 27), dict(size=(320, 320), resize="letterbox"))])
def test_preprocess_anamorphic_dvd_frames(sar, kw):
    """PAL / NTSC DVD pixels (Note [sample aspect ratio]): the displayed shape sizes the resize."""
    rng = np.random.default_rng(5)
    spec = PreprocessSpec(**kw, **NORM)
    frames = [make_frame("i420", 576, 720, rng, matrix="bt601", sar=sar) for _ in range(2)]
    ref = np.stack([preprocess_ref_clamp_before(f, spec) for f in frames])
    assert level_error(run_gpu(frames, spec), ref, spec) <= TOL_LEVELS


def test_preprocess_batched_planes_and_fp16():
    rng = np.random.default_rng(11)
    frames = [make_frame("i420", 90, 130, rng, pad=0) for _ in range(4)]
    spec = PreprocessSpec(size=(32, 48), resize="stretch", **NORM)
    ref = np.stack([preprocess_ref_clamp_before(f, spec) for f in frames])
    assert level_error(run_gpu(frames, spec, batched=True), ref, spec) <= TOL_LEVELS
    for layout in ("nchw", "nhwc"):  # out_w 48: the 16-byte stores (Note [fp16 stores])
        spec16 = PreprocessSpec(size=(32, 48), resize="stretch", dtype="float16", layout=layout, **NORM)
        out16 = run_gpu(frames, spec16)
        want = ref if layout == "nchw" else ref.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(out16, want, rtol=2**-10, atol=1e-3)


@pytest.mark.parametrize("pitch_pad", [24, 25], ids=["aligned", "odd-pitch"])
@pytest.mark.parametrize("clamp", ["source", "output"])
def test_preprocess_follows_its_clamp_mode_on_out_of_gamut_frames(clamp, pitch_pad):
    """Saturated chroma tells the clamp modes apart by levels: the vertical-first block (aligned)
    and the staging / general block (odd pitch) follow the spec's mode, > 1 level from the other's."""
    f = saturated_frame()
    spec = PreprocessSpec(size=(10, 10), resize="stretch", clamp=clamp)
    other = dataclasses.replace(spec, clamp="output" if clamp == "source" else "source")
    out = run_gpu([f], spec, pitch_pad=pitch_pad)
    assert level_error(out, preprocess_ref(f, spec)[None], spec) <= TOL_LEVELS
    assert level_error(out, preprocess_ref(f, other)[None], spec) > 1.0


def test_preprocess_on_a_side_stream():
    rng = np.random.default_rng(3)
    frames = [make_frame("nv12", 61, 83, rng)]
    spec = PreprocessSpec(size=(24, 24), **NORM)
    ref = np.stack([preprocess_ref_clamp_before(f, spec) for f in frames])
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y, uv = (to_device(p, rng) for p in frames[0].planes)
        out = cuda_ops.preprocess([(y, uv)], spec, format="nv12", width=83, height=61)
    s.synchronize()
    assert level_error(out.cpu().numpy(), ref, spec) <= TOL_LEVELS


# --- pooling --------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,T,D", [(3, 17, 37), (8, 128, 768), (1, 1000, 5)])
@pytest.mark.parametrize("normalize", [False, True])
def test_masked_mean(B, T, D, normalize):
    rng = np.random.default_rng(B * T + D)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    m = (rng.random((B, T)) < 0.6).astype(np.float32)
    m[-1, : T // 2] = 0.0
    if B > 2:
        m[1] = 0.0  # all-zero mask row -> zeros
    out = torch.full((B, D), float("nan"), device="cuda")
    cuda_ops.masked_mean(torch.from_numpy(x).cuda(), torch.from_numpy(m).cuda(), normalize, out=out)
    torch.cuda.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), masked_mean_ref(x, m, normalize), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,window", [("mean", 1), ("max", 1), ("window_max", 3), ("window_max", 100), ("window_max", 1)])
def test_segment_pool(mode, window):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 131)).astype(np.float32)
    offsets = np.array([0, 5, 5, 90, 91, 300, 400], np.int64)
    out = torch.full((6, 131), float("nan"), device="cuda")
    cuda_ops.segment_pool(torch.from_numpy(x).cuda(), torch.from_numpy(offsets).cuda(), mode, window, out=out)
    torch.cuda.synchronize()
    np.testing.assert_allclose(out.cpu().numpy(), segment_pool_ref(x, offsets, mode, window), rtol=1e-5, atol=1e-6)


def test_segment_pool_nan_propagates_in_max():
    x = torch.zeros((4, 3), device="cuda")
    x[2, 1] = float("nan")
    out = cuda_ops.segment_pool(x, torch.tensor([0, 4], device="cuda"), "max")
    torch.cuda.synchronize()
    assert np.isnan(out.cpu().numpy()[0, 1]) and out.cpu().numpy()[0, 0] == 0.0


def test_pointer_device_and_stream_wait_on_the_gpu():
    from engine import _C_cuda

    x = torch.zeros(1 << 20, device="cuda:0")
    assert _C_cuda.pointer_device(x.data_ptr()) == 0
    host = np.zeros(4)
    with pytest.raises(ValueError, match="not device memory"):
        _C_cuda.pointer_device(host.ctypes.data)
    # the consumer stream's work runs after the producer's, however long that takes
    producer, consumer = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(producer):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU cycles before the write
        x.fill_(1.0)
    _C_cuda.stream_wait(consumer.cuda_stream, producer.cuda_stream, 0)
    with torch.cuda.stream(consumer):
        y = x * 2
    consumer.synchronize()
    assert float(y.min()) == 2.0
