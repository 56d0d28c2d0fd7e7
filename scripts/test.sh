#!/usr/bin/env bash
# The test suite: install, fetch the models, then run every test (CUDA sources are compiled
# with nvcc by the test suite when nvcc is present; GPU-only tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest -q -ra "$@"
