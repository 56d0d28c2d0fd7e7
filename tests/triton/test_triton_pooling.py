"""Triton pooling vs the CPU kernels (engine.ops) and the float64 references.

Every kernel accumulates in float64 like the CPU one, so float32 outputs agree to float32
rounding: rtol 1e-5 (the brief's bound, ~100x the rounding) plus atol 1e-6 for values near 0.
float16 inputs are compared with the references on the same (rounded) values.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import masked_mean_ref, segment_pool_ref
from triton_cases import gpu_only, import_kernels

from engine.errors import InputError
from engine.ops import masked_mean as cpu_masked_mean
from engine.ops import segment_pool as cpu_segment_pool

pytest.importorskip("triton")
torch = pytest.importorskip("torch")
kernels = import_kernels()

RTOL, ATOL = 1e-5, 1e-6
SHAPES = [(1, 1, 1), (2, 7, 5), (3, 33, 130)]  # (B, T, D): D over one 128-wide block
SEGMENTS = [[0, 1], [0, 0, 5, 6, 40], [0, 13, 13, 40], [0, 3, 4, 5]]
MODES = ["mean", "max", "window_max"]
# window 20: windows longer than the kernel's 16-row tiles
MODE_WINDOWS = [("mean", 1), ("max", 1), ("window_max", 1), ("window_max", 3), ("window_max", 8), ("window_max", 20)]


def _poisoned(shape, device):
    return torch.full(shape, float("nan"), dtype=torch.float32, device=device)


def _close(got, want):
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_masked_mean(shape, normalize, mask_dtype, device):
    rng = np.random.default_rng()
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape[:2]) < 0.7
    mask[0] = False  # an all-masked row gives zeros
    if mask_dtype is torch.float32:
        mask = mask * rng.random(shape[:2])
    m = torch.from_numpy(mask).to(device=device, dtype=mask_dtype)
    out = kernels.masked_mean(torch.from_numpy(x).to(device), m, normalize, out=_poisoned((shape[0], shape[2]), device))
    _close(out, masked_mean_ref(x, mask, normalize))
    _close(out, cpu_masked_mean(x, mask, normalize))
    assert not out[0].any()


def test_masked_mean_strided_half(device):
    rng = np.random.default_rng()
    base = torch.from_numpy(rng.standard_normal((3, 20, 40)).astype(np.float32)).to(device)
    x = base.half()[:, ::2, 1::3]  # non-contiguous float16 view
    mask = torch.ones(3, 10, dtype=torch.int64, device=device)
    out = kernels.masked_mean(x, mask, True)
    _close(out, masked_mean_ref(x.float().cpu().numpy(), mask.cpu().numpy(), True))


@pytest.mark.parametrize("offsets", SEGMENTS)
@pytest.mark.parametrize("mode,window", MODE_WINDOWS)
def test_segment_pool(offsets, mode, window, device):
    rng = np.random.default_rng()
    x = rng.standard_normal((offsets[-1] + 2, 67)).astype(np.float32)  # rows past the last segment
    off = np.asarray(offsets, np.int64)
    out = kernels.segment_pool(torch.from_numpy(x).to(device), torch.from_numpy(off).to(device), mode, window,
                               out=_poisoned((len(offsets) - 1, 67), device))
    _close(out, segment_pool_ref(x, off, mode, window))
    _close(out, cpu_segment_pool(x, off, mode, window))


def test_window_max_long_segment(device):
    # many tiles, large values: the kernel's prefix-sum differences vs the CPU kernel's running sum
    rng = np.random.default_rng()
    x = (rng.standard_normal((150, 9)) * 100).astype(np.float32)
    off = np.array([0, 150], np.int64)
    out = kernels.segment_pool(torch.from_numpy(x).to(device), torch.from_numpy(off).to(device), "window_max", 3)
    _close(out, segment_pool_ref(x, off, "window_max", 3))


@pytest.mark.parametrize("mode", MODES)
def test_nan_propagates_like_the_cpu_kernel(mode, device):
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    x[5, 1] = np.nan
    off = np.array([0, 4, 8], np.int64)
    out = kernels.segment_pool(torch.from_numpy(x).to(device), torch.from_numpy(off).to(device), mode, 2).cpu().numpy()
    cpu = cpu_segment_pool(x, off, mode, 2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(cpu))
    np.testing.assert_allclose(np.nan_to_num(out), np.nan_to_num(cpu), rtol=RTOL)
    assert np.isnan(out[1, 1]) and not np.isnan(out[0]).any()


def test_bad_offsets_are_clamped_not_read_out_of_bounds(device):
    x = torch.arange(20, dtype=torch.float32, device=device).reshape(10, 2)
    # each segment clamps its own ends: [0, 4), [4, max(2, 4)) = empty, [2, min(100, 10))
    out = kernels.segment_pool(x, torch.tensor([-5, 4, 2, 100], device=device), "mean")
    np.testing.assert_allclose(out.cpu().numpy(), [[3.0, 4.0], [0.0, 0.0], [11.0, 12.0]])


def test_validation(device):
    x = torch.zeros(2, 3, 4, device=device)
    with pytest.raises(InputError, match="mask shape"):
        kernels.masked_mean(x, torch.ones(2, 4, device=device))
    with pytest.raises(InputError, match="3-D"):
        kernels.masked_mean(x[0], torch.ones(2, 3, device=device))
    with pytest.raises(InputError, match="out must be"):
        kernels.masked_mean(x, torch.ones(2, 3, device=device), out=torch.empty(2, 5, device=device))
    with pytest.raises(InputError, match="mode"):
        kernels.segment_pool(x[0], torch.tensor([0, 3], device=device), "median")
    with pytest.raises(InputError, match="window"):
        kernels.segment_pool(x[0], torch.tensor([0, 3], device=device), "window_max", 0)
    with pytest.raises(InputError, match="int64"):
        kernels.segment_pool(x[0], torch.tensor([0, 3], dtype=torch.int32, device=device))


@gpu_only
@pytest.mark.parametrize("mode", MODES)
def test_gpu_segment_pool_large(mode):
    rng = np.random.default_rng()
    x = rng.standard_normal((32768, 768)).astype(np.float32)
    off = np.sort(rng.integers(0, 32768, 257)).astype(np.int64)
    off[0], off[-1] = 0, 32768
    out = kernels.segment_pool(torch.from_numpy(x).cuda(), torch.from_numpy(off).cuda(), mode, 8)
    _close(out, cpu_segment_pool(x, off, mode, 8))


@gpu_only
@pytest.mark.parametrize("normalize", [False, True])
def test_gpu_masked_mean_large(normalize):
    rng = np.random.default_rng()
    x = rng.standard_normal((256, 128, 768)).astype(np.float32)
    mask = rng.random((256, 128)) < 0.8
    out = kernels.masked_mean(torch.from_numpy(x).cuda(), torch.from_numpy(mask).cuda(), normalize)
    _close(out, cpu_masked_mean(x, mask, normalize))
