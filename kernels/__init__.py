"""Triton kernels of the engine's operations (``engine.kernels``; sources in the top-level
``kernels/`` folder, mapped onto the package by setup.py).

The third implementation of the math in ``csrc/include/engine/*.h``, after the CPU loops
(:mod:`engine.ops`) and the CUDA kernels (:mod:`engine.ops.cuda`), with the same semantics:

* :func:`preprocess` - fused YUV/RGB planes -> RGB -> resample -> crop/letterbox -> normalise,
  both ``PreprocessSpec.clamp`` modes;
* :func:`masked_mean`, :func:`segment_pool` - token and segment pooling (float64 accumulation);
* :func:`log_mel_project` - ``log(spectrum @ mel_filterbank + 1e-6)`` of the audio front end.

Every wrapper takes torch tensors (CUDA tensors on a GPU; CPU tensors when ``TRITON_INTERPRET=1``
is set before the first call), validates them (:class:`~engine.errors.InputError`) and launches
one kernel. ``triton`` and ``torch`` are imported on the first call, so ``import engine.kernels``
works without them; :func:`available` says whether they are there.
"""

from __future__ import annotations

from ._runtime import available
from .audio import log_mel_project
from .pooling import masked_mean, segment_pool
from .preprocess import preprocess

__all__ = ["available", "log_mel_project", "masked_mean", "preprocess", "segment_pool"]
