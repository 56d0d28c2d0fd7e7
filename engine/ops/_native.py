"""Import of the native extension with an actionable error when it was not built."""

from __future__ import annotations

from engine.errors import EngineError


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
