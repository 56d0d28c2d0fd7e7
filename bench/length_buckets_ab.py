"""A/B of MiniLM's length buckets on a GPU (Note [length buckets] in engine/backends/torch_cuda.py).

    python -m bench.length_buckets_ab        # on a machine with a GPU and MiniLM fetched

The torch CUDA backend with the repository's ``torch_length_buckets`` (CUDA graphs per batch x
length bucket) against the same backend without them (eager: the module reads sizes back from
the GPU at every Reshape), and ONNX Runtime on the host CPUs, in one process, interleaved
(5 rounds, the median of each); numpy in and out. Prints a markdown table of texts/s and the
ratios, the first-call cost of a bucket, and the largest difference from ONNX Runtime.
``ENGINE_MODEL_REPO`` picks the repository (default ./model_repo).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

import numpy as np

SHAPES = ((1, 12), (8, 32), (64, 32), (8, 128), (64, 256))  # batch x tokens
ROUNDS = 5


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench.length_buckets_ab needs a CUDA GPU", file=sys.stderr)
        return 2
    from tritonclient.grpc import model_config_pb2 as mc

    from engine.backends import load_backend
    from engine.repo import ModelRepository

    entry = ModelRepository(os.environ.get("ENGINE_MODEL_REPO", "model_repo")).model("minilm")
    eager_cfg = mc.ModelConfig()
    eager_cfg.CopyFrom(entry.config)
    del eager_cfg.parameters["torch_length_buckets"]
    graphs = load_backend(entry, device="cuda", backend="torch")
    eager = load_backend(dataclasses.replace(entry, config=eager_cfg), device="cuda", backend="torch")
    ort = load_backend(entry, backend="onnxruntime")
    print(f"{torch.cuda.get_device_name()}; fp16: graphs {graphs.fp16}, eager {eager.fp16}")
    rng = np.random.default_rng(0)

    def feed(b: int, n: int) -> dict:
        ids = rng.integers(1000, 30000, (b, n))
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    for b, n in (SHAPES[0], SHAPES[-1]):
        t = time.perf_counter()
        graphs.infer(feed(b, n))
        torch.cuda.synchronize()
        print(f"first call of bucket {b} x {n} (specialise, convert, capture): {time.perf_counter() - t:.2f} s")

    def seconds(fn, calls: int) -> float:
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / calls

    print("| batch x tokens | eager | length-bucket graphs | graphs ÷ eager | ONNX Runtime (CPU) | graphs ÷ ORT "
          "| max abs diff graphs vs ORT |")
    print("|---|---|---|---|---|---|---|")
    for b, n in SHAPES:
        f = feed(b, n)
        paths = {"eager": (lambda: eager.infer(f), 10), "graphs": (lambda: graphs.infer(f), 10),
                 "ort": (lambda: ort.infer(f), 3)}
        samples: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(ROUNDS):
            for k, (fn, calls) in paths.items():
                samples[k].append(seconds(fn, calls))
        rate = {k: b / statistics.median(v) for k, v in samples.items()}
        diff = np.abs(graphs.infer(f)["token_embeddings"] - ort.infer(f)["token_embeddings"]).max()
        print(f"| {b} x {n} | {rate['eager']:,.0f} | {rate['graphs']:,.0f} | {rate['graphs'] / rate['eager']:.1f}× "
              f"| {rate['ort']:,.0f} | {rate['graphs'] / rate['ort']:.1f}× | {diff:.2e} |")
    print(f"GPU memory allocated {torch.cuda.memory_allocated() / 2**20:.0f} MiB, "
          f"reserved {torch.cuda.memory_reserved() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
