"""Triton kernel tests.

Without a CUDA device the kernels run in the Triton interpreter on CPU tensors: TRITON_INTERPRET=1
is set here, before the kernel modules are imported (engine.kernels imports them on the first
call, and triton reads the variable when it decorates a kernel). With a CUDA device the same
tests run compiled on CUDA tensors, plus the larger ``gpu``-marked ones. Also makes the float64
references (tests/kernels) and the GPU test helpers (tests/gpu) importable.
"""

from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.dirname(_HERE)
sys.path[:0] = [_HERE, os.path.join(_TESTS, "kernels"), os.path.join(_TESTS, "gpu")]

from triton_cases import INTERPRETED  # noqa: E402  (sets TRITON_INTERPRET=1 without a GPU)


@pytest.fixture(scope="session")
def device() -> str:
    """Where the tensors of the small tests live: the interpreter's CPU, or the GPU."""
    pytest.importorskip("triton", reason="triton is not installed (pip install 'moderation-engine[dev]')")
    return "cpu" if INTERPRETED else "cuda"
