"""Fused image/video preprocessing: resize + colour conversion + crop + normalise in one pass.

The native kernel reads the decoder's planes directly (I420, NV12, I422, I444, RGB24, BGR24 and
the 10-bit ``_10`` variants, with padded row strides), resamples every plane straight onto the
output grid, converts only the output pixels to RGB and writes the normalised tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.ops._native import load

_FORMATS = {"i420": 0, "nv12": 1, "i422": 2, "i444": 3, "rgb24": 4, "bgr24": 5}
_YUV = {"i420", "nv12", "i422", "i444"}
_MATRICES = {"bt601": 0, "bt709": 1}
_MODES = {"stretch": 0, "shorter": 1, "letterbox": 2}
_FILTERS = {"antialias": 0, "bilinear": 1}
_PLANES = {"i420": 3, "nv12": 2, "i422": 3, "i444": 3, "rgb24": 1, "bgr24": 1}


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model wants: output size, resize geometry, filter, normalisation, layout.

    Attributes
    ----------
    size : (H, W)
        Spatial size of the output tensor.
    resize : {"stretch", "shorter", "letterbox"}
        ``stretch``: resize to ``resize_to`` exactly; ``shorter``: shorter side to
        ``resize_to[0]`` keeping the aspect ratio (longer side ``floor(S * long / short)``, as
        torchvision ``Resize``); ``letterbox``: fit inside ``size`` keeping the aspect ratio,
        the rest filled with ``pad_value``.
    resize_to : (H, W) or None
        Resize target for ``stretch`` / ``shorter`` (``(S, S)``); ``None`` means ``size``.
    crop : {"center"}
        After ``stretch`` / ``shorter``, centre crop to ``size`` (offset
        ``round((resized - size) / 2)`` as torchvision ``CenterCrop``; a resized side smaller
        than ``size`` is centred and padded with ``pad_value``).
    filter : {"antialias", "bilinear"}
        ``antialias`` = ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)``
        = PIL ``BILINEAR``; ``bilinear`` = half-pixel bilinear without antialias
        (OpenCV ``INTER_LINEAR``, torch ``align_corners=False``).
    scale, mean, std : float, 3 floats, 3 floats
        ``out[c] = (clamp(rgb[c], 0, 255) * scale - mean[c]) / std[c]``; ``mean`` and ``std`` are
        in the output channel order.
    channels : {"rgb", "bgr"}
    layout : {"nchw", "nhwc"}
    dtype : {"float32", "float16"}
    pad_value : float
        Value of padding pixels, in output units (after normalisation).
    clamp : {"source", "output"}
        Where RGB is clamped to [0, 255]. ``source`` (default): each converted source pixel,
        before resampling, exactly as a pipeline that decodes to RGB and then resizes (PyAV
        rgb24 + torch/PIL): each source row is converted and clamped once, then the three RGB
        planes are resampled. ``output``: the planes are resampled and only the output pixels
        converted and clamped - up to ~19 levels off an RGB pipeline next to out-of-gamut
        pixels (saturated edges of limited-range 4:2:0 video). See csrc Note [clamp before
        resampling].
    """

    size: tuple[int, int]
    resize: str = "shorter"
    resize_to: tuple[int, int] | None = None
    crop: str = "center"
    filter: str = "antialias"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "rgb"
    layout: str = "nchw"
    dtype: str = "float32"
    pad_value: float = 0.0
    clamp: str = "source"

    def validate(self) -> None:
        """Raise :class:`InputError` when a field is out of its domain."""
        _check_hw(self.size, "size")
        if self.resize not in _MODES:
            raise InputError(f"PreprocessSpec.resize must be one of {sorted(_MODES)}, got {self.resize!r}")
        if self.resize_to is not None:
            _check_hw(self.resize_to, "resize_to")
        if self.crop != "center":
            raise InputError(f"PreprocessSpec.crop must be 'center', got {self.crop!r}")
        if self.filter not in _FILTERS:
            raise InputError(f"PreprocessSpec.filter must be one of {sorted(_FILTERS)}, got {self.filter!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                raise InputError(f"PreprocessSpec.{name} must be 3 finite numbers, got {v!r}")
        if any(s == 0 for s in self.std):
            raise InputError(f"PreprocessSpec.std must be non-zero, got {self.std!r}")
        if not math.isfinite(self.scale):
            raise InputError(f"PreprocessSpec.scale must be finite, got {self.scale!r}")
        if self.channels not in ("rgb", "bgr"):
            raise InputError(f"PreprocessSpec.channels must be 'rgb' or 'bgr', got {self.channels!r}")
        if self.layout not in ("nchw", "nhwc"):
            raise InputError(f"PreprocessSpec.layout must be 'nchw' or 'nhwc', got {self.layout!r}")
        if self.dtype not in ("float32", "float16"):
            raise InputError(f"PreprocessSpec.dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if self.clamp not in ("source", "output"):
            raise InputError(f"PreprocessSpec.clamp must be 'source' or 'output', got {self.clamp!r}")

    def output_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of the output tensor for ``batch`` frames."""
        h, w = self.size
        return (batch, 3, h, w) if self.layout == "nchw" else (batch, h, w, 3)


def _check_hw(v: Any, name: str) -> None:
    ok = (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0 for x in v)
    )
    if not ok:
        raise InputError(f"PreprocessSpec.{name} must be two positive ints (H, W), got {v!r}")


def _plane_2d(p: Any, dtype: np.dtype, where: str) -> np.ndarray:
    a = np.asarray(p)
    if a.dtype != dtype:
        raise InputError(f"{where}: dtype must be {dtype}, got {a.dtype}")
    if a.ndim == 3:  # (rows, pixels, channels) -> (rows, samples); a view when it can be
        if a.strides[2] != a.itemsize or a.strides[1] != a.itemsize * a.shape[2]:
            a = np.ascontiguousarray(a)
        a = a.reshape(a.shape[0], a.shape[1] * a.shape[2])
    elif a.ndim != 2:
        raise InputError(f"{where}: planes must be 2-D (or 3-D interleaved), got ndim={a.ndim}")
    if a.shape[1] > 1 and a.strides[1] != a.itemsize or a.strides[0] < 0:
        a = np.ascontiguousarray(a)  # e.g. rotated / flipped views
    if a.shape[1] == 1 and a.strides[1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def check_sar(sar: Any, where: str) -> tuple[int, int]:
    """A sample aspect ratio ``(num, den)``, each an int in [1, 65535] (Note [sample aspect ratio])."""
    try:
        num, den = sar
    except (TypeError, ValueError):
        raise InputError(f"{where}: sar must be (num, den), got {sar!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= 65535 for v in (num, den)):
        raise InputError(f"{where}: sar terms must be ints in [1, 65535], got {sar!r}")
    return int(num), int(den)


def _frame_tuple(f: Any, where: str, matrices: dict[str, int] = _MATRICES) -> tuple:
    """The native frame tuple of a Frame-like ``f`` (frame_args.h), checked; errors name ``where``."""
    try:
        fmt, planes, width, height = f.format, f.planes, f.width, f.height
    except AttributeError as e:
        raise InputError(f"{where}: not a Frame ({e})") from e
    if not isinstance(fmt, str):
        raise InputError(f"{where}: format must be a str, got {fmt!r}")
    base, ten = (fmt[:-3], True) if fmt.endswith("_10") else (fmt, False)
    if base not in _FORMATS or (ten and base not in _YUV):
        raise InputError(f"{where}: unsupported format {fmt!r}")
    matrix = getattr(f, "matrix", "bt601")
    if base in _YUV and matrix not in matrices:
        raise InputError(f"{where}: matrix must be one of {sorted(matrices)}, got {matrix!r}")
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x > 0 for x in (width, height)):
        raise InputError(f"{where}: width/height must be positive ints, got {width!r}x{height!r}")
    if len(planes) != _PLANES[base]:
        raise InputError(f"{where}: format {fmt} needs {_PLANES[base]} planes, got {len(planes)}")
    dtype = np.dtype(np.uint16 if ten else np.uint8)
    arrs = tuple(_plane_2d(p, dtype, f"{where}.planes[{j}]") for j, p in enumerate(planes))
    return (
        _FORMATS[base],
        10 if ten else 8,
        int(width),
        int(height),
        matrices.get(matrix, 0),
        bool(getattr(f, "full_range", False)),
        arrs,
        check_sar(getattr(f, "sar", (1, 1)), where),
    )


def preprocess(
    frames: Sequence[Any],
    spec: PreprocessSpec,
    *,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Preprocess a batch of frames into one model input tensor in a single native pass.

    For every output pixel (y, x) and output channel c, with chroma replicated onto the luma
    grid and ``convert`` the stream's Y'CbCr -> R'G'B' (matrix, range, bit depth; 0..255 scale)::

        clamp="source":  rgb = clamp(resample(clamp(convert(planes), 0, 255))[y, x], 0, 255)
        clamp="output":  rgb = clamp(convert(resample(planes)[y, x]), 0, 255)
        out[c] = (rgb[c'] * spec.scale - spec.mean[c]) / spec.std[c]

    (both in one pass over the source: "source" converts each source row once and resamples
    RGB, "output" resamples the planes straight to the output grid)

    where c' maps the output channel order (``spec.channels``) to RGB, and pixels outside the
    resized image (letterbox) are ``spec.pad_value``.

    Parameters
    ----------
    frames : sequence of Frame
        Frames (any objects with ``format``, ``planes``, ``width``, ``height``, ``matrix``,
        ``full_range``). Sizes and formats may differ within a batch. Planes with
        non-contiguous columns (e.g. rotated views) are copied first.
    spec : PreprocessSpec
    out : ndarray, optional
        Output buffer, ``[B, 3, H, W]`` (nchw) or ``[B, H, W, 3]`` (nhwc), C-contiguous,
        dtype ``spec.dtype``. Every element is overwritten. Allocated when ``None``.
    threads : int, optional
        OpenMP threads (default: all cores). Parallel over (frame, block of output rows).

    Returns
    -------
    ndarray
        ``out``, shape ``spec.output_shape(len(frames))``.

    Raises
    ------
    InputError
        Invalid spec, frame (format, dtype, plane shapes) or ``out`` buffer.
    """
    if not isinstance(spec, PreprocessSpec):
        raise InputError(f"spec must be a PreprocessSpec, got {type(spec).__name__}")
    spec.validate()
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise InputError(f"threads must be a positive int or None, got {threads!r}")
    frames = list(frames)
    shape = spec.output_shape(len(frames))
    dtype = np.dtype(spec.dtype)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    else:
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
            got = (getattr(out, "shape", None), getattr(out, "dtype", None))
            raise InputError(f"out must be an ndarray {shape} {dtype}, got {got}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InputError("out must be C-contiguous and writeable")
    if not frames:
        return out
    tuples = [_frame_tuple(f, f"frames[{i}]") for i, f in enumerate(frames)]
    mode = _MODES[spec.resize]
    to_h, to_w = spec.resize_to if spec.resize_to is not None else spec.size
    try:
        load().preprocess(
            out,
            tuples,
            mode,
            int(to_h),
            int(to_w),
            _FILTERS[spec.filter],
            float(spec.scale),
            tuple(float(m) for m in spec.mean),
            tuple(float(s) for s in spec.std),
            spec.channels == "bgr",
            spec.layout == "nhwc",
            float(spec.pad_value),
            spec.clamp == "source",
            int(threads or 0),
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    return out


def build_info() -> dict:
    """How :mod:`engine._C` was built (compiler, OpenMP, SIMD compiled / detected, CUDA)."""
    return dict(load().build_info())
