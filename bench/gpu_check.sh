#!/usr/bin/env bash
# One script for a fresh GPU machine (torch, nvcc, pybind11; pytest from .whl/ when missing):
# build engine._C_cuda and engine._C, run the GPU tests (CUDA and Triton kernels, the device
# pipeline), the A/B of the CUDA preprocessing blocks (bench/preprocess_ab.py: vfirst, its pending
# prefetch and late variants, its clamp="output" variant), the bench
# suites that carry GPU rows (bench/gpu_bench.py: kernels with bandwidth as
# a fraction of a same-run copy, models with the torch CUDA backend, e2e with
# Session(device="cuda:0")), then the NVDEC A/B (bench/nvdec_ab.py: sparse NVDEC decoding against
# the CPU, where PyNvVideoCodec imports).
#   bash bench/gpu_check.sh 2>&1 | tee gpu_check.log
#   bash bench/gpu_check.sh text   # the text models only, for a bundle made with
#     python bench/gpu_bundle.py --models minilm --fp16-transport minilm --transport-bits 6
#     (MiniLM does not fit beside the others): the torch CUDA backend's gpu tests, the GPU
#     Session's text test (where av imports: a bundle made with --skip av has none), the models
#     suite and bench/length_buckets_ab.py
# BENCH_ARGS (default --quick) go to python -m bench; results in bench/results/.
# On a machine without network: make the bundle here first (python bench/gpu_bundle.py) and take
# .gpu_bundle/ along; it is unpacked below.
# Environment: ENGINE_MODEL_REPO (a subset repository, bench/repo_subset.py, where the machine
# cannot take every model), TEST_TIMEOUT / BENCH_TIMEOUT (s per step), ENGINE_CUDA_ARCHS (default
# 90 here: only the GPU at hand; CI builds 80;89;90+PTX),
# ENGINE_CHECK_CPU=0 skips engine._C (the Triton preprocessing takes its tap tables and colour
# map from it, and tests/triton compares with the CPU kernels: those tests then fail).
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
PY=${PYTHON:-python3}
t0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t0 )) s)"; }

if [ -d .gpu_bundle ]; then  # made by bench/gpu_bundle.py for a machine without network
  step "bundle"
  SITE=/tmp/gpu_bundle_site
  $PY bench/gpu_bundle.py --unpack .gpu_bundle --site $SITE --repo model_repo || exit 1
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  if [ -z "${ENGINE_MODEL_REPO:-}" ]; then  # the models that travelled, and the pipeline they serve
    $PY bench/repo_subset.py model_repo /tmp/gpu_check_repo && export ENGINE_MODEL_REPO=/tmp/gpu_check_repo
  fi
fi

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv || true
$PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -1

step "pytest"
if ! $PY -m pytest --version >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --find-links .whl pytest || echo "pytest install failed"
  fi
fi
$PY -m pytest --version || echo "no pytest: the tests are skipped"

step "build"
export ENGINE_CUDA=1 ENGINE_CUDA_ARCHS=${ENGINE_CUDA_ARCHS:-90}
if [ "${ENGINE_CHECK_CPU:-1}" != "1" ]; then export ENGINE_CPU=0; fi
if ! $PY setup.py build_ext --inplace > build_cuda.log 2>&1; then
  tail -40 build_cuda.log; echo "BUILD FAILED"
  which nvcc; ls "$(dirname "$(dirname "$(readlink -f "$(which nvcc)")")")"/lib* 2>/dev/null | grep -i cudart
  exit 1
fi
grep -E "nvcc|warning" build_cuda.log | tail -8
$PY -c "import engine.ops.cuda as c; print(c.build_info())"
# engine.kernels (the Triton kernels in kernels/) exists only through an install's package
# mapping (setup.py package_dir); this one builds nothing (the extensions are in place already)
ENGINE_CPU=0 ENGINE_CUDA=0 $PY -m pip install -q -e . --no-deps --no-build-isolation > install.log 2>&1 \
  || { tail -5 install.log; echo "editable install failed: tests/triton cannot import engine.kernels"; }
