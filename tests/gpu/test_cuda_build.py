"""The CUDA extension engine._C_cuda: built whenever nvcc is present (CI compiles the kernels
without a GPU), importable without a driver, clear errors at call time, and the kernels' block
code (run on the host by the *_emulate entry points) against float64 references.

Tolerances: the emulation runs the kernel's float32 code; float32 outputs within TOL_LEVELS
(issue 3's 1e-5 relative to the 0..255 range) of the float64 reference and of the CPU kernel.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
from cuda_ref import (CASES, NORM, TOL_LEVELS, assert_matches_references, emulate, level_error,
                      preprocess_ref_clamp_before, saturated_frame)
from frames import make_frame
from reference import masked_mean_ref, preprocess_ref, segment_pool_ref

from engine.ops.preprocess import PreprocessSpec

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
WANTED = NVCC is not None and os.environ.get("ENGINE_CUDA", "") != "0"

try:
    from engine import _C_cuda
except ImportError:  # pragma: no cover - depends on the build
    _C_cuda = None

needs_ext = pytest.mark.skipif(_C_cuda is None, reason="engine._C_cuda not built")


@pytest.mark.skipif(not WANTED, reason="nvcc not installed (or ENGINE_CUDA=0)")
def test_cuda_extension_built_when_nvcc_present():
    assert _C_cuda is not None, "nvcc is installed but engine._C_cuda was not built: run `python setup.py build_ext --inplace`"
    info = _C_cuda.build_info()
    assert info["cuda_compiled"] is True
    assert info["cuda_runtime_version"] >= 11020  # stream-ordered allocation
    import engine.ops.cuda as cuda_ops

    assert cuda_ops.available()
    assert cuda_ops.build_info()["cuda_compiled"] is True


@needs_ext
def test_engine_ops_build_info_reports_cuda():
    import engine.ops as ops

    try:
        info = ops.build_info()
    except Exception as e:  # engine._C missing in this checkout
        pytest.skip(f"engine._C not importable: {e}")
    assert info["cuda_compiled"] is True
    assert "cuda_runtime_version" in info


@needs_ext
def test_no_device_gives_a_clear_error():
    info = _C_cuda.build_info()
    if info["cuda_device_count"] > 0:
        pytest.skip("a CUDA device is present")
    assert info["cuda_error"]
    with pytest.raises(RuntimeError, match="CUDA error"):
        _C_cuda.synchronize(0)

    class FakeDev:  # a CUDA array interface whose memory is never touched: the call fails first
        def __init__(self, shape, typestr):
            self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (1 << 20, False), "version": 3}

    import engine.ops.cuda as cuda_ops

    with pytest.raises(RuntimeError, match="CUDA error"):
        cuda_ops.preprocess(
            (FakeDev((2, 8, 8), "|u1"), FakeDev((2, 4, 4), "|u1"), FakeDev((2, 4, 4), "|u1")),
            PreprocessSpec(size=(4, 4)), format="i420", width=8, height=8,
            out=FakeDev((2, 3, 4, 4), "<f4"), stream=0,
        )


@needs_ext
def test_wrapper_validation_raises_input_error():
    from engine.errors import InputError
    import engine.ops.cuda as cuda_ops

    class FakeDev:
        def __init__(self, shape, typestr, strides=None):
            self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (1 << 20, False),
                                             "strides": strides, "version": 3}

    spec = PreprocessSpec(size=(4, 4))
    planes = (FakeDev((2, 8, 8), "|u1"), FakeDev((2, 4, 4), "|u1"), FakeDev((2, 4, 4), "|u1"))
    with pytest.raises(InputError, match="uint8"):
        cuda_ops.preprocess((planes[0], planes[1], FakeDev((2, 4, 4), "<u2")), spec, format="i420", width=8, height=8,
                            out=FakeDev((2, 3, 4, 4), "<f4"))
    with pytest.raises(InputError, match="smaller"):
        cuda_ops.preprocess(planes, spec, format="i420", width=10, height=8, out=FakeDev((2, 3, 4, 4), "<f4"))
    with pytest.raises(InputError, match="columns must be contiguous"):
        cuda_ops.preprocess((FakeDev((2, 8, 8), "|u1", (128, 16, 2)),) + planes[1:], spec, format="i420",
                            width=8, height=8, out=FakeDev((2, 3, 4, 4), "<f4"))
    with pytest.raises(InputError, match="out must be"):
        cuda_ops.preprocess(planes, spec, format="i420", width=8, height=8, out=FakeDev((2, 3, 4, 5), "<f4"))
    with pytest.raises(InputError, match="batch"):
        cuda_ops.preprocess((planes[0], FakeDev((3, 4, 4), "|u1"), planes[2]), spec, format="i420", width=8,
                            height=8, out=FakeDev((2, 3, 4, 4), "<f4"))
    with pytest.raises(InputError, match="CUDA array"):
        cuda_ops.masked_mean(np.zeros((1, 2, 3), np.float32), np.ones((1, 2), np.float32))
    with pytest.raises(InputError, match="float32"):
        cuda_ops.masked_mean(FakeDev((1, 2, 3), "<f8"), FakeDev((1, 2), "<f4"), out=FakeDev((1, 3), "<f4"))
    with pytest.raises(InputError, match="int64"):
        cuda_ops.segment_pool(FakeDev((4, 3), "<f4"), FakeDev((3,), "<i4"), out=FakeDev((2, 3), "<f4"))


# --- the kernel's block code, emulated on the host, against the clamp-before float64 reference --


@needs_ext
@pytest.mark.parametrize("clamp", ["source", "output"])
@pytest.mark.parametrize("direct", [False, True], ids=["staged", "direct"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}-{c[5].get('resize')}" for c in CASES])
def test_emulated_kernel_matches_reference(case, direct, clamp):
    """clamp="output": Note [CUDA preprocess: clamp="output"] (these frames' planes are not
    aligned words: the general block)."""
    fmt, h, w, matrix, full_range, kw = case
    rng = np.random.default_rng(h * 1000 + w)
    spec = PreprocessSpec(**kw, **NORM, clamp=clamp)
    frames = [make_frame(fmt, h, w, rng, matrix=matrix, full_range=full_range) for _ in range(2)]
    out, variant = emulate(frames, spec, force_direct=direct)
    assert variant == ("direct" if direct else "staged") or (not direct and variant == "direct")
    assert_matches_references(out, frames, spec)


@needs_ext
@pytest.mark.parametrize("sar,kw", [((8, 9), dict(size=(24, 24), resize="shorter")),
                                    ((16, 11), dict(size=(30, 20), resize="letterbox", pad_value=-1.0))])
def test_emulated_kernel_keeps_the_displayed_shape(sar, kw):
    """Note [sample aspect ratio]: anamorphic frames resize by their displayed shape."""
    rng = np.random.default_rng()
    spec = PreprocessSpec(**kw, **NORM)
    frames = [make_frame("i420", 37, 53, rng, sar=sar) for _ in range(2)]
    out, _ = emulate(frames, spec)
    ref = np.stack([preprocess_ref_clamp_before(f, spec) for f in frames])
    assert level_error(out, ref, spec) <= TOL_LEVELS


@needs_ext
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("width", [24, 40, 22], ids=["w24-store8", "w40-store8-edge-tile", "w22-scalar"])
def test_emulated_kernel_fp16(layout, width):
    """Widths that are multiples of 8 take the 16-byte stores (Note [fp16 stores]; 40 leaves an
    8-wide tile at the right edge), 22 the element stores; the output is poisoned with NaN, so an
    element either path leaves unwritten fails."""
    rng = np.random.default_rng(5 + width)
    spec = PreprocessSpec(size=(20, width), resize="letterbox", dtype="float16", layout=layout, **NORM)
    frames = [make_frame("i420", 50, 70, rng) for _ in range(2)]
    out, _ = emulate(frames, spec)
    ref = np.stack([preprocess_ref_clamp_before(f, spec) for f in frames])
    # half rounding: 2^-11 relative
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2**-10, atol=1e-3)


@needs_ext
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned4", "unaligned"])
@pytest.mark.parametrize("clamp", ["source", "output"])
def test_emulated_kernel_follows_its_clamp_mode_on_out_of_gamut_frames(clamp, aligned):
    """Saturated chroma tells the clamp modes apart by levels: the vertical-first block (aligned
    words) and the staging / general block (unaligned) each follow the reference of the spec's
    mode, > 1 level from the other mode's (Note [CUDA preprocess: clamp="output"])."""
    f = saturated_frame()
    if aligned:
        f = aligned4(f, np.random.default_rng(1))
    spec = PreprocessSpec(size=(10, 10), resize="stretch", clamp=clamp)
    other = dataclasses.replace(spec, clamp="output" if clamp == "source" else "source")
    out, variant = emulate([f], spec)
    assert variant == ({"source": "vfirst", "output": "vfirst-planes"}[clamp] if aligned else "staged")
    assert level_error(out, preprocess_ref(f, spec)[None], spec) <= TOL_LEVELS
    assert level_error(out, preprocess_ref(f, other)[None], spec) > 1.0


