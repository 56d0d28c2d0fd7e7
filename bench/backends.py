#!/usr/bin/env python3
"""Backend benchmark: the torch backend against ONNX Runtime on the same models, same run.

Per model, one batch (open_nsfw 16 frames, yamnet 64 patches, minilm 32 texts x 64 tokens) runs
through each backend, interleaved so both see the same machine load; rows/s from the median of
--repeats timed calls (quartiles beside it). Default device: the CPU, fp32 for both.
``--device cuda`` runs torch on the GPU (ONNX Runtime stays on the CPU).

    python bench/backends.py [--repeats 7] [--threads N] [--models open_nsfw yamnet minilm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.backends import load_backend  # noqa: E402
from engine.repo import ModelRepository  # noqa: E402


def batch_for(model: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if model == "open_nsfw":
        return {"input:0": rng.uniform(-123, 151, (16, 224, 224, 3)).astype(np.float32)}
    if model == "yamnet":
        return {"audio": rng.normal(-4, 2, (64, 1, 96, 64)).astype(np.float32)}
    ids = rng.integers(1000, 30000, (32, 64))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default="model_repo")
    ap.add_argument("--models", nargs="+", default=["open_nsfw", "yamnet", "minilm"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    repo = ModelRepository(args.repo)
    rng = np.random.default_rng(0)
    print(f"{'model':<10} {'rows':>5} {'onnxruntime rows/s':>22} {'torch rows/s':>22} {'torch/ort':>9}")
    for name in args.models:
        entry = repo.model(name)
        backends = {"onnxruntime": load_backend(entry, threads=args.threads, backend="onnxruntime"),
                    "torch": load_backend(entry, device=args.device, threads=args.threads, backend="torch")}
        feed = batch_for(name, rng)
        rows = len(next(iter(feed.values())))
        times: dict[str, list[float]] = {k: [] for k in backends}
        for b in backends.values():
            b.infer(feed)  # warm-up (allocations, CUDA graphs)
        for _ in range(args.repeats):
            for k, b in backends.items():
                t = time.perf_counter()
                b.infer(feed)
                times[k].append(time.perf_counter() - t)

        def cell(k: str) -> str:
            q1, med, q3 = statistics.quantiles(times[k], n=4) if len(times[k]) > 1 else [times[k][0]] * 3
            return f"{rows / med:8.1f} ({rows / q3:.0f}-{rows / q1:.0f})"

        ratio = statistics.median(times["onnxruntime"]) / statistics.median(times["torch"])
        print(f"{name:<10} {rows:>5} {cell('onnxruntime'):>22} {cell('torch'):>22} {ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