$PY -c "import triton, engine.kernels as k; print('triton', triton.__version__, k.__file__)"

if [ "$PART" = "text" ]; then
  step "gpu tests of the text models"
  SESSION_TEXT=""  # engine.media (every Session) imports av
  $PY -c "import av" 2>/dev/null && SESSION_TEXT=tests/test_device_pipeline.py::test_gpu_session_text_matches_the_cpu_session
  timeout ${TEST_TIMEOUT:-240} $PY -m pytest -q -m gpu -p no:cacheprovider -rfEs --durations=5 \
    tests/test_backend_torch.py tests/test_backends_text.py $SESSION_TEXT 2>&1 | grep -vE "^\s*$" | tail -40
  echo "pytest -m gpu rc=${PIPESTATUS[0]}"
  step "bench: models"
  timeout ${BENCH_TIMEOUT:-300} $PY bench/gpu_bench.py --suite models ${BENCH_ARGS:---quick} --no-plots --label "bench/gpu_check.sh text"
  step "A/B: MiniLM length buckets against eager"
  timeout ${BENCH_TIMEOUT:-300} $PY -m bench.length_buckets_ab
  step "done"
  exit 0
fi

step "GPU tests"
# in parallel where pytest-xdist is installed: most of the time goes into compiling Triton kernels
XDIST=""; $PY -c "import xdist" 2>/dev/null && XDIST="-n ${PYTEST_WORKERS:-8}"
# (the guard-page test runs the host emulation only: CI has it, the GPU's minutes go elsewhere)
timeout ${TEST_TIMEOUT:-240} $PY -m pytest -q $XDIST -p no:cacheprovider -rfEs --durations=8 \
  --ignore=tests/gpu/test_cuda_guard_pages.py \
  tests/gpu tests/triton tests/kernels/test_headers_nvcc.py tests/test_device_pipeline.py 2>&1 | grep -vE "^\s*$" | tail -80
echo "pytest rc=${PIPESTATUS[0]}"
# the gpu-marked tests among the CPU ones (torch CUDA backend, Session, model parity, NVDEC)
timeout ${TEST_TIMEOUT:-240} $PY -m pytest -q -m gpu -p no:cacheprovider -rfEs \
  tests/test_backend_torch.py tests/test_session.py tests/test_model_parity.py tests/test_backends_text.py \
  tests/test_nvdec.py 2>&1 | grep -vE "^\s*$" | tail -40
echo "pytest -m gpu rc=${PIPESTATUS[0]}"

step "A/B: CUDA preprocess, the vertical-first block against its variants (prefetch, late, clamp=output)"
timeout ${BENCH_TIMEOUT:-300} $PY -m bench.preprocess_ab

# kernels first and on its own: models and e2e need the model repository, and a suite that fails
# stops its run before anything is written
PLOTS=""; $PY -c "import matplotlib" 2>/dev/null || PLOTS="--no-plots"
step "bench: kernels (GPU rows beside the CPU ones)"
timeout ${BENCH_TIMEOUT:-300} $PY bench/gpu_bench.py --suite kernels ${BENCH_ARGS:---quick} $PLOTS --label "bench/gpu_check.sh"
# decode too: it runs on the host CPUs, and with it the run is a complete bench plan profile
step "bench: decode, models, e2e"
timeout ${BENCH_TIMEOUT:-300} $PY bench/gpu_bench.py --suite decode,models,e2e ${BENCH_ARGS:---quick} $PLOTS --label "bench/gpu_check.sh"
# last: beside the check, not part of it (about a minute)
step "A/B: sparse NVDEC, keyframe packets against SimpleDecoder and the CPU"
timeout ${BENCH_TIMEOUT:-300} $PY -m bench.nvdec_ab
step "done"
