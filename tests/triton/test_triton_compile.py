"""The Triton kernels compile to cubin for sm_90 and sm_80 on a machine without a GPU (see
compile_kernels.py): the interpreter runs the kernels' Python, not the compiler."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from triton_cases import import_kernels

pytest.importorskip("triton")
import_kernels()


def test_kernels_compile_for_hopper_and_ampere(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from an earlier run's cache
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # triton 3.9's default, stated (it warns otherwise)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_kernels.py")
    r = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "bytes of cubin" in ln]
    assert len(lines) == 16, r.stdout  # 8 variants x 2 targets
