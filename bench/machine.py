"""What a benchmark ran on: CPU, cores, memory, GPUs and driver, library versions, engine build."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

# distribution names whose versions change the numbers
PACKAGES = ("moderation-engine", "numpy", "onnxruntime", "av", "torch", "opencv-python-headless",
            "triton", "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def torch_gpus() -> list[dict]:
    """CUDA devices as torch sees them (no driver version: torch does not report it)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [{"name": torch.cuda.get_device_name(i), "driver": None,
             "memory": f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.1f} GiB",
             "cuda": torch.version.cuda} for i in range(torch.cuda.device_count())]


def gpus() -> list[dict]:
    """GPUs from nvidia-smi (name, driver, memory), else from torch; none when neither sees one."""
    if shutil.which("nvidia-smi") is None:
        return torch_gpus()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return torch_gpus()
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) >= 3]


def versions() -> dict[str, str | None]:
    found = {}
    for dist in PACKAGES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def engine_build() -> dict:
    try:
        from engine.ops import build_info
        return build_info()
    except Exception as e:  # the description must never stop a run; say why it is missing
        return {"error": f"{type(e).__name__}: {e}"}


def describe() -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "engine_build": engine_build(),
    }
