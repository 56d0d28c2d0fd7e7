"""What every Triton wrapper shares: the lazy import of triton/torch and the tensor checks."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from engine.errors import EngineError, InputError


def load() -> tuple[Any, Any]:
    """Return ``(triton, torch)``, imported on first use so that ``import engine`` never needs them.

    Raises
    ------
    EngineError
        When triton or torch is not installed.
    """
    try:
        import torch
        import triton
    except ImportError as e:
        raise EngineError(
            "the Triton kernels need `triton` and `torch` (pip install 'moderation-engine[dev]' "
            f"after the pinned torch) ({e})"
        ) from e
    return triton, torch


def available() -> bool:
    """True when triton and torch are installed (a GPU, or ``TRITON_INTERPRET=1``, is still
    needed to run); imports neither."""
    return all(importlib.util.find_spec(name) is not None for name in ("triton", "torch"))


def check_tensor(t: Any, name: str, dtypes: tuple, ndim: tuple[int, ...]) -> Any:
    """``t`` when it is a torch tensor of one of ``dtypes`` with one of the ranks ``ndim``."""
    _, torch = load()
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if t.dim() not in ndim:
        raise InputError(f"{name} must be {' or '.join(f'{n}-D' for n in ndim)}, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise InputError(f"{name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    return t


def check_device(device: Any, *named: tuple[str, Any]) -> None:
    """Every tensor of ``named`` on ``device``, and a device the kernels can run on: CUDA, or the
    CPU under the Triton interpreter (``TRITON_INTERPRET=1``, read when triton compiles a kernel)."""
    for name, t in named:
        if t.device != device:
            raise InputError(f"{name} is on {t.device}, the inputs on {device}")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError("CPU tensors run only under the Triton interpreter: set TRITON_INTERPRET=1 "
                         "before the first kernel call, or pass CUDA tensors")


def output(out: Any, shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """``out`` validated (shape, dtype, device, C-contiguous), or a new tensor when it is None."""
    _, torch = load()
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != dtype:
        got = (tuple(getattr(out, "shape", ())), getattr(out, "dtype", type(out).__name__))
        raise InputError(f"out must be a {dtype} tensor of shape {shape}, got {got}")
    if out.device != device:
        raise InputError(f"out is on {out.device}, the inputs on {device}")
    if not out.is_contiguous():
        raise InputError("out must be C-contiguous")
    return out


def pow2(n: int) -> int:
    """Smallest power of two >= n (block sizes of tl.arange must be powers of two)."""
    return 1 << max(int(n) - 1, 0).bit_length()


# Note [Triton wrapper uploads]
# A pageable host-to-device copy makes the host wait for the stream (torch's memcpy_and_sync),
# which would hold every caller until the queued GPU work has run. So tables that depend only on
# the geometry (tap tables, the mel filterbank) are uploaded once per device and kept
# (:func:`device_constant`), and per-call tables go through pinned memory, queued on the stream
# (:func:`engine.device_staging.upload`).
_CONSTANTS: OrderedDict = OrderedDict()  # (key, device) -> device tensor, least recently used first
_CONSTANTS_LOCK = threading.Lock()
_MAX_CONSTANTS = 256


def device_constant(key: Any, device: Any, make: Callable[[], np.ndarray]) -> Any:
    """``make()`` as a tensor on ``device``, uploaded on first use of ``key`` there and kept
    (Note [Triton wrapper uploads]). The first upload waits for it to land, so any stream may
    read the tensor; each use is recorded on the caller's stream, so an evicted tensor's memory
    is reused only after the work reading it."""
    _, torch = load()
    with _CONSTANTS_LOCK:
        t = _CONSTANTS.get((key, device))
        if t is not None:
            _CONSTANTS.move_to_end((key, device))
    if t is None:  # uploaded outside the lock: the copy waits for the caller's stream
        made = torch.from_numpy(np.ascontiguousarray(make())).to(device)
        with _CONSTANTS_LOCK:
            t = _CONSTANTS.setdefault((key, device), made)  # a concurrent first use may have won
            if len(_CONSTANTS) > _MAX_CONSTANTS:
                _CONSTANTS.popitem(last=False)
    if t.is_cuda:
        t.record_stream(torch.cuda.current_stream(t.device))
    return t


# One launch at a time in the process: the Triton interpreter keeps its grid index and its patch
# of triton.language in process-wide state (concurrent item workers' launches broke each other),
# and Triton's first-call compilation is not documented as thread-safe. A launch only queues the
# kernel on a GPU, so holding the lock costs the launch's host time.
_LAUNCH_LOCK = threading.Lock()


def launch(kernel: Any, grid: tuple, device: Any, *args: Any, **meta: Any) -> None:
    """``kernel[grid](*args, **meta)`` on ``device``: Triton launches on the current device's
    current stream, and a worker thread's current device is 0 whatever the tensors' device."""
    _, torch = load()
    scope = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with _LAUNCH_LOCK, scope:
        kernel[grid](*args, **meta)
