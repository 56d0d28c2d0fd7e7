"""Pooling kernels: masked mean over tokens and per-segment pooling over rows."""

from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.ops._native import load

_MODES = {"mean": 0, "max": 1, "window_max": 2}


def _f32(x, name: str, ndim: int) -> np.ndarray:
    if type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == ndim and x.flags.c_contiguous:
        return x  # fast path (a few microseconds of checks per call otherwise)
    a = np.asarray(x)
    if a.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InputError(f"{name} must be numeric, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _out(out, shape, name="out") -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32:
        raise InputError(f"{name} must be float32 {shape}, got {getattr(out, 'shape', None)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError(f"{name} must be C-contiguous and writeable")
    return out


def masked_mean(
    x: np.ndarray,
    mask: np.ndarray,
    normalize: bool = False,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Mean of token vectors weighted by a mask (sentence-transformers mean pooling).

    ``out[b] = sum_t mask[b, t] * x[b, t] / max(sum_t mask[b, t], 1e-9)``, then with
    ``normalize`` ``out[b] /= max(||out[b]||_2, 1e-12)``. A row with an all-zero mask gives zeros.
    Accumulation is in float64.

    Parameters
    ----------
    x : ndarray, [B, T, D]
        Token embeddings (converted to float32).
    mask : ndarray, [B, T]
        bool / int / float weights (attention mask).
    normalize : bool
        L2-normalise each pooled vector.
    out : ndarray, optional
        [B, D] float32 output buffer.
    threads : int, optional
        OpenMP threads (default all cores).

    Returns
    -------
    ndarray
        [B, D] float32.
    """
    xa = _f32(x, "x", 3)
    ma = _f32(mask, "mask", 2)
    if ma.shape != xa.shape[:2]:
        raise InputError(f"mask shape {ma.shape} must equal x.shape[:2] {xa.shape[:2]}")
    o = _out(out, (xa.shape[0], xa.shape[2]))
    try:
        load().masked_mean(o, xa, ma, bool(normalize), int(threads or 0))
    except ValueError as e:
        raise InputError(str(e)) from e
    return o


def segment_pool(
    x: np.ndarray,
    offsets: np.ndarray,
    mode: str = "mean",
    window: int = 1,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Pool consecutive row segments ``x[offsets[s]:offsets[s+1]]``.

    * ``mean``: ``out[s] = mean_i x[i]``
    * ``max``: ``out[s, d] = max_i x[i, d]``
    * ``window_max``: ``out[s, d] = max_j mean(x[j:j+W, d])`` over every length-``window``
      window (stride 1) inside the segment; a segment shorter than ``window`` uses its mean.

    Empty segments give zeros. Means accumulate in float64.

    Parameters
    ----------
    x : ndarray, [N, D]
    offsets : ndarray, [S + 1] int
        Non-decreasing, within ``[0, N]``.
    mode : {"mean", "max", "window_max"}
    window : int
        Window length for ``window_max`` (>= 1).
    out : ndarray, optional
        [S, D] float32.
    threads : int, optional

    Returns
    -------
    ndarray
        [S, D] float32.
    """
    if mode not in _MODES:
        raise InputError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    if mode == "window_max" and (not isinstance(window, (int, np.integer)) or window < 1):
        raise InputError(f"window must be a positive int, got {window!r}")
    xa = _f32(x, "x", 2)
    off = np.asarray(offsets)
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise InputError(f"offsets must be a 1-D int array of length S + 1, got {off.dtype} {off.shape}")
    off = np.ascontiguousarray(off, dtype=np.int64)
    o = _out(out, (off.size - 1, xa.shape[1]))
    try:
        load().segment_pool(o, xa, off, _MODES[mode], int(window), int(threads or 0))
    except ValueError as e:
        raise InputError(str(e)) from e
    return o
