"""Pooling in Triton: masked mean over tokens, pooling of ragged row segments.

Semantics of :mod:`engine.ops.pooling` (csrc Note [pooling]), float64 accumulation; see
Note [Triton pooling] in pooling_kernel.py.
"""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.ops.cuda import _POOL_MODES

from ._runtime import check_device, check_tensor, launch, load, output, pow2

_WINDOW_WARPS = 8


def _float_dtypes(torch: Any) -> tuple:
    return (torch.float32, torch.float16, torch.bfloat16)


def masked_mean(x: Any, mask: Any, normalize: bool = False, *, out: Any = None) -> Any:
    """Mean of token vectors weighted by a mask (sentence-transformers mean pooling), one launch.

    ``out[b] = sum_t mask[b, t] x[b, t] / max(sum_t mask[b, t], 1e-9)``, then with ``normalize``
    ``out[b] /= max(||out[b]||_2, 1e-12)``; an all-zero mask row gives zeros. float64
    accumulation (as :func:`engine.ops.masked_mean`).

    Parameters
    ----------
    x : torch.Tensor [B, T, D]
        float32 / float16 / bfloat16, any strides.
    mask : torch.Tensor [B, T]
        bool, integer or float weights (non-float32 masks are converted first).
    normalize : bool
    out : torch.Tensor [B, D] float32, optional

    Returns
    -------
    torch.Tensor [B, D] float32
    """
    triton, torch = load()
    x = check_tensor(x, "x", _float_dtypes(torch), (3,))
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise InputError(f"mask must be a 2-D torch tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise InputError(f"mask shape {tuple(mask.shape)} must equal x.shape[:2] {tuple(x.shape[:2])}")
    check_device(x.device, ("mask", mask))
    if mask.dtype != torch.float32:
        mask = mask.to(torch.float32)
    B, T, D = x.shape
    out = output(out, (B, D), torch.float32, x.device)
    if B == 0 or D == 0:
        return out
    block_d = min(pow2(D), 128)
    block_t = min(pow2(max(T, 1)), 16)
    from .pooling_kernel import masked_mean_kernel

    grid = (B, 1 if normalize else triton.cdiv(D, block_d))
    launch(masked_mean_kernel, grid, x.device, out, x, mask, T, D, *x.stride(), *mask.stride(),
           NORMALIZE=bool(normalize), BLOCK_T=block_t, BLOCK_D=block_d)
    return out


def segment_pool(x: Any, offsets: Any, mode: str = "mean", window: int = 1, *, out: Any = None) -> Any:
    """Pool row segments ``x[offsets[s]:offsets[s+1]]`` (see :func:`engine.ops.segment_pool`).

    * ``mean``: ``out[s] = mean_i x[i]``
    * ``max``: ``out[s, d] = max_i x[i, d]`` (NaN propagates)
    * ``window_max``: ``out[s, d] = max_j mean(x[j:j+W, d])`` over every length-``window``
      window (stride 1) inside the segment; a segment no longer than ``window`` uses its mean.

    Empty segments give zeros.

    Parameters
    ----------
    x : torch.Tensor [N, D]
        float32 / float16 / bfloat16, any strides.
    offsets : torch.Tensor [S + 1] int64
        Non-decreasing within ``[0, N]``; not checked on the host (that would synchronise): the
        kernel clamps them, so bad offsets give wrong segments, never out-of-bounds reads.
    mode : {"mean", "max", "window_max"}
    window : int
    out : torch.Tensor [S, D] float32, optional

    Returns
    -------
    torch.Tensor [S, D] float32
    """
    triton, torch = load()
    if mode not in _POOL_MODES:
        raise InputError(f"mode must be one of {sorted(_POOL_MODES)}, got {mode!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise InputError(f"window must be a positive int, got {window!r}")
    x = check_tensor(x, "x", _float_dtypes(torch), (2,))
    offsets = check_tensor(offsets, "offsets", (torch.int64,), (1,))
    if offsets.shape[0] < 1:
        raise InputError("offsets must hold S + 1 >= 1 entries")
    check_device(x.device, ("offsets", offsets))
    offsets = offsets.contiguous()
    N, D = x.shape
    S = offsets.shape[0] - 1
    out = output(out, (S, D), torch.float32, x.device)
    if S == 0 or D == 0:
        return out
    block_d = min(pow2(D), 128)
    from .pooling_kernel import segment_pool_kernel

    grid = (S, triton.cdiv(D, block_d))
    # window_max scans [16, 128] float64 tiles: 8 warps keep ptxas (sm_90) at 101 registers, 4 spill
    launch(segment_pool_kernel, grid, x.device, out, x, offsets, N, D, *x.stride(), int(window),
           MODE=_POOL_MODES[mode], BLOCK_N=16, BLOCK_D=block_d, num_warps=_WINDOW_WARPS if mode == "window_max" else 4)
    return out
