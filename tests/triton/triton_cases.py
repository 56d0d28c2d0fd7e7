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


def import_kernels():
    """engine.kernels, or an ImportError that says how to fix it (never a skip: a checkout whose
    kernels/ folder is not mapped onto the package must fail, not pass silently)."""
    try:
        import engine.kernels
    except ImportError as e:
        raise ImportError(
            "engine.kernels is not importable: an install maps the kernels/ folder onto it "
            "(setup.py package_dir); run `pip install -e . --no-deps --no-build-isolation` in this checkout"
        ) from e
    return engine.kernels


def to_torch(frame, device: str, *, pitch_pad: int = 7):
    """The planes of a tests/kernels Frame as torch tensors on ``device``, each a view into a
    buffer whose rows are ``pitch_pad`` samples longer, the padding filled with garbage (the
    buffer moves to the device whole, so the padded row stride survives the copy)."""
    import torch

    planes = []
    rng = np.random.default_rng()
    for p in frame.planes:
        a = np.asarray(p)
        a = a.reshape(a.shape[0], -1) if a.ndim == 3 else a  # (rows, pixels, 3) -> (rows, samples)
        buf = rng.integers(0, 256, (a.shape[0], a.shape[1] + pitch_pad)).astype(a.dtype)
        buf[:, : a.shape[1]] = a
        planes.append(torch.from_numpy(buf).to(device)[:, : a.shape[1]])
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