# --- clamp="output" (Note [CUDA preprocess: clamp="output"]) -----------------------------------


# The 8-bit fast path (Note [CUDA preprocess: 8-bit fast path]) reorganises the general block's
# sums, so the two agree to float rounding (~1e-6 relative of the 0..255 scale; 1e-5 leaves
# room). The general block runs the same input with force_direct, which the fast path never
# takes. Cases: the tap bins of the fast path's unrolled x loop (upscale, ~2x, ~4.2x = 1080p ->
# 256, ~6x), NV12 / I420 / I422, padding rows and columns, odd spans, both channel orders,
# layouts and dtypes, byte-wise (odd strides) and 32-bit (aligned4: 4-byte aligned planes and
# strides) staging; 4:4:4, 10-bit and >16 x taps always run the general block.
FAST_PATH_CASES = [  # (format, h, w, aligned4, PreprocessSpec kwargs)
    ("nv12", 270, 480, False, dict(size=(56, 56), resize="shorter", resize_to=(64, 64))),
    ("nv12", 270, 482, True, dict(size=(56, 56), resize="shorter", resize_to=(64, 64))),
    ("i420", 95, 171, False, dict(size=(40, 36), resize="stretch", channels="bgr")),
    ("i420", 95, 171, True, dict(size=(40, 36), resize="stretch", channels="bgr")),
    ("i422", 61, 99, False, dict(size=(20, 44), resize="letterbox", pad_value=0.5, layout="nhwc")),
    ("i422", 61, 99, True, dict(size=(20, 44), resize="letterbox", pad_value=0.5, layout="nhwc")),
    ("nv12", 41, 77, True, dict(size=(20, 36), resize="letterbox", pad_value=-1.5, dtype="float16")),
    ("i420", 13, 7, False, dict(size=(64, 48), resize="shorter", filter="bilinear")),
    ("i420", 13, 7, True, dict(size=(64, 48), resize="shorter", filter="bilinear")),
    ("nv12", 150, 233, True, dict(size=(21, 33), resize="stretch", dtype="float16", layout="nhwc")),
    ("i420", 90, 440, False, dict(size=(34, 74), resize="stretch")),
    ("i420", 90, 443, True, dict(size=(34, 74), resize="stretch")),
    # 480p -> shorter 256 -> crop 224: 7 tile columns of unequal spans (each tile its own pitch)
    ("nv12", 480, 854, True, dict(size=(224, 224), resize="shorter", resize_to=(256, 256))),
    # the benchmarks' case: 1080p -> shorter 256 -> crop 224 (9 x taps)
    ("i420", 1080, 1920, True, dict(size=(224, 224), resize="shorter", resize_to=(256, 256))),
]


