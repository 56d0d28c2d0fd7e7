"""CUDA tests: make tests/kernels (float64 references, test frames) and this folder importable."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "kernels"))
