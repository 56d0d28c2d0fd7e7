"""CUDA kernels (:mod:`engine._C_cuda`): fused preprocessing and pooling on device arrays.

Thin typed wrappers: they accept any ``__cuda_array_interface__`` producer (torch CUDA tensors,
CuPy, Numba, PyCUDA arrays), validate shapes / dtypes / strides (raising
:class:`~engine.errors.InputError`), and pass raw device addresses plus a stream handle to the
extension, which never links torch. Kernels run on ``stream``: by default the producer's current
stream (``torch.cuda.current_stream(device)`` for torch tensors, CuPy's current stream on the
arrays' device for CuPy arrays, else the legacy default stream), asynchronously like any torch
op. The launch waits for every stream the arrays' interfaces name (CUDA Array Interface v3: the
producer may still have work queued there). One call's arrays are on one device: the one their
framework names, else the one the CUDA runtime says owns the address.

Preprocessing semantics (Note [CUDA preprocess: clamp before resampling] in
csrc/cuda/preprocess_kernel.cuh): every source pixel is converted to R'G'B' (chroma replicated to
the luma grid) and clamped to [0, 255] before resampling, i.e. the PyAV ``rgb24`` + resize
pipeline; then ``out[c] = (rgb[c'] * scale - mean[c]) / std[c]``. ``PreprocessSpec.clamp="output"``
clamps the resampled value instead, as the CPU kernel does (Note [CUDA preprocess:
clamp="output"]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.errors import EngineError, InputError
from engine.ops.preprocess import _FILTERS, _FORMATS, _MATRICES, _MODES, _PLANES, _YUV, PreprocessSpec, check_sar

_POOL_MODES = {"mean": 0, "max": 1, "window_max": 2}
_SUB = {"i420": (2, 2), "nv12": (2, 2), "i422": (2, 1), "i444": (1, 1), "rgb24": (1, 1), "bgr24": (1, 1)}
_ITEMSIZE = {"u1": 1, "u2": 2, "f2": 2, "f4": 4, "i8": 8}


def load():
    """Return :mod:`engine._C_cuda`.

    Raises
    ------
    EngineError
        When the CUDA extension was not built (no nvcc at build time, or ``ENGINE_CUDA=0``).
    """
    try:
        from engine import _C_cuda
    except ImportError as e:
        raise EngineError(
            "CUDA extension engine._C_cuda is not built: install the CUDA toolkit (nvcc) and run "
            f"`python setup.py build_ext --inplace` (ENGINE_CUDA=1 makes a missing nvcc an error) ({e})"
        ) from e
    return _C_cuda


def available() -> bool:
    """True when :mod:`engine._C_cuda` was built (a GPU may still be absent at run time)."""
    try:
        load()
    except EngineError:
        return False
    return True


def build_info() -> dict:
    """How :mod:`engine._C_cuda` was built and what the CUDA runtime sees (driver, devices)."""
    return dict(load().build_info())


# ----------------------------------------------------------------------------------------------
# device arrays
# ----------------------------------------------------------------------------------------------
class _Dev:
    """A validated view of one ``__cuda_array_interface__``: address, shape, byte strides."""

    def __init__(self, obj: Any, name: str, writable: bool = False):
        cai = getattr(obj, "__cuda_array_interface__", None)
        if cai is None:
            raise InputError(f"{name} must be a CUDA array (torch CUDA tensor, CuPy array), got {type(obj).__name__}")
        self.obj = obj
        self.name = name
        if cai.get("mask") is not None:  # some elements invalid: no kernel here can honour that
            raise InputError(f"{name}: masked CUDA arrays are not supported")
        self.shape = tuple(int(s) for s in cai["shape"])
        typestr = cai["typestr"]
        if typestr[0] not in "<|=":
            raise InputError(f"{name}: big-endian data is not supported ({typestr})")
        self.kind = typestr[1:]
        self.itemsize = int(typestr[2:])
        self.ptr = int(cai["data"][0])
        if writable and cai["data"][1]:
            raise InputError(f"{name} must be writeable")
        strides = cai.get("strides")
        if strides is None:  # C-contiguous
            st, acc = [], self.itemsize
            for s in reversed(self.shape):
                st.append(acc)
                acc *= s
            strides = tuple(reversed(st))
        self.strides = tuple(int(s) for s in strides)
        # CAI v3: the producer's stream with work on the data still queued (None: none)
        self.stream = cai.get("stream")
        if self.stream is not None and (not isinstance(self.stream, int) or isinstance(self.stream, bool)):
            raise InputError(f"{name}: __cuda_array_interface__ stream must be an int or None, got {self.stream!r}")

    def c_contiguous(self) -> bool:
        acc = self.itemsize
        for s, st in zip(reversed(self.shape), reversed(self.strides)):
            if s != 1 and st != acc:
                return False
            acc *= s
        return True

    def device(self) -> int | None:
        """The device its framework names (torch, CuPy); None for others (Numba, PyCUDA)."""
        dev = getattr(self.obj, "device", None)
        idx = getattr(dev, "index", None)  # torch.device
        if idx is None:
            idx = getattr(dev, "id", None)  # cupy.cuda.Device
        return None if idx is None else int(idx)


def _call_device(devs: Sequence[_Dev]) -> int:
    """The one device every array of a call is on. Arrays whose framework names no device
    (Numba, PyCUDA) are asked of the CUDA runtime, as the CUDA Array Interface advises
    (``cuPointerGetAttribute``); a call may not mix devices (a kernel reading another GPU's
    memory faults, and the fault ends every later CUDA call of the process)."""
    devices = set()
    for d in {id(d): d for d in devs}.values():  # batched planes repeat per frame
        index = d.device()
        if index is None and d.ptr:  # an empty array has no address to ask about
            try:
                index = load().pointer_device(d.ptr)
            except ValueError as e:
                raise InputError(f"{d.name}: {e}") from e
        if index is not None:
            devices.add(index)
    if len(devices) > 1:
        raise InputError(f"the arrays of one call must be on one device, got devices {sorted(devices)}")
    return devices.pop() if devices else 0


def _launch_stream(stream: Any, devs: Sequence[_Dev], device: int) -> int:
    """The stream to launch on (:func:`_stream_handle`), made to wait for the streams the arrays'
    producers name (CUDA Array Interface v3: the consumer orders its work after them)."""
    h = _stream_handle(stream, devs[0].obj, device)
    for producer in {d.stream for d in devs if d.stream is not None}:
        if producer != h and {producer, h} != {0, 1}:  # 0 and 1 both name the legacy default stream
            load().stream_wait(h, producer, device)
    return h


def _stream_handle(stream: Any, sample: Any, device: int) -> int:
    """cudaStream_t as an int: explicit, else the producer framework's current stream, else 0."""
    if stream is not None:
        if isinstance(stream, int) and not isinstance(stream, bool):
            return stream
        for attr in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
            h = getattr(stream, attr, None)
            if isinstance(h, int):
                return h
        raise InputError(f"stream must be an int handle, a torch.cuda.Stream or a cupy Stream, got {stream!r}")
    mod = type(sample).__module__.split(".")[0]
    if mod == "torch":
        import torch

        return int(torch.cuda.current_stream(device).cuda_stream)
    if mod == "cupy":
        import cupy

        return int(cupy.cuda.get_current_stream(device).ptr)  # the arrays' device, not the current one
    return 0