def aligned4(frame, rng):
    """The frame with every plane copied to a 16-byte aligned buffer whose row stride is a
    multiple of 4 bytes (garbage in the padding), so the fast path stages with 32-bit loads."""
    planes = []
    for p in frame.planes:
        rows, cols = p.shape[0], p.shape[1] * (p.shape[2] if p.ndim == 3 else 1)
        buf = rng.integers(0, 256, (rows, (cols + 3) // 4 * 4 + 4), dtype=np.uint8)
        buf[:, :cols] = p.reshape(rows, cols)
        planes.append(buf[:, :cols].reshape(p.shape))
    return dataclasses.replace(frame, planes=tuple(planes))


# The vertical-first block (Note [CUDA preprocess: vertical pass first]) takes the aligned4 4:2:0
# cases whose rows fit its shared memory; I422 and the 233 -> 33 stretch (7x, 16 x taps:
# 276-float rows) stay on the fast path, as do the cases with unaligned planes.
VFIRST_STAYS_FAST = {("i422", 61, 99), ("nv12", 150, 233)}


@needs_ext
@pytest.mark.parametrize("clamp", ["source", "output"])
@pytest.mark.parametrize("case", FAST_PATH_CASES,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}{'-aligned4' if c[3] else ''}" for c in FAST_PATH_CASES])
def test_emulated_fast_path_matches_general_block(case, clamp):
    """clamp="output" has no staging variant: the vertical-first block where it applies (its
    resampled planes converted per output pixel), else the general block."""
    fmt, h, w, aligned, kw = case
    rng = np.random.default_rng(h + w)
    spec = PreprocessSpec(**kw, **NORM, clamp=clamp)
    frames = [make_frame(fmt, h, w, rng, matrix="bt709") for _ in range(2)]
    if aligned:
        frames = [aligned4(f, rng) for f in frames]
        assert all(p.ctypes.data % 4 == 0 and p.strides[0] % 4 == 0 for f in frames for p in f.planes)
    fast, variant = emulate(frames, spec)
    general, general_variant = emulate(frames, spec, force_direct=True)
    takes_vfirst = aligned and (fmt, h, w) not in VFIRST_STAYS_FAST
    want = ("vfirst" if clamp == "source" else "vfirst-planes") if takes_vfirst else "staged"
    assert (variant, general_variant) == (want, "direct")
    tol = 2**-10 if spec.dtype == "float16" else 1e-5  # half rounding may flip a last bit
    np.testing.assert_allclose(fast.astype(np.float64), general.astype(np.float64), rtol=tol, atol=tol)
    if spec.dtype == "float32":
        assert_matches_references(fast, frames, spec)


AB_VARIANTS = ("vfirst-prefetch", "vfirst-late")  # ENGINE_CUDA_PREPROCESS values, temporary


@needs_ext
@pytest.mark.parametrize("block", ["vfirst", *AB_VARIANTS, "vfirst-planes"])
def test_emulated_vertical_first_on_random_geometries(block, monkeypatch):
    """Fresh random 4:2:0 frames (odd sizes too), geometries, filters, layouts and dtypes each run
    (the seed is in the message): the vertical-first block, wherever it takes the call, equals the
    general block; its temporary A/B variants (ENGINE_CUDA_PREPROCESS=vfirst-prefetch: loads a
    step ahead; vfirst-late: the weights read where used) equal it bit for bit; its
    clamp="output" variant equals the general block's."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    if block in AB_VARIANTS:
        monkeypatch.setenv("ENGINE_CUDA_PREPROCESS", block)
    took = 0
    for _ in range(24):
        fmt = str(rng.choice(["i420", "nv12"]))
        h, w = int(rng.integers(1, 400)), int(rng.integers(1, 700))  # odd sizes too
        oh, ow = int(rng.integers(1, 100)), int(rng.integers(1, 100))
        resize = str(rng.choice(["stretch", "shorter", "letterbox"]))
        spec = PreprocessSpec(size=(oh, ow), resize=resize, filter=str(rng.choice(["antialias", "bilinear"])),
                              dtype=str(rng.choice(["float32", "float16"])), layout=str(rng.choice(["nchw", "nhwc"])),
                              channels=str(rng.choice(["rgb", "bgr"])), pad_value=0.5,
                              resize_to=(oh + int(rng.integers(0, 30)),) * 2 if resize == "shorter" else None,
                              clamp="output" if block == "vfirst-planes" else "source", **NORM)
        frames = [aligned4(make_frame(fmt, h, w, rng, matrix="bt709"), rng) for _ in range(2)]
        out, variant = emulate(frames, spec)
        general, _ = emulate(frames, spec, force_direct=True)
        took += variant == block
        if variant in AB_VARIANTS:
            monkeypatch.delenv("ENGINE_CUDA_PREPROCESS")
            plain, plain_variant = emulate(frames, spec)
            monkeypatch.setenv("ENGINE_CUDA_PREPROCESS", block)
            assert plain_variant == "vfirst"
            np.testing.assert_array_equal(out, plain, err_msg=f"seed {seed}: {fmt} {h}x{w} {spec}")
        tol = 2**-10 if spec.dtype == "float16" else 1e-5
        np.testing.assert_allclose(out.astype(np.float64), general.astype(np.float64), rtol=tol, atol=tol,
                                   err_msg=f"seed {seed}: {fmt} {h}x{w} {spec}")
    assert took >= 8, f"seed {seed}: the vertical-first block took only {took} of 24 calls"


# --- pooling --------------------------------------------------------------------------------------
@needs_ext
@pytest.mark.parametrize("normalize", [False, True])
def test_emulated_masked_mean(normalize):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 17, 37)).astype(np.float32)
    m = (rng.random((3, 17)) < 0.6).astype(np.float32)
    m[2] = 0.0  # all-zero mask -> zeros
    out = np.full((3, 37), np.nan, np.float32)
    _C_cuda.masked_mean_emulate(out.ctypes.data, x.ctypes.data, m.ctypes.data, 3, 17, 37, normalize)
    np.testing.assert_allclose(out, masked_mean_ref(x, m, normalize), rtol=1e-5, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("mode,window", [("mean", 1), ("max", 1), ("window_max", 3), ("window_max", 100)])
def test_emulated_segment_pool(mode, window):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((150, 19)).astype(np.float32)
    offsets = np.array([0, 5, 5, 90, 91, 150], np.int64)
    out = np.full((5, 19), np.nan, np.float32)
    code = {"mean": 0, "max": 1, "window_max": 2}[mode]
    _C_cuda.segment_pool_emulate(out.ctypes.data, x.ctypes.data, offsets.ctypes.data, 150, 19, 5, code, window)
    np.testing.assert_allclose(out, segment_pool_ref(x, offsets, mode, window), rtol=1e-5, atol=1e-6)


# --- the Python wrappers end to end, with host memory behind __cuda_array_interface__ -----------
class HostCAI:
    """numpy memory presented as a CUDA array (the emulating shim below only reads host memory)."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
            "strides": a.strides, "version": 3,
        }


class EmulatingC:
    """engine._C_cuda with every entry point replaced by its host emulation."""

    def preprocess(self, *args):
        return _C_cuda.preprocess_emulate(*args)

    def masked_mean(self, *args):
        return _C_cuda.masked_mean_emulate(*args[:-2])

    def segment_pool(self, *args):
        return _C_cuda.segment_pool_emulate(*args[:-2])

    def pointer_device(self, ptr):
        return 0  # host memory stands in for device 0's

    def stream_wait(self, waiter, producer, device):
        pass  # the emulation runs when called: nothing is ever queued


class Ordering(EmulatingC):
    """The emulation, recording the stream waits and pointer queries the wrappers ask for;
    ``owners`` maps an address to the device that owns it (default 0)."""

    def __init__(self, owners=None):
        self.waits, self.queried, self.owners = [], [], owners or {}
        self.launch_streams = []

    def pointer_device(self, ptr):
        self.queried.append(ptr)
        return self.owners.get(ptr, 0)

    def stream_wait(self, waiter, producer, device):
        self.waits.append((waiter, producer, device))

    def preprocess(self, *args):
        self.launch_streams.append(args[23])
        return super().preprocess(*args)


def _i420_objects(streams=(None,) * 4, devices=(None,) * 4) -> list:
    """Batched planes of 2 i420 frames and ``out`` as host CAI objects, with a CAI ``stream`` and
    a framework ``device`` (None: no such attribute) each."""
    import types

    rng = np.random.default_rng(9)
    arrays = [rng.integers(0, 256, (2, 8, 10), np.uint8), rng.integers(0, 256, (2, 4, 5), np.uint8),
              rng.integers(0, 256, (2, 4, 5), np.uint8), np.full((2, 3, 4, 4), np.nan, np.float32)]
    objs = []
    for a, stream, device in zip(arrays, streams, devices):
        o = HostCAI(a)
        o.__cuda_array_interface__["stream"] = stream
        if device is not None:
            o.device = types.SimpleNamespace(index=device)
        objs.append(o)
    return objs


def _i420_call(cuda_ops, objs: list, **kw) -> None:
    cuda_ops.preprocess(tuple(objs[:3]), PreprocessSpec(size=(4, 4)), format="i420", width=10, height=8,
                        out=objs[3], **kw)
    assert not np.isnan(objs[3].a).any()


def _data(obj) -> int:
    return obj.__cuda_array_interface__["data"][0]


@needs_ext
@pytest.mark.parametrize("streams,launch,waits", [
    ((None, None, None, None), 0, []),  # no producer stream: nothing to wait for
    ((7, 7, None, 7), 7, []),  # the launch stream is the producers' own
    ((1, 1, 1, 1), 0, []),  # 1 is the legacy default stream, as the launch stream 0
    ((5, 9, 5, None), 0, [(0, 5, 0), (0, 9, 0)]),  # two producers: wait for both, once each
    ((None, None, None, 2), 0, [(0, 2, 0)]),  # out's producer too (per-thread default stream)
])
def test_the_launch_waits_for_the_producers_streams(monkeypatch, streams, launch, waits):
    # CUDA Array Interface v3: the consumer orders its work after the producer's stream
    import engine.ops.cuda as cuda_ops

    c = Ordering()
    monkeypatch.setattr(cuda_ops, "load", lambda: c)
    _i420_call(cuda_ops, _i420_objects(streams), stream=launch)
    assert sorted(c.waits) == waits and c.launch_streams == [launch]


@needs_ext
def test_a_call_stays_on_one_device(monkeypatch):
    import engine.ops.cuda as cuda_ops
    from engine.errors import InputError

    # devices named by the framework: no runtime queries
    c = Ordering()
    monkeypatch.setattr(cuda_ops, "load", lambda: c)
    _i420_call(cuda_ops, _i420_objects(devices=(0, 0, 0, 0)), stream=0)
    assert c.queried == []
    with pytest.raises(InputError, match=r"one device, got devices \[0, 1\]"):
        _i420_call(cuda_ops, _i420_objects(devices=(0, 0, 1, 0)), stream=0)
    with pytest.raises(InputError, match="one device"):
        _i420_call(cuda_ops, _i420_objects(devices=(1, 1, 1, 0)), stream=0)  # out elsewhere
    # arrays whose framework names no device (Numba, PyCUDA) are asked of the runtime, once each
    objs = _i420_objects()
    _i420_call(cuda_ops, objs, stream=0)
    assert sorted(c.queried) == sorted(_data(o) for o in objs)
    objs = _i420_objects()
    c = Ordering(owners={_data(objs[1]): 1})
    with pytest.raises(InputError, match=r"one device, got devices \[0, 1\]"):
        _i420_call(cuda_ops, objs, stream=0)


@needs_ext
def test_cupy_arrays_launch_on_their_devices_stream(monkeypatch):
    import sys
    import types

    import engine.ops.cuda as cuda_ops

    current = {"device": 0}
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(get_current_stream=lambda device_id=-1: types.SimpleNamespace(
        ptr={0: 0x1000, 1: 0x2000}[current["device"] if device_id == -1 else device_id]))
    monkeypatch.setitem(sys.modules, "cupy", fake)

    class CupyCAI(HostCAI):
        pass

    CupyCAI.__module__ = "cupy._core.core"
    c = Ordering()
    monkeypatch.setattr(cuda_ops, "load", lambda: c)
    x = CupyCAI(np.ones((1, 2, 3), np.float32))
    mask = CupyCAI(np.ones((1, 2), np.float32))
    out = CupyCAI(np.zeros((1, 3), np.float32))
    for o in (x, mask, out):
        o.device = types.SimpleNamespace(id=1)
    launched = []
    c.masked_mean = lambda *args: launched.append(args[-2:])
    cuda_ops.masked_mean(x, mask, out=out)
    assert launched == [(0x2000, 1)]  # device 1's current stream, not the current device's


@needs_ext
def test_cai_stream_and_mask_are_checked():
    import engine.ops.cuda as cuda_ops
    from engine.errors import InputError

    x = HostCAI(np.ones((1, 2, 3), np.float32))
    x.__cuda_array_interface__["stream"] = "0x10"
    with pytest.raises(InputError, match="stream must be an int or None"):
        cuda_ops.masked_mean(x, HostCAI(np.ones((1, 2), np.float32)))
    x = HostCAI(np.ones((1, 2, 3), np.float32))
    x.__cuda_array_interface__["mask"] = HostCAI(np.ones((1, 2, 3), np.bool_))
    with pytest.raises(InputError, match="masked CUDA arrays"):
        cuda_ops.masked_mean(x, HostCAI(np.ones((1, 2), np.float32)))


@needs_ext
def test_ten_bit_rows_must_start_on_sample_boundaries():
    # an odd row stride would make every second row's uint16 loads misaligned on the GPU
    buf = np.zeros(4096, np.uint8)
    base = buf.ctypes.data + (-buf.ctypes.data) % 16
    out = np.zeros((1, 3, 8, 8), np.float32)
    args = lambda strides: (out.ctypes.data, 1, 8, 8, False, False, 0, 10, 10, 6, 0, False,  # noqa: E731
                            [base, base + 1024, base + 2048], strides, 2, 8, 8, 0, 1.0, (0.0,) * 3, (1.0,) * 3,
                            False, 0.0)
    _C_cuda.preprocess_emulate(*args([22, 12, 12]))
    with pytest.raises(ValueError, match="not a multiple of 2 bytes"):
        _C_cuda.preprocess_emulate(*args([21, 12, 12]))
    with pytest.raises(ValueError, match="not a multiple of 2 bytes"):
        _C_cuda.preprocess_emulate(*args([22, 11, 12]))


@needs_ext
@pytest.mark.parametrize("clamp", ["source", "output"])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("fmt", ["i420", "nv12", "rgb24", "i444_10"])
def test_wrappers_end_to_end_on_host_memory(monkeypatch, fmt, batched, clamp):
    import engine.ops.cuda as cuda_ops

    monkeypatch.setattr(cuda_ops, "load", lambda: EmulatingC())
    rng = np.random.default_rng(4)
    spec = PreprocessSpec(size=(14, 18), resize="shorter", layout="nhwc", clamp=clamp, **NORM)
    frames = [make_frame(fmt, 33, 47, rng, matrix="bt709", rgb3d=True) for _ in range(3)]
    if batched:
        planes = tuple(HostCAI(np.stack([np.ascontiguousarray(f.planes[j]) for f in frames]))
                       for j in range(len(frames[0].planes)))
    else:
        planes = [tuple(HostCAI(p) for p in f.planes) for f in frames]
    out = np.full(spec.output_shape(3), np.nan, np.float32)
    cuda_ops.preprocess(planes, spec, format=fmt, width=47, height=33, matrix="bt709", out=HostCAI(out), stream=0)
    ref = np.stack([preprocess_ref(f, spec) for f in frames])
    assert level_error(out, ref, spec) <= TOL_LEVELS

    x = rng.standard_normal((2, 5, 7)).astype(np.float32)
    m = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], np.float32)
    o = np.full((2, 7), np.nan, np.float32)
    cuda_ops.masked_mean(HostCAI(x), HostCAI(m), True, out=HostCAI(o), stream=0)
    np.testing.assert_allclose(o, masked_mean_ref(x, m, True), rtol=1e-5, atol=1e-6)
    xs = rng.standard_normal((9, 4)).astype(np.float32)
    offs = np.array([0, 4, 9], np.int64)
    os_ = np.full((2, 4), np.nan, np.float32)
    cuda_ops.segment_pool(HostCAI(xs), HostCAI(offs), "window_max", 2, out=HostCAI(os_), stream=0)
    np.testing.assert_allclose(os_, segment_pool_ref(xs, offs, "window_max", 2), rtol=1e-5, atol=1e-6)


