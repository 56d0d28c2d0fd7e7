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
# float32 output of a float64 accumulation (exact float32 products, float64 sums): the float32
# rounding of the result, <= 2^-24 ~ 6e-8 relative, plus float64 rounding of sums that cancel.
ATOL = 1e-10
RTOL = 1e-7


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
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=RTOL)
    assert not out[0].any()


def test_masked_mean_strided_input():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 20, 16)).astype(np.float32)[:, ::2, ::2]  # non-contiguous
    mask = np.ones((3, 10), np.int32)
    np.testing.assert_allclose(masked_mean(x, mask), masked_mean_ref(x, mask), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("offsets", SEGMENTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("window", WINDOWS)
def test_segment_pool(offsets, mode, window):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((offsets[-1] + 2, 9)).astype(np.float32)
    ref = segment_pool_ref(x, offsets, mode, window)
    out = segment_pool(x, np.asarray(offsets), mode, window, out=_poison((len(offsets) - 1, 9)))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=RTOL)


def test_segment_pool_long_window_max():
    # running-sum drift control over a long segment
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5000, 4)) * 100 + 1000).astype(np.float32)
    ref = segment_pool_ref(x, [0, 5000], "window_max", 50)
    np.testing.assert_allclose(segment_pool(x, np.array([0, 5000]), "window_max", 50), ref, rtol=RTOL)


# --- the vectorised loops: every D remainder, T = 1, all-zero masks, long segments, NaN ---------

ODD_D = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 100, 384]


@pytest.mark.parametrize("d", ODD_D)
@pytest.mark.parametrize("t", [1, 2, 5, 9, 64])
@pytest.mark.parametrize("normalize", [False, True])
def test_masked_mean_sizes(d, t, normalize):
    rng = np.random.default_rng(1000 * d + t)
    b = 4
    x = (rng.standard_normal((b, t, d)) * rng.uniform(0.1, 10)).astype(np.float32)
    mask = (rng.random((b, t)) < 0.6) * rng.random((b, t))
    mask[0] = 0.0  # all-zero mask: zeros
    mask[1] = 1.0  # every token
    mask = mask.astype(np.float32)
    out = masked_mean(x, mask, normalize, out=_poison((b, d)), threads=1)
    np.testing.assert_allclose(out, masked_mean_ref(x, mask, normalize), atol=ATOL, rtol=RTOL)
    assert not out[0].any()
    # threads change the split over rows only, never a row's arithmetic
    np.testing.assert_array_equal(masked_mean(x, mask, normalize, threads=2), out)


def test_masked_mean_masked_rows_do_not_leak():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 11, 37)).astype(np.float32)
    mask = np.ones((3, 11), np.float32)
    mask[:, 4] = 0.0
    mask[2] = 0.0
    x[:, 4] = np.nan
    x[2] = np.inf
    clean = x.copy()
    clean[:, 4] = 0.0
    clean[2] = 0.0
    for normalize in (False, True):
        out = masked_mean(x, mask, normalize, out=_poison((3, 37)))
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, masked_mean_ref(clean, mask, normalize), atol=ATOL, rtol=RTOL)
    # a NaN under a non-zero weight reaches its column
    x2 = clean.copy()
    x2[1, 0, 10] = np.nan
    out = masked_mean(x2, mask)
    assert np.isnan(out[1, 10]) and np.isfinite(np.delete(out[1], 10)).all()
    assert np.isnan(masked_mean(x2, mask, True)[1, 10])


def test_masked_mean_fresh_random():
    rng = np.random.default_rng()  # fresh inputs every run
    for _ in range(10):
        b, t, d = rng.integers(1, 6), rng.integers(1, 80), rng.integers(1, 300)
        x = (rng.standard_normal((b, t, d)) * 3 + rng.standard_normal()).astype(np.float32)
        mask = (rng.random((b, t)) < rng.random()).astype(rng.choice([bool, np.int64, np.float32]))
        normalize = bool(rng.integers(2))
        out = masked_mean(x, mask, normalize, out=_poison((b, d)))
        np.testing.assert_allclose(out, masked_mean_ref(x, mask, normalize), atol=ATOL, rtol=RTOL,
                                   err_msg=f"B={b} T={t} D={d}")


def _random_offsets(rng, n_seg, max_len):
    lens = rng.integers(0, max_len + 1, n_seg)
    lens[rng.random(n_seg) < 0.2] = 0  # empty segments
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


@pytest.mark.parametrize("d", ODD_D)
@pytest.mark.parametrize("mode", MODES)
def test_segment_pool_sizes(d, mode):
    rng = np.random.default_rng(d)
    offsets = _random_offsets(rng, 7, 12)
    offsets = np.concatenate([offsets, offsets[-1] + [1, 150]])  # one row; > 128 rows (re-sums)
    x = (rng.standard_normal((offsets[-1] + 3, d)) * 5 + 2).astype(np.float32)
    for window in [1, 2, 5, 12, 64, 200]:
        out = segment_pool(x, offsets, mode, window, out=_poison((len(offsets) - 1, d)), threads=1)
        ref = segment_pool_ref(x, offsets, mode, window)
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=RTOL, err_msg=f"window={window}")
        np.testing.assert_array_equal(segment_pool(x, offsets, mode, window, threads=2), out)
        if mode != "window_max":
            break


def test_segment_pool_fresh_random():
    rng = np.random.default_rng()  # fresh inputs every run
    for _ in range(10):
        d = int(rng.integers(1, 200))
        offsets = _random_offsets(rng, int(rng.integers(1, 8)), int(rng.integers(1, 90)))
        x = (rng.standard_normal((offsets[-1] + 1, d)) * 10).astype(np.float32)
        mode = str(rng.choice(MODES))
        window = int(rng.integers(1, 40))
        out = segment_pool(x, offsets, mode, window, out=_poison((len(offsets) - 1, d)))
        np.testing.assert_allclose(out, segment_pool_ref(x, offsets, mode, window), atol=ATOL, rtol=RTOL,
                                   err_msg=f"D={d} mode={mode} window={window} offsets={offsets}")


def test_segment_pool_empty_and_nan():
    x = np.arange(40 * 19, dtype=np.float32).reshape(40, 19) % 7 - 3
    offsets = np.array([0, 0, 10, 10, 40, 40])
    for mode in MODES:
        out = segment_pool(x, offsets, mode, 4, out=_poison((5, 19)))
        assert not out[[0, 2, 4]].any()
        np.testing.assert_allclose(out, segment_pool_ref(x, offsets, mode, 4), atol=ATOL, rtol=RTOL)
    xn = x.copy()
    xn[3, 2] = np.nan  # segment 1, column 2
    xn[35, 17] = np.nan  # segment 3, column 17
    for mode in MODES:
        out = segment_pool(xn, offsets, mode, 4)
        nan = np.isnan(out)
        assert nan[1, 2] and nan[3, 17] and nan.sum() == 2, mode


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
