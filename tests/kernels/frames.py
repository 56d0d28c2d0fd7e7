"""Random test frames with padded row strides (shared by the kernel tests and the benchmark)."""

from __future__ import annotations

import numpy as np

try:
    from engine.media.frame import Frame
except Exception:  # pragma: no cover - media package not importable in this checkout
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Frame:  # type: ignore[no-redef]
        format: str
        planes: tuple
        width: int
        height: int
        matrix: str
        full_range: bool
        pts: float = 0.0
        sar: tuple = (1, 1)


SUB = {"i420": (2, 2), "nv12": (2, 2), "i422": (2, 1), "i444": (1, 1)}


def _padded(rng, rows, cols, dtype, hi, pad):
    """(rows, cols) view into a (rows, cols + pad) buffer: padded row stride."""
    buf = rng.integers(0, hi + 1, (rows, cols + pad), dtype=dtype)
    return buf[:, :cols]


def make_frame(fmt: str, h: int, w: int, rng, *, matrix="bt601", full_range=False, pad=7, rgb3d=False,
               sar=(1, 1)):
    ten = fmt.endswith("_10")
    base = fmt.removesuffix("_10")
    dt = np.uint16 if ten else np.uint8
    hi = 1023 if ten else 255
    if base in ("rgb24", "bgr24"):
        p = _padded(rng, h, 3 * w, dt, hi, pad * 3)
        if rgb3d:
            p = p.reshape(h, w, 3) if p.flags.c_contiguous else np.lib.stride_tricks.as_strided(
                p, (h, w, 3), (p.strides[0], 3 * p.itemsize, p.itemsize))
        planes = (p,)
    else:
        sx, sy = SUB[base]
        cw, ch = -(-w // sx), -(-h // sy)
        y = _padded(rng, h, w, dt, hi, pad)
        if base == "nv12":
            planes = (y, _padded(rng, ch, 2 * cw, dt, hi, pad + 1))
        else:
            planes = (y, _padded(rng, ch, cw, dt, hi, pad + 3), _padded(rng, ch, cw, dt, hi, pad))
    return Frame(format=fmt, planes=planes, width=w, height=h, matrix=matrix, full_range=full_range, pts=0.0,
                 sar=sar)


def rgb_frame(img: np.ndarray, fmt: str = "rgb24") -> Frame:
    h, w, _ = img.shape
    return Frame(format=fmt, planes=(img,), width=w, height=h, matrix="bt601", full_range=True, pts=0.0)