@needs_ext
def test_preprocess_ab_script_on_the_host_emulation(monkeypatch, capsys):
    """bench/preprocess_ab.py end to end without a GPU: CPU tensors, the kernel's host emulation
    behind the real wrapper, fake event timings. Each column runs its own block (the variant
    the extension reports), and the table has a row per case with the A/B variants bit-identical."""
    import torch

    import engine.ops.cuda as cuda_ops
    from bench import gpu, preprocess_ab

    variants = []

    class Recording(EmulatingC):
        def preprocess(self, *args):
            variants.append(super().preprocess(*args))
            return variants[-1]

    real = cuda_ops.preprocess

    def on_host(planes, spec, *, out, **kw):
        real(tuple(HostCAI(p.numpy()) for p in planes), spec, out=HostCAI(out.numpy()), stream=0, **kw)
        return out

    def one_call_each(paths, **kw):  # distinct fake seconds per path
        seconds = {}
        for i, (name, fn) in enumerate(paths.items()):
            fn()
            seconds[name] = [1e-3 * (i + 1)]
        return seconds

    monkeypatch.setattr(cuda_ops, "load", lambda: Recording())
    monkeypatch.setattr(cuda_ops, "preprocess", on_host)
    monkeypatch.setattr(gpu, "unavailable", lambda: None)
    monkeypatch.setattr(gpu, "DEVICE", "cpu")
    monkeypatch.setattr(gpu, "copy_path", lambda traffic: (lambda: None, traffic))
    monkeypatch.setattr(gpu, "measure_events", one_call_each)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(preprocess_ab, "CASES", (("small", 90, 160, "i420", 2, "float32"),
                                                 ("small nv12", 90, 160, "nv12", 2, "float16")))
    assert preprocess_ab.main() == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| small")]
    assert len(rows) == 2 and all(line.split("|")[-2].strip() == "0" for line in rows)
    header = next(line for line in lines if line.startswith("| case"))
    assert all(line.count("|") == header.count("|") for line in rows)
    assert variants == ["vfirst", "vfirst-prefetch", "vfirst-late", "vfirst-planes"] * 2
