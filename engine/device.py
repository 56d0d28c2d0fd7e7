"""Where a Session runs: its device and, for the device pipeline, which kernels it launches.

``Session(device=..., kernel_impl=...)`` resolves to a :class:`Placement`:

* ``device="cpu"``, ``kernel_impl=None``: the plain CPU pipeline (numpy arrays, :mod:`engine.ops`).
* ``device="cuda"`` / ``"cuda:N"``: the device pipeline (:mod:`engine.device_pipeline`) on that
  GPU with ``kernel_impl`` ``"cuda"`` (:mod:`engine.ops.cuda`, the ``engine._C_cuda`` extension) or
  ``"triton"`` (:mod:`engine.kernels`). The default is ``"cuda"`` when the extension is built,
  else ``"triton"``: a default until a GPU run measures which is faster (``bench/gpu_bench.py``
  times both).
* ``device="cpu"``, ``kernel_impl="triton"``: the same device pipeline on CPU torch tensors, the
  Triton kernels running in the Triton interpreter (``TRITON_INTERPRET=1`` set before the first
  kernel call). Slow (milliseconds per kernel program); it exists so the device pipeline's code
  is tested where there is no GPU.

``video_decoder`` picks who decodes video for the device pipeline: ``"nvdec"`` (NVIDIA's
PyNvVideoCodec, :mod:`engine.media.nvdec`: NV12 planes already on the device, no staging; streams
it cannot take fall back to the CPU, logged), ``"cpu"`` (FFmpeg, planes staged through pinned
buffers; the default: on an H100, one 6 s 480p H.264 clip sampled at 1 fps took 82-92 ms
through NVDEC, decoder construction and a 6-frame batch fetch included, against 11-17 ms for
FFmpeg, which decodes only the keyframes that sampling needs), or ``"auto"``: ``"nvdec"``
on a GPU when PyNvVideoCodec imports, else ``"cpu"``. The plain CPU pipeline always decodes on
the CPU.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from .backends.torch_cuda import parse_device
from .errors import DeviceUnavailableError, InputError

KERNEL_IMPLS = ("cuda", "triton")
VIDEO_DECODERS = ("auto", "nvdec", "cpu")


@dataclass(frozen=True)
class Placement:
    """A resolved ``(device, kernel_impl)`` pair."""

    device: str  # "cpu" or "cuda:N" (a bare "cuda" is pinned to its index)
    kernel_impl: str | None  # None: the plain CPU pipeline
    video_decoder: str = "cpu"  # "nvdec" | "cpu" ("auto" resolved)

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def device_pipeline(self) -> bool:
        """True when the Session runs its media stages through :mod:`engine.device_pipeline`."""
        return self.kernel_impl is not None


def resolve_placement(device: str, kernel_impl: str | None = None,
                      video_decoder: str = "cpu") -> Placement:
    """Validate a Session's ``device``, ``kernel_impl`` and ``video_decoder``; pick the defaults.

    Raises
    ------
    ModelError
        ``device`` is not ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    InputError
        ``kernel_impl`` is not None, ``"cuda"`` or ``"triton"``, or ``"cuda"`` on the CPU;
        ``video_decoder`` is not one of :data:`VIDEO_DECODERS`, or ``"nvdec"`` without the
        device pipeline.
    DeviceUnavailableError
        No CUDA device (or not that index), or the chosen kernels are not installed, or
        ``kernel_impl="triton"`` on the CPU without ``TRITON_INTERPRET=1``, or
        ``video_decoder="nvdec"`` when PyNvVideoCodec does not import.
    """
    if kernel_impl is not None and kernel_impl not in KERNEL_IMPLS:
        raise InputError(f"kernel_impl {kernel_impl!r}: expected one of {', '.join(KERNEL_IMPLS)} (or None)")
    if video_decoder not in VIDEO_DECODERS:
        raise InputError(f"video_decoder {video_decoder!r}: expected one of {', '.join(VIDEO_DECODERS)}")
    placement = _resolve_kernels(device, kernel_impl)
    if video_decoder == "nvdec":
        if not placement.device_pipeline:
            raise InputError("video_decoder='nvdec' feeds the device pipeline: use a CUDA device "
                             "(or kernel_impl='triton' on the CPU)")
        load_nvdec()
    elif video_decoder == "auto":
        video_decoder = "nvdec" if placement.on_gpu and nvdec_import_error() is None else "cpu"
    return Placement(placement.device, placement.kernel_impl, video_decoder)


def _resolve_kernels(device: str, kernel_impl: str | None) -> Placement:
    """The device and kernel part of :func:`resolve_placement`."""
    kind, index = parse_device(device)
    if kind == "cpu":
        if kernel_impl == "cuda":
            raise InputError("kernel_impl='cuda' needs a CUDA device; on the CPU only 'triton' "
                             "(through the Triton interpreter) or None (the CPU pipeline)")
        if kernel_impl == "triton":
            _require_triton()
            if os.environ.get("TRITON_INTERPRET") != "1":
                raise DeviceUnavailableError(
                    "device='cpu' with kernel_impl='triton' runs the Triton kernels in the interpreter: "
                    "set TRITON_INTERPRET=1 before the first kernel call")
        return Placement("cpu", kernel_impl)
    gpus = _cuda_device_count()
    if index >= gpus:
        raise DeviceUnavailableError(
            f"device {device!r}: " + ("no CUDA device is visible to torch" if gpus == 0 else
                                      f"only {gpus} CUDA device(s) are visible to torch"))
    if kernel_impl is None:
        kernel_impl = default_kernel_impl()
    elif kernel_impl == "cuda":
        _require_cuda_extension()
    else:
        _require_triton()
    return Placement(f"cuda:{index}", kernel_impl)


def default_kernel_impl() -> str:
    """``"cuda"`` when ``engine._C_cuda`` imports, else ``"triton"`` when triton is installed.

    Measured (``bench/baselines/h100/``, NVIDIA H100, 2026-11-26): the CUDA kernels are the
    faster ones: fused preprocessing 3.2-4.5x the Triton kernel at batch 32 (480p-1080p), pooling
    1.15-8.4x; the Triton kernels stay the fallback without the extension.
    """
    from .ops import cuda as cuda_ops

    if cuda_ops.available():
        return "cuda"
    _require_triton()
    return "triton"


def kernel_ops(kernel_impl: str) -> ModuleType:
    """The module whose ``preprocess`` / ``masked_mean`` / ``segment_pool`` the device pipeline
    calls: :mod:`engine.ops.cuda` or :mod:`engine.kernels` (the same signatures)."""
    if kernel_impl == "cuda":
        from .ops import cuda

        return cuda
    if kernel_impl == "triton":
        from . import kernels

        return kernels
    raise InputError(f"kernel_impl {kernel_impl!r}: expected one of {', '.join(KERNEL_IMPLS)}")


def load_nvdec() -> ModuleType:
    """The PyNvVideoCodec module; DeviceUnavailableError when it does not import (not installed,
    or no NVIDIA driver: its ``__init__`` raises then)."""
    reason = nvdec_import_error()
    if reason is not None:
        raise DeviceUnavailableError(f"video_decoder='nvdec' needs PyNvVideoCodec: {reason}")
    return importlib.import_module("PyNvVideoCodec")


def nvdec_import_error() -> str | None:
    """Why PyNvVideoCodec does not import, or None when it does."""
    try:
        importlib.import_module("PyNvVideoCodec")
    except ImportError:
        return "not installed"
    except Exception as e:  # noqa: BLE001 - its __init__ raises RuntimeError without a driver
        return f"import failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def video_decode_note(placement: Placement) -> str:
    """Where the device pipeline's video is decoded, as a log line."""
    if placement.video_decoder == "nvdec":
        return ("video decoded by NVDEC (PyNvVideoCodec) into device NV12 planes when the stream "
                "qualifies, else by FFmpeg on the CPU")
    reason = (nvdec_import_error() or "video_decoder='cpu'") if placement.on_gpu else "not on a GPU"
    return f"video decoded by FFmpeg on the CPU, planes staged through pinned buffers (NVDEC: {reason})"


