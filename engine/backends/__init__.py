"""Inference backends: ONNX Runtime (CPU) and scikit-learn; chosen from config.pbtxt."""

from __future__ import annotations

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


def load_backend(model, *, device: str = "cpu", threads: int | None = None) -> Backend:
    """Create the backend for a :class:`engine.repo.ModelEntry`.

    platform "onnxruntime_onnx" / backend "onnxruntime" -> OnnxRuntimeBackend (CPU);
    backend "sklearn" -> SklearnBackend.  ``threads`` = intra-op threads (None = default).
    Only ``device="cpu"`` exists for now.
    """
    if device != "cpu":
        raise ModelError(
            f"device {device!r} is not supported yet: only the CPU backends exist for now "
            "(the GPU backends come later)"
        )
    cfg = model.config
    if cfg.platform == "onnxruntime_onnx" or cfg.backend == "onnxruntime":
        from engine.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, threads=threads)
    if cfg.backend == "sklearn":
        from engine.backends.sklearn import SklearnBackend

        return SklearnBackend(model, threads=threads)
    raise ModelError(
        f"model {model.name!r}: no backend for platform={cfg.platform!r} backend={cfg.backend!r} "
        "(supported: onnxruntime_onnx, sklearn)"
    )


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
    out["tensorrt"] = f"{trt}; engine build logic only (engine.backends.tensorrt), no runtime backend yet"
    out["torch_cuda"] = "not implemented yet"
    return out


__all__ = [
    "available_backends", "Backend", "BaseBackend", "TensorSpec", "TRITON_TO_NUMPY", "check_inputs", "load_backend",
    "run_batched", "specs_from_config", "split_batches",
]
