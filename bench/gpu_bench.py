"""The bench suites that carry GPU rows, on a GPU: ``python bench/gpu_bench.py [python -m bench options]``.

A shortcut for ``python -m bench --suite kernels,models,e2e [options]`` (``--suite`` may narrow it,
or add others: bench/gpu_check.sh adds decode, which runs on the host CPUs and completes the run as
a ``bench plan`` profile) that refuses to run without a CUDA device, since its point is the GPU
rows: the kernels suite's CUDA/Triton kernels and torch CUDA ops with bandwidth as a fraction of a
same-run device copy, the models suite's torch CUDA backend beside ONNX Runtime, the e2e suite's
``Session(device="cuda:0")`` per ``kernel_impl`` beside the CPU Session. The measuring is in
bench/gpu.py, bench/gpu_kernels.py and the suites; results go to the usual JSON, markdown and plots
(``bench/results/``).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.gpu import unavailable  # noqa: E402

GPU_SUITES = "kernels,models,e2e"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    reason = unavailable()
    if reason:
        print(f"gpu_bench: {reason}; the suites would only note that their GPU rows were skipped",
              file=sys.stderr)
        return 1
    from bench.runner import main as run_main

    if not any(a == "--suite" or a.startswith("--suite=") for a in argv):
        argv = ["--suite", GPU_SUITES, *argv]
    return run_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
