"""CUDA tests: make tests/kernels (float64 references, test frames) and this folder importable."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "kernels"))

import pytest


@pytest.fixture(params=["v3", "v2", "v1"])
def preprocess_variant(request, monkeypatch):
    """TEMPORARY A/B of the CUDA preprocess block (csrc/cuda/preprocess_cuda.cu
    preprocess_variant): every preprocess test runs the v2 block with the v3 staging layout (the
    default), the v2 layout (ENGINE_CUDA_PREPROCESS=v2) and the v1 block (=v1), read by the
    extension at each call. The losers are deleted after a GPU run compares them."""
    if request.param == "v3":
        monkeypatch.delenv("ENGINE_CUDA_PREPROCESS", raising=False)
    else:
        monkeypatch.setenv("ENGINE_CUDA_PREPROCESS", request.param)
    return request.param
