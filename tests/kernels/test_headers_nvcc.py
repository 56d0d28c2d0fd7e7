"""The csrc/include/engine math headers must compile under nvcc and be callable from device code
(the CUDA kernels of a later issue include them). Compile-only: no GPU needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if os.path.exists("/usr/local/bin/nvcc") else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_headers_compile_under_nvcc(tmp_path):
    src = ROOT / "csrc" / "headers_check.cu"
    headers = sorted((ROOT / "csrc" / "include" / "engine").glob("*.h"))
    text = src.read_text()
    missing = [h.name for h in headers if f'#include "engine/{h.name}"' not in text]
    assert not missing, f"headers_check.cu must include every header: {missing}"
    cmd = [NVCC, "-std=c++17", "-x", "cu", "-c", str(src), "-I", str(ROOT / "csrc" / "include"),
           "-o", str(tmp_path / "headers_check.o"), "-Werror", "all-warnings"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.gpu
@pytest.mark.skipif(NVCC is None or not _has_gpu(), reason="needs nvcc and an NVIDIA GPU")
def test_headers_device_matches_host(tmp_path):
    # same ENGINE_HD functions evaluated on device and host (integers / half bits exact, float
    # math within 1e-5 relative: device FMA contraction and libdevice transcendentals)
    exe = tmp_path / "headers_check"
    cmd = [NVCC, "-std=c++17", "-DENGINE_HEADERS_CHECK_MAIN", "-x", "cu", str(ROOT / "csrc" / "headers_check.cu"),
           "-I", str(ROOT / "csrc" / "include"), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
