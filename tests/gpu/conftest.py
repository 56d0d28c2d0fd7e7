"""CUDA tests: make tests/kernels (float64 references, test frames) and this folder importable."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "kernels"))

import pytest


@pytest.fixture(params=["v2", "v1"])
def preprocess_variant(request, monkeypatch):
    """TEMPORARY A/B of the CUDA preprocess block (csrc/cuda/preprocess_cuda.cu want_v1): every
    preprocess test runs the v2 block (the default) and the v1 block (ENGINE_CUDA_PREPROCESS=v1,
    read by the extension at each call). The loser is deleted after a GPU run compares them."""
    if request.param == "v1":
        monkeypatch.setenv("ENGINE_CUDA_PREPROCESS", "v1")
    else:
        monkeypatch.delenv("ENGINE_CUDA_PREPROCESS", raising=False)
    return request.param
