"""HDR (PQ, HLG) and wide-gamut (BT.2020) frames as an SDR BT.709 display shows them.

The vision models were trained on SDR pictures; an HDR frame read as if it were SDR comes out dim
and washed out (a photograph made HLG and encoded as 10-bit HEVC: 26 levels off its SDR original
on average, against 7 after this mapping; tests/test_media_hdr.py). :func:`to_sdr` is Note [HDR to SDR] in ``csrc/include/engine/transfer.h``:
reference white (203 cd/m², HLG 75%) becomes SDR white, BT.2020 primaries become BT.709 in linear
light, what lies outside is clipped, and the result is encoded with gamma 1/2.4 as 8-bit RGB.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import InputError
from engine.ops._native import load
from engine.ops.preprocess import _MATRICES, _YUV, _frame_tuple

TRANSFERS = {"sdr": 0, "pq": 1, "hlg": 2}
PRIMARIES = {"bt709": 0, "bt2020": 1}
_SDR_MATRICES = {**_MATRICES, "bt2020": 2}  # the fused preprocessing's, and BT.2020 (colour.h)


def to_sdr(frame: Any, *, transfer: str, primaries: str, out: np.ndarray | None = None,
           threads: int | None = None) -> np.ndarray:
    """The SDR BT.709 picture of a Y'CbCr frame, as ``(H, W, 3)`` uint8 RGB.

    For each pixel, with chroma replicated onto the luma grid and ``E'`` the R'G'B' signal of
    the frame's matrix and range clipped to [0, 1]::

        L   = pq_eotf(E') / 203                            transfer="pq"
            = 1000/203 * Ys^0.2 * hlg_inverse_oetf(E')     transfer="hlg" (Ys: scene luminance)
            = E'^2.4                                       transfer="sdr"
        L   = M_2020->709 L                                primaries="bt2020"
        rgb = round(255 * clip(L, 0, 1)^(1/2.4))

    Parameters
    ----------
    frame : Frame
        A Y'CbCr frame (``i420``, ``nv12``, ``i422``, ``i444``, 8- or 10-bit); ``matrix`` may be
        ``"bt2020"`` (non-constant luminance) besides ``"bt601"`` and ``"bt709"``.
    transfer : {"sdr", "pq", "hlg"}
    primaries : {"bt709", "bt2020"}
    out : ndarray, optional
        ``(H, W, 3)`` uint8, C-contiguous.
    threads : int, optional
        OpenMP threads over rows (default: all).
    """
    if transfer not in TRANSFERS:
        raise InputError(f"transfer must be one of {sorted(TRANSFERS)}, got {transfer!r}")
    if primaries not in PRIMARIES:
        raise InputError(f"primaries must be one of {sorted(PRIMARIES)}, got {primaries!r}")
    fmt = getattr(frame, "format", None)
    if not isinstance(fmt, str) or fmt.removesuffix("_10") not in _YUV:
        raise InputError(f"frame must be Y'CbCr (i420, nv12, i422, i444), got {fmt!r}")
    t = _frame_tuple(frame, "frame", _SDR_MATRICES)
    shape = (t[3], t[2], 3)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise InputError(f"out must be a C-contiguous uint8 array of shape {shape}")
    load().to_sdr_rgb24(out, t, TRANSFERS[transfer], PRIMARIES[primaries], int(threads or 0))
    return out
