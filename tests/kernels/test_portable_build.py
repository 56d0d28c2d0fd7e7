"""The CPU extension's sources must compile where csrc/simd.h turns the x86 SIMD kernels off (Note
[portable SIMD]): an ARM server (AWS Graviton, Ampere), another compiler. On the x86 CI machine
``-DENGINE_NO_CLONES`` selects that configuration (no target clones, no intrinsics, the plain and
vector-extension loops only); where an aarch64 cross compiler is installed the sources are also
compiled for aarch64. Compile-only, every warning an error: a kernel added behind an x86 guard
with a helper used outside it (as sdr_cpu.cpp's `using detail::cvt8` was) fails here instead of
breaking `pip install` on ARM."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "csrc").glob("*.cpp"))
CONFIGS = {  # name: (compiler, extra flags)
    "x86-64-no-clones": (shutil.which("g++"), ["-DENGINE_NO_CLONES"]),
    "aarch64": (shutil.which("aarch64-linux-gnu-g++"), []),
}


def _includes() -> list[str]:
    pybind11 = pytest.importorskip("pybind11")
    return ["-I", str(ROOT / "csrc"), "-I", str(ROOT / "csrc" / "include"),
            "-I", sysconfig.get_paths()["include"], "-I", pybind11.get_include()]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_cpu_sources_compile_without_the_x86_kernels(config):
    cxx, extra = CONFIGS[config]
    if cxx is None:
        pytest.skip(f"no compiler for {config} (aarch64: apt install g++-aarch64-linux-gnu)")
    assert SOURCES, "no csrc/*.cpp found"
    base = [cxx, "-std=c++17", "-fopenmp", "-fsyntax-only", "-Wall", "-Werror", "-Wno-psabi",
            *extra, *_includes()]

    def compile_one(src: Path):
        return src.name, subprocess.run([*base, str(src)], capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [(name, r.stderr[-2000:]) for name, r in pool.map(compile_one, SOURCES) if r.returncode]
    assert not failed, "\n".join(f"{name}:\n{err}" for name, err in failed)
