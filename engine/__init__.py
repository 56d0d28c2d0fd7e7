"""Content moderation inference engine.

``engine.Session`` moderates video, images, audio and text with the models of a Triton-layout
model repository (ONNX Runtime on the CPU by default) and the policies of its ``pipeline.toml``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors  # light: exception classes only

__all__ = ["Session", "Verdict", "Outcome", "PolicyResult", "Evidence", "errors", "__version__"]


def __getattr__(name: str):
    # Lazy: `import engine` stays cheap (no onnxruntime/PyAV import) for the CLI and the kernels.
    if name == "Session":
        from .session import Session

        return Session
    if name in ("Verdict", "Outcome", "PolicyResult", "Evidence"):
        from . import verdict

        return getattr(verdict, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
