"""Inference backends: ONNX Runtime (CPU), torch (CPU/CUDA), TensorRT (CUDA) and scikit-learn.

config.pbtxt says what a model is (ONNX or scikit-learn); the pipeline's per-model ``backend``
choice says which engine runs an ONNX model (:func:`load_backend`).
"""

from __future__ import annotations

import logging

from engine.backends.base import (
    Backend,
    BaseBackend,
    TensorSpec,
    TRITON_TO_NUMPY,
    check_inputs,
    run_batched,
    specs_from_config,
    split_batches,
)
from engine.errors import ModelError

log = logging.getLogger(__name__)


#: what a pipeline may ask for per model (engine.pipeline validates against this)
BACKEND_CHOICES = ("auto", "onnxruntime", "torch", "tensorrt")


def load_backend(model, *, device: str = "cpu", threads: int | None = None, backend: str = "auto") -> Backend:
    """Create the backend for a :class:`engine.repo.ModelEntry`.

    ``backend`` is one of :data:`BACKEND_CHOICES`; ``auto`` resolves with
    :func:`resolve_backend` (TensorRT, then torch CUDA on a CUDA device, else ONNX Runtime).
    ONNX models run on "onnxruntime" (CPU only), "torch" (CPU or CUDA) or "tensorrt" (CUDA);
    config.pbtxt ``backend: "sklearn"`` models always run on the sklearn backend, on the CPU.
    ``threads`` = intra-op threads (None = the library default).
    """
    from engine.backends.torch_cuda import parse_device

    if backend not in BACKEND_CHOICES:
        raise ModelError(f"model {model.name!r}: backend {backend!r} is not one of {', '.join(BACKEND_CHOICES)}")
    kind, _ = parse_device(device)
    cfg = model.config
    if cfg.backend == "sklearn":
        if backend != "auto":
            raise ModelError(f"model {model.name!r} is a scikit-learn model: it runs on the sklearn "
                             f"backend only, not {backend!r}")
        # a CPU model whatever the device: a GPU session still needs its text classifier
        from engine.backends.sklearn import SklearnBackend

        return SklearnBackend(model, threads=threads)
    if not (cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime"):
        raise ModelError(
            f"model {model.name!r}: no backend for platform={cfg.platform!r} backend={cfg.backend!r} "
            "(supported: onnxruntime_onnx, sklearn)"
        )
    choice = resolve_backend(backend, kind)
    if choice == "onnxruntime":
        if kind != "cpu" and backend == "onnxruntime":
            raise ModelError(f"model {model.name!r}: the ONNX Runtime backend runs on the CPU only, "
                             f"not on {device!r}")
        from engine.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, threads=threads)
    if choice == "torch":
        from engine.backends.torch_backend import TorchBackend

        return TorchBackend(model, device=device, threads=threads)
    if kind != "cuda":
        raise ModelError(f"model {model.name!r}: the TensorRT backend needs a CUDA device, not {device!r}")
    return _tensorrt_backend_class()(model, device=device, threads=threads)


def _tensorrt_backend_class():
    try:
        from engine.backends.tensorrt.runtime import TensorRTBackend
    except ImportError as e:
        raise ModelError(f"the TensorRT runtime is unavailable ({e})") from None
    return TensorRTBackend


def _cuda_usable(what: str) -> bool:
    """Whether ``what`` ("tensorrt" | "torch") can run on a GPU in this process."""
    try:
        if what == "tensorrt":
            import tensorrt  # noqa: F401

            _tensorrt_backend_class()
            return True
        import torch

        return bool(torch.cuda.is_available())
    except (ImportError, ModelError):
        return False


def resolve_backend(choice: str, device_kind: str) -> str:
    """``auto`` -> "tensorrt" when TensorRT and its runtime import and the device is CUDA, else
    "torch" when torch.cuda is available and the device is CUDA, else "onnxruntime" (logged when
    a CUDA device ends up on the CPU). Any other choice is returned as is."""
    if choice != "auto":
        return choice
    if device_kind == "cuda":
        for name in ("tensorrt", "torch"):
            if _cuda_usable(name):
                return name
        log.warning("backend auto on a CUDA device: neither TensorRT nor torch CUDA is usable; "
                    "falling back to ONNX Runtime on the CPU")
    return "onnxruntime"


def available_backends() -> dict[str, str]:
    """Backends this installation can run, with their version or why they are missing."""
    out: dict[str, str] = {}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = f"{ort.__version__} ({', '.join(ort.get_available_providers())})"
    except ImportError as e:  # pragma: no cover - a core dependency
        out["onnxruntime"] = f"unavailable: {e}"
    try:
        import sklearn

        out["sklearn"] = sklearn.__version__
    except ImportError as e:  # pragma: no cover - a core dependency
        out["sklearn"] = f"unavailable: {e}"
    try:
        import tensorrt

        trt = f"{tensorrt.__version__} installed"
    except ImportError:
        trt = "not installed"
    try:
        _tensorrt_backend_class()
        runtime = "runtime backend present"
    except ModelError:
        runtime = "no runtime backend yet (engine build logic only)"
    out["tensorrt"] = f"{trt}; {runtime}"
    out["torch"] = _torch_status()
    return out


def _torch_status() -> str:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - installed by scripts/setup.sh
        return f"unavailable: {e}"
    try:
        from engine.backends.onnx_to_torch import converter
        from engine.backends.torchvision_placeholder import using_placeholder

        converter()
        tv = "torchvision placeholder (no NMS/RoiAlign)" if using_placeholder() else "torchvision"
        o2t = f"onnx2torch with {tv}"
    except ModelError as e:
        return f"{torch.__version__}; cannot convert ONNX models: {e}"
    cuda = (f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available()
            else "CPU only")
    return f"{torch.__version__} ({cuda}); {o2t}"


__all__ = [
    "available_backends", "BACKEND_CHOICES", "resolve_backend", "Backend", "BaseBackend", "TensorSpec", "TRITON_TO_NUMPY", "check_inputs", "load_backend",
    "run_batched", "specs_from_config", "split_batches",
]
