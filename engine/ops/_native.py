"""Import of the native extension with an actionable error when it was not built."""

from __future__ import annotations

import os

from engine.errors import EngineError

# OpenMP threads of the kernels sleep instead of spinning between calls: on the small (2-core)
# machines this engine targets, spinning workers steal the core from ONNX Runtime, decoding and
# the calling thread (measured: 2-thread preprocess fell below 1-thread speed under load with the
# default policy). Read once when libgomp loads; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load():
    """Return the :mod:`engine._C` module.

    Raises
    ------
    EngineError
        When the extension is missing (run ``python setup.py build_ext --inplace`` or
        ``pip install -e .``).
    """
    try:
        from engine import _C
    except ImportError as e:  # pragma: no cover - depends on the build
        raise EngineError(
            "native extension engine._C is not built: run `python setup.py build_ext --inplace` "
            f"or `pip install -e .` ({e})"
        ) from e
    return _C
