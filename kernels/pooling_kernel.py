"""Triton kernels of the pooling ops (imported on first use: they need triton).

Note [Triton pooling]
The semantics of csrc Note [pooling], float64 accumulation as the CPU and CUDA kernels:
* masked_mean: one program per (row b, slice of D) sums m[b, t] * x[b, t, d] over T in tiles;
  with NORMALIZE one program owns the whole row (the L2 norm needs every d): it writes the
  unnormalised means, then, after a barrier (its threads read what others wrote), rescales
  them - one extra float32 rounding, ~6e-8 relative.
* segment_pool: one program per (segment s, slice of D). Offsets are clamped into [0, N] and
  made non-decreasing on the device instead of checked on the host (that would synchronise),
  like the CUDA kernel: bad offsets give wrong segments, never out-of-bounds reads.
  window_max takes every window sum as a difference of float64 prefix sums, P(r) - P(r - W),
  computed a tile of rows at a time (tl.cumsum plus a carry) instead of the CPU kernel's running
  sum: the same values to float64 rounding (~1e-16 relative of the prefix), read a tile at a
  time instead of a row. NaN propagates like torch.max (fmax_nan): a window holding a NaN is NaN.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def masked_mean_kernel(out_ptr, x_ptr, m_ptr, T, D, sxb, sxt, sxd, smb, smt,
                       NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pd = tl.program_id(1)
    nd = tl.num_programs(1)
    # the mask weight of the row, float64 (safe_denominator in pooling.h)
    msum = tl.zeros([BLOCK_T], dtype=tl.float64)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        msum += tl.load(m_ptr + b * smb + t * smt, mask=t < T, other=0.0).to(tl.float64)
    inv = 1.0 / tl.maximum(tl.sum(msum, axis=0), 1e-9)
    sumsq = tl.zeros([BLOCK_D], dtype=tl.float64)
    for d0 in range(pd * BLOCK_D, D, nd * BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float64)
        for t0 in range(0, T, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            m = tl.load(m_ptr + b * smb + t * smt, mask=t < T, other=0.0).to(tl.float64)
            x = tl.load(x_ptr + b * sxb + t[:, None] * sxt + d[None, :] * sxd,
                        mask=(t[:, None] < T) & (d[None, :] < D), other=0.0).to(tl.float64)
            acc += m[:, None] * x
        mean = tl.sum(acc, axis=0) * inv
        sumsq += mean * mean
        tl.store(out_ptr + b * D + d, mean.to(tl.float32), mask=d < D)
    if NORMALIZE:  # launched with one program per row: it holds the whole norm
        n = tl.sqrt(tl.sum(sumsq, axis=0))
        scale = 1.0 / tl.maximum(n, 1e-12)
        tl.debug_barrier()
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            v = tl.load(out_ptr + b * D + d, mask=d < D, other=0.0).to(tl.float64)
            tl.store(out_ptr + b * D + d, (v * scale).to(tl.float32), mask=d < D)


@triton.jit
def _nan_max(best, v):
    """fmax_nan of pooling.h, elementwise: NaN in either wins."""
    return tl.where((v != v) | (v > best), v, best)


@triton.jit
def segment_pool_kernel(out_ptr, x_ptr, off_ptr, N, D, sxn, sxd, window,
                        MODE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    s = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    a = tl.minimum(tl.maximum(tl.load(off_ptr + s), 0), N)
    e = tl.minimum(tl.maximum(tl.load(off_ptr + s + 1), a), N)
    L = e - a
    if MODE == 1:  # max
        best = tl.full([BLOCK_D], float("-inf"), tl.float32)
        for i0 in range(a, e, BLOCK_N):
            i = i0 + tl.arange(0, BLOCK_N)
            x = tl.load(x_ptr + i[:, None] * sxn + d[None, :] * sxd,
                        mask=(i[:, None] < e) & dmask[None, :], other=float("-inf"))
            nan = tl.max((x != x).to(tl.int32), axis=0) > 0
            best = _nan_max(best, tl.where(nan, float("nan"), tl.max(x, axis=0)))
        res = best.to(tl.float64)
    elif MODE == 0:  # mean
        acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float64)
        for i0 in range(a, e, BLOCK_N):
            i = i0 + tl.arange(0, BLOCK_N)
            acc += tl.load(x_ptr + i[:, None] * sxn + d[None, :] * sxd,
                           mask=(i[:, None] < e) & dmask[None, :], other=0.0).to(tl.float64)
        res = tl.sum(acc, axis=0) / tl.maximum(L, 1).to(tl.float64)
    else:  # window_max; a segment no longer than the window is its mean (one window of L rows)
        # window sum ending at row r = P(r) - P(r - W), P the running float64 prefix sum: tile
        # A holds rows r, tile B rows r - W; both prefixes are carried from tile to tile
        W = tl.minimum(L, window)
        carry_a = tl.zeros([BLOCK_D], dtype=tl.float64)
        carry_b = tl.zeros([BLOCK_D], dtype=tl.float64)
        best = tl.full([BLOCK_D], float("-inf"), tl.float64)
        for i0 in range(a, e, BLOCK_N):
            i = i0 + tl.arange(0, BLOCK_N)
            rows = (i[:, None] < e) & dmask[None, :]
            xa = tl.load(x_ptr + i[:, None] * sxn + d[None, :] * sxd, mask=rows, other=0.0).to(tl.float64)
            xb = tl.load(x_ptr + (i - W)[:, None] * sxn + d[None, :] * sxd,
                         mask=rows & ((i - W)[:, None] >= a), other=0.0).to(tl.float64)
            win = (carry_a[None, :] + tl.cumsum(xa, axis=0)) - (carry_b[None, :] + tl.cumsum(xb, axis=0))
            full = ((i >= a + W - 1) & (i < e))[:, None] & dmask[None, :]  # windows of W rows
            nan = tl.max((full & (win != win)).to(tl.int32), axis=0) > 0
            top = tl.max(tl.where(full, win, float("-inf")), axis=0)
            best = _nan_max(best, tl.where(nan, float("nan"), top))
            carry_a += tl.sum(xa, axis=0)
            carry_b += tl.sum(xb, axis=0)
        res = best / tl.maximum(W, 1).to(tl.float64)
    res = tl.where(L > 0, res, 0.0)
    tl.store(out_ptr + s * D + d, res.to(tl.float32), mask=dmask)
