"""``import engine`` and ``import engine.kernels`` work without triton; the kernels then raise
EngineError. Runs in a subprocess with triton blocked, so it also runs where triton is installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
sys.modules["triton"] = None  # as if triton were not installed
import engine, engine.ops, engine.kernels
from engine.errors import EngineError
assert engine.kernels.available() is False
import torch
try:
    engine.kernels.masked_mean(torch.zeros(1, 2, 3), torch.ones(1, 2))
except EngineError as e:
    assert "triton" in str(e), e
else:
    raise AssertionError("no EngineError without triton")
print("ok")
"""


def test_engine_imports_without_triton():
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