def _empty(sample: Any, shape: tuple, dtype: str, device: int):
    """A new C-contiguous device array like `sample`'s framework (torch or CuPy)."""
    mod = type(sample).__module__.split(".")[0]
    if mod == "torch":
        import torch

        return torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{device}")
    if mod == "cupy":
        import cupy

        with cupy.cuda.Device(device):
            return cupy.empty(shape, dtype=dtype)
    raise InputError("out must be given when the inputs are neither torch tensors nor CuPy arrays")


def _check_out(out: Any, shape: tuple, kind: str) -> _Dev:
    o = _Dev(out, "out", writable=True)
    if o.shape != shape or o.kind != kind:
        raise InputError(f"out must be {shape} {'float16' if kind == 'f2' else 'float32'}, got {o.shape} <{o.kind}")
    if not o.c_contiguous():
        raise InputError("out must be C-contiguous")
    return o


# ----------------------------------------------------------------------------------------------
# preprocessing
# ----------------------------------------------------------------------------------------------
def _plane_geometry(base: str, width: int, height: int) -> list[tuple[int, int, int]]:
    """(rows, pixels, channels) of each plane."""
    if base in ("rgb24", "bgr24"):
        return [(height, width, 3)]
    sx, sy = _SUB[base]
    cw, ch = -(-width // sx), -(-height // sy)
    if base == "nv12":
        return [(height, width, 1), (ch, cw, 2)]
    return [(height, width, 1), (ch, cw, 1), (ch, cw, 1)]


def _plane_layout(where: str, shape: tuple, strides: tuple, itemsize: int, rows: int, pixels: int,
                  ch: int, batched: bool) -> tuple[int, int]:
    """Check one plane's shape and byte strides (optionally with a leading batch dim): returns
    (row stride, batch stride) in bytes. Shared with the Triton wrappers (engine.kernels)."""
    shape, strides = list(shape), list(strides)
    bstride = 0
    if batched:
        if not shape:
            raise InputError(f"{where}: missing batch dimension")
        bstride = strides[0]
        shape, strides = shape[1:], strides[1:]
    if len(shape) == 3:  # (rows, pixels, channels) -> (rows, samples)
        if shape[2] != ch or (strides[2] != itemsize and shape[2] > 1) or (strides[1] != itemsize * ch and shape[1] > 1):
            raise InputError(f"{where}: (rows, pixels, {ch}) planes need contiguous pixels, got shape {tuple(shape)} strides {tuple(strides)}")
        shape, strides = [shape[0], shape[1] * shape[2]], [strides[0], itemsize]
    if len(shape) != 2:
        raise InputError(f"{where}: planes must be 2-D (rows, samples) or 3-D (rows, pixels, channels), got shape {tuple(shape)}")
    if shape[1] > 1 and strides[1] != itemsize:
        raise InputError(f"{where}: columns must be contiguous (stride {strides[1]} != {itemsize})")
    if shape[0] < rows or shape[1] < pixels * ch:
        raise InputError(f"{where}: shape ({shape[0]}, {shape[1]}) smaller than ({rows}, {pixels * ch})")
    if rows > 1 and strides[0] < pixels * ch * itemsize:
        raise InputError(f"{where}: row stride {strides[0]} smaller than a row ({pixels * ch * itemsize} bytes)")
    return strides[0], bstride


def _plane(obj: Any, where: str, kind: str, rows: int, pixels: int, ch: int, batched: bool):
    """Validate one plane (optionally with a leading batch dim); returns (_Dev, row stride, batch stride)."""
    d = _Dev(obj, where)
    if d.kind != kind:
        raise InputError(f"{where}: dtype must be {'uint16' if kind == 'u2' else 'uint8'}, got <{d.kind}")
    return (d, *_plane_layout(where, d.shape, d.strides, d.itemsize, rows, pixels, ch, batched))


def check_call(spec: Any, format: Any, matrix: Any, width: Any, height: Any,
               sar: Any = (1, 1)) -> tuple[str, bool]:
    """Check the arguments of a plane-level preprocess call (this module's and the Triton one in
    engine.kernels); returns (base format, 10-bit)."""
    check_sar(sar, "sar")
    if not isinstance(spec, PreprocessSpec):
        raise InputError(f"spec must be a PreprocessSpec, got {type(spec).__name__}")
    spec.validate()
    if not isinstance(format, str):
        raise InputError(f"format must be a str, got {format!r}")
    base, ten = (format[:-3], True) if format.endswith("_10") else (format, False)
    if base not in _FORMATS or (ten and base not in _YUV):
        raise InputError(f"unsupported format {format!r}")
    if base in _YUV and matrix not in _MATRICES:
        raise InputError(f"matrix must be 'bt601' or 'bt709', got {matrix!r}")
    for v, n in ((width, "width"), (height, "height")):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InputError(f"{n} must be a positive int, got {v!r}")
    return base, ten


def batch_planes(frames: Any, nplanes: int, format: str, check: Any, is_plane: Any) -> list[list[tuple]]:
    """The checked planes of every frame of a batch given as B tuples of planes or as one tuple
    of planes with a leading batch dimension (``is_plane(frames[0])``).

    ``check(plane, where, j, batched)`` validates plane j and returns (handle, row stride, batch
    stride). Returns per frame, per plane: (handle, row stride, offset of the frame in the handle),
    strides and offsets in the unit ``check`` uses.
    """
    frames = list(frames) if not isinstance(frames, tuple) else frames
    if len(frames) > 0 and is_plane(frames[0]):
        if len(frames) != nplanes:
            raise InputError(f"format {format} needs {nplanes} batched planes, got {len(frames)}")
        planes = [check(p, f"planes[{j}]", j, True) for j, p in enumerate(frames)]
        sizes = {h.shape[0] for h, _, _ in planes}
        if len(sizes) != 1:
            raise InputError(f"batched planes disagree on the batch size: {sorted(sizes)}")
        return [[(h, rs, b * bs) for h, rs, bs in planes] for b in range(sizes.pop())]
    per_frame = []
    for i, f in enumerate(frames):
        if not isinstance(f, (tuple, list)) or len(f) != nplanes:
            raise InputError(f"frames[{i}]: format {format} needs a tuple of {nplanes} planes")
        per_frame.append([check(p, f"frames[{i}].planes[{j}]", j, False) for j, p in enumerate(f)])
    return per_frame


def preprocess(
    frames: Sequence[Any],
    spec: PreprocessSpec,
    *,
    format: str,
    width: int,
    height: int,
    matrix: str = "bt601",
    full_range: bool = False,
    sar: tuple[int, int] = (1, 1),
    out: Any = None,
    stream: Any = None,
    force_direct: bool = False,
) -> Any:
    """Preprocess a batch of device frames into one model input tensor with ONE kernel launch.

    For every output pixel (y, x) and output channel c::

        rgb_s  = clamp(M @ (Y, Cb, Cr)[s] + b, 0, 255)     # each SOURCE pixel s; chroma replicated
        rgb    = sum_s wy(y, s_y) wx(x, s_x) rgb_s          # resample (spec.filter, geometry)
        out[c] = (clamp(rgb[c'], 0, 255) * spec.scale - spec.mean[c]) / spec.std[c]

    (``spec.clamp="output"``: ``rgb_s`` not clamped, which equals converting the resampled planes.)

    and padding pixels (letterbox / small resize) are ``spec.pad_value``.

    Parameters
    ----------
    frames : sequence of plane tuples, or tuple of batched planes
        Either B tuples of planes (one tuple per frame: Y, U, V for i420/i422/i444; Y, UV for
        nv12; one RGB plane for rgb24/bgr24), or one tuple of planes with a leading batch
        dimension (e.g. ``(Y[B, H, W], U[B, H/2, W/2], V[B, H/2, W/2])``). Each plane is a CUDA
        array ``(rows, samples)`` or ``(rows, pixels, channels)``, uint8 (uint16 for the ``_10``
        formats), contiguous columns, any row stride (padded pitches are fine).
    spec : PreprocessSpec
    format : {"i420", "nv12", "i422", "i444", "rgb24", "bgr24"} or a YUV one + ``"_10"``
    width, height : int
        Luma size of every frame of the batch (one size and format per launch).
    matrix : {"bt601", "bt709"}
    full_range : bool
    sar : (int, int)
        Sample aspect ratio of the frames (Note [sample aspect ratio]: ``shorter`` and
        ``letterbox`` keep the displayed shape of anamorphic video).
    out : CUDA array, optional
        ``spec.output_shape(B)`` of ``spec.dtype``, C-contiguous; allocated (torch / CuPy, like
        the inputs) when None. Every element is written.
    stream : int, torch.cuda.Stream or cupy Stream, optional
        Default: the current stream of the inputs' framework on their device. The launch waits
        for the streams the arrays' ``__cuda_array_interface__`` names.
    force_direct : bool
        Use the kernel variant without the shared-memory stage (tests).

    Returns
    -------
    CUDA array
        ``out``. The kernel is queued on ``stream``; synchronise before reading on the host.

    Raises
    ------
    InputError
        Invalid spec, planes (dtype, shape, strides), or ``out``; arrays on different devices.
    EngineError
        The CUDA extension is not built; RuntimeError from a CUDA failure (no driver / device).
    """
    base, ten = check_call(spec, format, matrix, width, height, sar)
    kind = "u2" if ten else "u1"
    geo = _plane_geometry(base, width, height)
    per_frame = batch_planes(
        frames, _PLANES[base], format,
        lambda p, where, j, batched: _plane(p, where, kind, *geo[j], batched=batched),
        lambda p: hasattr(p, "__cuda_array_interface__"),
    )
    ptrs = [d.ptr + off for planes in per_frame for d, _, off in planes]
    strides = [rs for planes in per_frame for _, rs, _ in planes]
    batch = len(per_frame)
    sample = per_frame[0][0][0] if per_frame else None
    if sample is None:  # empty batch: nothing to launch
        if out is None:
            raise InputError("an empty batch needs `out` (nothing to allocate it like)")
        return out
    devs = [d for planes in per_frame for d, _, _ in planes]
    shape = spec.output_shape(batch)
    okind = "f2" if spec.dtype == "float16" else "f4"
    if out is None:
        out = _empty(sample.obj, shape, spec.dtype, _call_device(devs))
    o = _check_out(out, shape, okind)
    device = _call_device(devs + [o])
    to_h, to_w = spec.resize_to if spec.resize_to is not None else spec.size
    h = _launch_stream(stream, devs + [o], device)
    try:
        load().preprocess(
            o.ptr, batch, spec.size[0], spec.size[1], spec.layout == "nhwc", okind == "f2",
            _FORMATS[base], 10 if ten else 8, int(width), int(height), _MATRICES.get(matrix, 0),
            bool(full_range), ptrs, strides, _MODES[spec.resize], int(to_h), int(to_w),
            _FILTERS[spec.filter], float(spec.scale), tuple(float(m) for m in spec.mean),
            tuple(float(s) for s in spec.std), spec.channels == "bgr", float(spec.pad_value),
            h, device, bool(force_direct), int(sar[0]), int(sar[1]), spec.clamp == "source",
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    return out


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------
def _f32_input(x: Any, name: str, ndim: int) -> _Dev:
    d = _Dev(x, name)
    if len(d.shape) != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {d.shape}")
    if d.kind != "f4":
        raise InputError(f"{name} must be float32, got <{d.kind}")
    if not d.c_contiguous():
        raise InputError(f"{name} must be C-contiguous")
    return d


def masked_mean(x: Any, mask: Any, normalize: bool = False, *, out: Any = None, stream: Any = None) -> Any:
    """Masked mean over tokens on the GPU (see :func:`engine.ops.pooling.masked_mean`).

    ``out[b] = sum_t mask[b, t] x[b, t] / max(sum_t mask[b, t], 1e-9)``, then with ``normalize``
    ``out[b] /= max(||out[b]||_2, 1e-12)``. float64 accumulation.

    Parameters
    ----------
    x : CUDA array [B, T, D] float32, C-contiguous
    mask : CUDA array [B, T] float32, C-contiguous (convert bool / int masks first)
    normalize : bool
    out : CUDA array [B, D] float32, optional
    stream : optional, as :func:`preprocess`

    Returns
    -------
    CUDA array [B, D] float32
    """
    xd = _f32_input(x, "x", 3)
    md = _f32_input(mask, "mask", 2)
    if md.shape != xd.shape[:2]:
        raise InputError(f"mask shape {md.shape} must equal x.shape[:2] {xd.shape[:2]}")
    B, T, D = xd.shape
    if out is None:
        out = _empty(x, (B, D), "float32", _call_device([xd, md]))
    o = _check_out(out, (B, D), "f4")
    device = _call_device([xd, md, o])
    try:
        load().masked_mean(o.ptr, xd.ptr, md.ptr, B, T, D, bool(normalize), _launch_stream(stream, [xd, md, o], device),
                           device)
    except ValueError as e:
        raise InputError(str(e)) from e
    return out


def segment_pool(x: Any, offsets: Any, mode: str = "mean", window: int = 1, *, out: Any = None, stream: Any = None) -> Any:
    """Pool row segments ``x[offsets[s]:offsets[s+1]]`` on the GPU (see
    :func:`engine.ops.pooling.segment_pool`): ``mean``, ``max`` or ``window_max``.

    Parameters
    ----------
    x : CUDA array [N, D] float32, C-contiguous
    offsets : CUDA array [S + 1] int64
        Non-decreasing within ``[0, N]``; not checked on the host (that would synchronise): the
        kernel clamps them, so bad offsets give wrong segments, never out-of-bounds reads.
    mode : {"mean", "max", "window_max"}
    window : int
    out : CUDA array [S, D] float32, optional
    stream : optional, as :func:`preprocess`

    Returns
    -------
    CUDA array [S, D] float32
    """
    if mode not in _POOL_MODES:
        raise InputError(f"mode must be one of {sorted(_POOL_MODES)}, got {mode!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise InputError(f"window must be a positive int, got {window!r}")
    xd = _f32_input(x, "x", 2)
    od = _Dev(offsets, "offsets")
    if len(od.shape) != 1 or od.shape[0] < 1 or od.kind != "i8" or od.strides[0] != 8:
        raise InputError(f"offsets must be a contiguous int64 [S + 1] CUDA array, got {od.shape} <{od.kind}")
    N, D = xd.shape
    S = od.shape[0] - 1
    if out is None:
        out = _empty(x, (S, D), "float32", _call_device([xd, od]))
    o = _check_out(out, (S, D), "f4")
    device = _call_device([xd, od, o])
    try:
        load().segment_pool(o.ptr, xd.ptr, od.ptr, N, D, S, _POOL_MODES[mode], int(window),
                            _launch_stream(stream, [xd, od, o], device), device)
    except ValueError as e:
        raise InputError(str(e)) from e
    return out