def device_info() -> dict[str, str]:
    """What the device pipeline can use on this machine, one line each (``engine info``)."""
    from . import kernels
    from .ops import cuda as cuda_ops

    has_cuda, has_triton = cuda_ops.available(), kernels.available()
    info = {"cuda devices": str(_cuda_device_count())}
    info["kernel_impl cuda"] = "engine._C_cuda built" if has_cuda else "engine._C_cuda not built"
    if has_triton:
        import triton

        info["kernel_impl triton"] = f"triton {triton.__version__}"
    else:
        info["kernel_impl triton"] = "triton or torch not installed"
    if has_cuda or has_triton:
        info["kernel_impl default on a GPU"] = default_kernel_impl()
    reason = nvdec_import_error()
    info["video_decoder nvdec"] = "PyNvVideoCodec imports" if reason is None else f"unavailable: PyNvVideoCodec {reason}"
    return info


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _require_cuda_extension() -> None:
    from .ops import cuda as cuda_ops

    if not cuda_ops.available():
        raise DeviceUnavailableError("kernel_impl='cuda' needs engine._C_cuda, which is not built "
                                     "(install the CUDA toolkit and rebuild, or use kernel_impl='triton')")


def _require_triton() -> None:
    from . import kernels

    if not kernels.available():
        raise DeviceUnavailableError("kernel_impl='triton' needs triton and torch "
                                     "(pip install 'moderation-engine[dev]')")
