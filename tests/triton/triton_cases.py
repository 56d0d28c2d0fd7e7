"""Shared by the Triton tests: interpreter set-up, plane conversion, level comparison."""

from __future__ import annotations

import os

import numpy as np
import pytest


def _cuda_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Must run before engine.kernels imports its kernel modules (first call): triton decides between
# the interpreter and the compiler when it decorates a kernel.
if "TRITON_INTERPRET" not in os.environ and not _cuda_present():
    os.environ["TRITON_INTERPRET"] = "1"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"



def gpu_only(test):
    """Marks a test of the compiled kernels on a real GPU (skipped under the interpreter)."""
    test = pytest.mark.skipif(INTERPRETED or not _cuda_present(), reason="needs a CUDA device (compiled Triton)")(test)
    return pytest.mark.gpu(test)


def to_torch(frame, device: str, *, pitch_pad: int = 0):
    """The planes of a tests/kernels Frame as torch tensors on ``device``: the numpy views keep
    their padded row strides; ``pitch_pad`` > 0 re-pads rows with garbage first."""
    import torch

    planes = []
    rng = np.random.default_rng(5)
    for p in frame.planes:
        a = np.asarray(p)
        a = a.reshape(a.shape[0], -1) if a.ndim == 3 else a
        if pitch_pad:
            buf = rng.integers(0, 256, (a.shape[0], a.shape[1] + pitch_pad)).astype(a.dtype)
            buf[:, : a.shape[1]] = a
            a = buf[:, : a.shape[1]]
        t = torch.from_numpy(a)
        planes.append(t if device == "cpu" else t.to(device))
    return tuple(planes)


def batched_planes(planes, pitch_pad: int):
    """Stack same-shaped 2-D planes into one (B, rows, samples) view of a buffer whose rows are
    ``pitch_pad`` samples longer and whose padding holds garbage."""
    import torch

    b, (rows, cols) = len(planes), planes[0].shape
    buf = torch.randint(0, 256, (b, rows, cols + pitch_pad), dtype=torch.int32).to(planes[0].dtype)
    buf = buf.to(planes[0].device)
    buf[:, :, :cols] = torch.stack(list(planes))
    return buf[:, :, :cols]
