"""Pooling kernels vs float64 numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from reference import masked_mean_ref, segment_pool_ref

from engine.errors import InputError
from engine.ops import masked_mean, segment_pool

SHAPES = [(1, 1, 1), (2, 7, 5), (3, 33, 384), (4, 128, 17)]  # (B, T, D)
MASK_DTYPES = [bool, np.int64, np.float32]
SEGMENTS = [[0, 1], [0, 0, 5, 6, 40], [0, 13, 13, 100], [0, 3, 4, 5]]
MODES = ["mean", "max", "window_max"]
WINDOWS = [1, 3, 8]
# float32 output of a float64 accumulation: relative float32 rounding (~6e-8) of values ~1.
ATOL = 1e-6


def _poison(shape):
    return np.full(shape, np.nan, np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("normalize", [False, True])
def test_masked_mean(shape, mask_dtype, normalize):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape[:2]) < 0.7
    mask[0] = False  # an all-masked row gives zeros
    if mask_dtype is np.float32:
        mask = mask * rng.random(shape[:2])
    mask = mask.astype(mask_dtype)
    ref = masked_mean_ref(x, mask, normalize)
    out = masked_mean(x, mask, normalize, out=_poison((shape[0], shape[2])))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=1e-6)
    assert not out[0].any()


def test_masked_mean_strided_input():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 20, 16)).astype(np.float32)[:, ::2, ::2]  # non-contiguous
    mask = np.ones((3, 10), np.int32)
    np.testing.assert_allclose(masked_mean(x, mask), masked_mean_ref(x, mask), atol=ATOL)


@pytest.mark.parametrize("offsets", SEGMENTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", WINDOWS)
def test_segment_pool(offsets, mode, window):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((offsets[-1] + 2, 9)).astype(np.float32)
    ref = segment_pool_ref(x, offsets, mode, window)
    out = segment_pool(x, np.asarray(offsets), mode, window, out=_poison((len(offsets) - 1, 9)))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=1e-6)


def test_segment_pool_long_window_max():
    # running-sum drift control over a long segment
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5000, 4)) * 100 + 1000).astype(np.float32)
    ref = segment_pool_ref(x, [0, 5000], "window_max", 50)
    np.testing.assert_allclose(segment_pool(x, np.array([0, 5000]), "window_max", 50), ref, rtol=1e-6)


def test_pooling_errors():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(InputError):
        masked_mean(x, np.ones((2, 4)))
    with pytest.raises(InputError):
        masked_mean(x[0], np.ones((2, 3)))
    with pytest.raises(InputError):
        segment_pool(x[0], np.array([0, 4]))  # beyond rows
    with pytest.raises(InputError):
        segment_pool(x[0], np.array([0, 2, 1]))
    with pytest.raises(InputError):
        segment_pool(x[0], np.array([0, 2]), "median")
    with pytest.raises(InputError):
        segment_pool(x[0], np.array([0, 2]), "window_max", 0)
    with pytest.raises(InputError):
        segment_pool(x[0], np.array([0.0, 2.0]))
