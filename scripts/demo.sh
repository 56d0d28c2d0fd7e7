#!/usr/bin/env bash
# The main job: install, fetch the models, and moderate the bundled sample media on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
engine info
engine moderate samples/*
engine moderate --text "have a lovely day" --text "I am going to kill you"
