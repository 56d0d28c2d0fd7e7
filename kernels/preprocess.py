"""Fused preprocessing in Triton: planes of a batch of frames -> one model input tensor.

The same semantics as :func:`engine.ops.preprocess` (CPU) and :func:`engine.ops.cuda.preprocess`
(CUDA), both ``PreprocessSpec.clamp`` modes. The constants come from the C++ headers through
:mod:`engine._C`: tap tables (``resample_taps``, ``resize_geometry``: resample.h), the colour map
(``yuv_to_rgb_map``: colour.h) and the normalisation (``normalize_map``: normalize.h), so this file
holds no second copy of that math. See Note [Triton preprocess] in preprocess_kernel.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from engine.device_staging import upload
from engine.errors import InputError
from engine.ops._native import load as load_native
from engine.ops.cuda import _SUB, _plane_geometry, _plane_layout, batch_planes, check_call
from engine.ops.preprocess import _FILTERS, _MATRICES, _MODES, _PLANES, _YUV, PreprocessSpec

from ._runtime import check_device, device_constant, launch, load, output, pow2

# Pixels x padded column taps one program holds in a [BLOCK, KXP] tile, and its warps: ptxas
# for sm_90 (no GPU needed) puts BLOCK 256 x KXP 16 on 4 warps at 255 registers with 800 bytes
# of spills, 128 x 16 on 8 warps at 218 registers without spills.
_TILE_ELEMENTS = 2048
_TILE_WARPS = 8


@lru_cache(maxsize=64)
def _axis_tables(filter_code: int, mode: int, in_h: int, in_w: int, out_h: int, out_w: int,
                 to_h: int, to_w: int, sar: tuple[int, int] = (1, 1)) -> tuple[np.ndarray, int, int]:
    """The tap tables of both axes on the luma grid, from resample.h, packed for one upload:
    (int32 array of yfirst [out_h], yw [out_h, KY], xfirst [out_w], xw [out_w, KX] with the
    weights as float32 bits, KY, KX).

    ``first`` is -1 for padding samples; windows are shifted inside the image (zero weights fill
    the rest), so every tap of a valid sample indexes a real source row / column.
    """
    native = load_native()
    try:
        (rh, oy), (rw, ox) = native.resize_geometry(mode, in_h, in_w, out_h, out_w, to_h, to_w, *sar)
        yfirst, yw = native.resample_taps(filter_code, in_h, rh, out_h, oy, 1, in_h)
        xfirst, xw = native.resample_taps(filter_code, in_w, rw, out_w, ox, 1, in_w)
    except ValueError as e:
        raise InputError(str(e)) from e
    bits = lambda w: np.ascontiguousarray(w, dtype=np.float32).view(np.int32).ravel()  # noqa: E731
    packed = np.concatenate([yfirst.astype(np.int32), bits(yw), xfirst.astype(np.int32), bits(xw)])
    return packed, yw.shape[1], xw.shape[1]


def _upload_tables(torch: Any, frame_table: list, axis_args: tuple, out_h: int, out_w: int, device: Any):
    """Device views of the per-call frame table (int64 [B, 6], queued from pinned memory) and the
    tap tables of ``_axis_tables(*axis_args)`` (uploaded once per geometry and device): (frames,
    yfirst, yw, xfirst, xw). Note [Triton wrapper uploads]."""
    packed, ky, kx = _axis_tables(*axis_args)
    tables = device_constant(("preprocess taps", axis_args), device, lambda: packed)
    views, at = [], 0
    for n, dtype in ((out_h, torch.int32), (out_h * ky, torch.float32), (out_w, torch.int32), (out_w * kx, torch.float32)):
        views.append(tables[at : at + n].view(dtype))
        at += n
    frames = upload(np.asarray(frame_table, dtype=np.int64).reshape(-1, 6), device)
    return (frames, *views)


def _plane_dtypes(torch: Any, ten: bool) -> tuple:
    # 10-bit samples: torch.uint16, or int16 holding the same bits (values < 1024 read the same)
    return (torch.uint16, torch.int16) if ten else (torch.uint8,)


def _plane(t: Any, where: str, dtypes: tuple, rows: int, pixels: int, ch: int, batched: bool):
    """Validate one plane tensor; returns (tensor, row stride, batch stride) in elements."""
    _, torch = load()
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{where} must be a torch tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise InputError(f"{where}: dtype must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    size = t.element_size()
    row, batch = _plane_layout(where, tuple(t.shape), tuple(s * size for s in t.stride()), size,
                               rows, pixels, ch, batched)
    return t, row // size, batch // size


def _frame_table(frames: Any, format: str, base: str, ten: bool, width: int, height: int):
    """(frame 0's plane tensors, per frame [Y, U, V offsets from them, Y, U, V row strides]).

    One kernel reads every frame, so each frame's planes are addressed from frame 0's: by the
    batch stride for batched planes, by the distance between the allocations for separate ones.
    Offsets and strides are in samples.
    """
    _, torch = load()
    geo = _plane_geometry(base, width, height)
    dtypes = _plane_dtypes(torch, ten)
    per_frame = batch_planes(
        frames, _PLANES[base], format,
        lambda p, where, j, batched: _plane(p, where, dtypes, *geo[j], batched=batched),
        lambda p: isinstance(p, torch.Tensor),
    )
    first = [t for t, _, _ in per_frame[0]] if per_frame else []
    unused = [0] * (3 - len(first))
    rows = []
    for i, planes in enumerate(per_frame):
        offsets = []
        for (t, _, off), t0 in zip(planes, first):
            delta = t.data_ptr() - t0.data_ptr()
            if t.device != t0.device or t.dtype != t0.dtype or delta % t.element_size():
                raise InputError(f"frames[{i}]: planes must share frames[0]'s device, dtype and sample alignment")
            offsets.append(delta // t.element_size() + off)
        rows.append(offsets + unused + [rs for _, rs, _ in planes] + unused)
    return first, rows


def preprocess(
    frames: Sequence[Any] | tuple,
    spec: PreprocessSpec,
    *,
    format: str,
    width: int,
    height: int,
    matrix: str = "bt601",
    full_range: bool = False,
    sar: tuple[int, int] = (1, 1),
    out: Any = None,
) -> Any:
    """Preprocess a batch of frames into one model input tensor with ONE Triton kernel launch.

    For every output pixel (y, x) and output channel c, with chroma replicated onto the luma
    grid and ``convert`` the Y'CbCr -> R'G'B' map of (matrix, range, bit depth) on the 0..255
    scale (exactly :func:`engine.ops.preprocess`)::

        clamp="source":  rgb = clamp(resample(clamp(convert(planes), 0, 255))[y, x], 0, 255)
        clamp="output":  rgb = clamp(convert(resample(planes)[y, x]), 0, 255)
        out[c] = (rgb[c'] * spec.scale - spec.mean[c]) / spec.std[c]

    where c' maps ``spec.channels`` to RGB, and pixels outside the resized image are
    ``spec.pad_value``.

    Parameters
    ----------
    frames : sequence of plane tuples, or tuple of batched planes
        As :func:`engine.ops.cuda.preprocess`: B tuples of planes (Y, U, V; Y, UV for nv12; one
        RGB plane for rgb24/bgr24), or one tuple of planes with a leading batch dimension. Each
        plane is a torch tensor ``(rows, samples)`` or ``(rows, pixels, channels)``, uint8
        (uint16 or int16 for the ``_10`` formats), contiguous columns, any row stride.
    spec : PreprocessSpec
    format : {"i420", "nv12", "i422", "i444", "rgb24", "bgr24"} or a YUV one + ``"_10"``
    width, height : int
        Luma size of every frame (one size and format per launch).
    matrix : {"bt601", "bt709"}
    full_range : bool
    sar : (int, int)
        Sample aspect ratio of the frames, as :func:`engine.ops.cuda.preprocess`.
    out : torch.Tensor, optional
        ``spec.output_shape(B)`` of ``spec.dtype``, C-contiguous, on the planes' device.

    Returns
    -------
    torch.Tensor
        ``out`` (allocated when None). Queued on the current stream like any torch op.

    Raises
    ------
    InputError
        Invalid spec, planes (dtype, shape, strides, device) or ``out``.
    EngineError
        triton or torch is not installed.
    """
    triton, torch = load()
    base, ten = check_call(spec, format, matrix, width, height, sar)
    first, table = _frame_table(frames, format, base, ten, width, height)
    dtype = torch.float16 if spec.dtype == "float16" else torch.float32
    if not first:  # empty batch: nothing to launch
        if out is None:
            raise InputError("an empty batch needs `out` (nothing to allocate it like)")
        return out
    device = first[0].device
    check_device(device, *((f"plane {j}", t) for j, t in enumerate(first)))
    batch = len(table)
    if batch > 65535:  # the batch is grid axis 1, limited to 65535 programs on CUDA
        raise InputError(f"at most 65535 frames per call, got {batch}")
    shape = spec.output_shape(batch)
    out = output(out, shape, dtype, device)

    out_h, out_w = spec.size
    to_h, to_w = spec.resize_to if spec.resize_to is not None else spec.size
    axis_args = (_FILTERS[spec.filter], _MODES[spec.resize], height, width, out_h, out_w, int(to_h), int(to_w),
                 (int(sar[0]), int(sar[1])))
    frame_table, yfirst, yw, xfirst, xw = _upload_tables(torch, table, axis_args, out_h, out_w, device)
    native = load_native()
    gain, nbias = native.normalize_map(float(spec.scale), tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    if base in _YUV:
        y_gain, cb, cr, bias = native.yuv_to_rgb_map(_MATRICES[matrix], bool(full_range), 10 if ten else 8)
    else:  # packed RGB is not converted
        y_gain, cb, cr, bias = 0.0, (0.0,) * 3, (0.0,) * 3, (0.0,) * 3
    _, ky, kx = _axis_tables(*axis_args)
    kxp = pow2(kx)
    block = max(16, min(pow2(out_h * out_w), _TILE_ELEMENTS // kxp))

    from . import preprocess_kernel as pk

    if base in ("rgb24", "bgr24"):
        kind, (y, u, v) = pk.PACKED_RGB, (first[0],) * 3
    elif base == "nv12":
        kind, (y, u, v) = pk.SEMI_PLANAR_YUV, (first[0], first[1], first[1])
    else:
        kind, (y, u, v) = pk.PLANAR_YUV, first
    sub_x, sub_y = _SUB[base]
    grid = (triton.cdiv(out_h * out_w, block), batch)
    launch(
        pk.preprocess_kernel, grid, device, out, y, u, v, frame_table, yfirst, yw, xfirst, xw,
        out_h, out_w, ky, kx,
        y_gain, *cb, *cr, *bias, *gain, *nbias, float(spec.pad_value),
        KIND=kind, SUB_X=sub_x, SUB_Y=sub_y, BGR_IN=base == "bgr24",
        CLAMP_SOURCE=spec.clamp == "source", BGR_OUT=spec.channels == "bgr",
        NHWC=spec.layout == "nhwc", KXP=kxp, BLOCK=block, num_warps=_TILE_WARPS,
    )
    return out
