"""Models suite: each model of the repository per backend and batch size, items/s and call latency.

Backends: ONNX Runtime always, torch on the CPU when it imports (the same ONNX files through
onnx2torch), both on the same input batch, interleaved round-robin in one run; the scikit-learn
profanity model has its own backend only. Inputs are synthetic batches in each input's real range
(:func:`bench.workload.model_batch`). Threads: ``cfg.threads`` (the per-machine figure).

Per model, backend and batch B: ``models/<model>/b<B>/<backend>`` in the model's item unit
(frames/s, patches/s, texts/s) and ``.../latency`` (ms per call). The default backend's
throughput (ONNX Runtime on the CPU; sklearn for profanity) also feeds ``bench plan``:

  open_nsfw -> image_model (frames/s)      yamnet    -> audio_model (audio-s/s, 0.48 s per patch)
  profanity -> text        (texts/s)       minilm    -> text_model  (texts/s)

``torch÷onnxruntime`` is the same-run ratio per round.

On a GPU (:mod:`bench.gpu`) the torch backend also runs on ``cuda:0`` (CUDA graphs per batch
bucket, fp16 where the model passes its check) in the same rounds: ``torch-cuda`` takes numpy
batches and returns numpy (pinned staging, copies both ways: what a caller with host arrays gets,
the like of ONNX Runtime on the CPU) and ``torch-cuda-device`` takes CUDA tensors and leaves its
outputs on the device (the device pipeline's call; synchronised after each call so the wall clock
sees the work), each with ``.../latency`` and ``<path>÷onnxruntime``. Without a GPU one note says
these rows were skipped. Ran on an H100 (bench/baselines/h100/: open_nsfw and YAMNet).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from bench import gpu
from bench.results import Figure, ratio_figure
from bench.suites import RunConfig, SuiteResult, Tick
from bench.timing import measure, rates
from bench.workload import AUDIO_SECONDS_PER_PATCH, MODEL_REPO, model_batch

SUITE = "models"


@dataclass(frozen=True)
class ModelInfo:
    unit: str            # throughput unit of one row
    stage: str           # bench plan stage of the default backend's figure
    quick: list[int]     # batch sizes of a --quick run
    full: list[int]


# batch sizes: 1 (a lone item) up to each config's preferred dynamic batch
MODELS = {
    "open_nsfw": ModelInfo("frames/s", "image_model", [1, 8], [1, 8, 16, 32]),
    "yamnet": ModelInfo("patches/s", "audio_model", [1, 16, 64], [1, 16, 32, 64]),
    "minilm": ModelInfo("texts/s", "text_model", [1, 8], [1, 8, 32, 64]),
    "profanity": ModelInfo("texts/s", "text", [1, 64], [1, 16, 64, 256]),
}


def batches(model: str, cfg: RunConfig) -> list[int]:
    info = MODELS[model]
    return info.quick if cfg.quick else info.full


def steps(cfg: RunConfig) -> int:
    return sum(len(batches(m, cfg)) for m in MODELS)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def load_backends(entry, threads: int, notes: list[str]) -> dict:
    """{backend name: loaded backend} for one model: the default one, plus torch where it loads."""
    from engine.backends import load_backend

    if entry.config.backend == "sklearn":
        return {"sklearn": load_backend(entry, threads=threads)}
    found = {"onnxruntime": load_backend(entry, threads=threads, backend="onnxruntime")}
    if not torch_available():
        notes.append(f"{entry.name}: torch not importable, ONNX Runtime only")
        return found
    try:
        found["torch"] = load_backend(entry, threads=threads, backend="torch")
    except Exception as e:  # a conversion failure is a finding to report, not a crashed run
        notes.append(f"{entry.name}: torch backend failed to load ({type(e).__name__}: {e})")
    return found


def model_paths(backends: dict, feed: dict) -> dict:
    """{path: one inference call} per backend; the CUDA backend twice, host and device arrays."""
    paths = {}
    for name, b in backends.items():
        paths[name] = lambda b=b: b.infer(feed)
        if name == "torch-cuda":
            dev = gpu.device_feed(feed)  # uploaded once: the device pipeline's inputs are there already
            paths["torch-cuda-device"] = gpu.synchronized(lambda b=b, dev=dev: b.infer(dev))
    return paths


GPU_PATHS = ("torch-cuda", "torch-cuda-device")


def model_part(model: str, backends: dict, cfg: RunConfig, tick: Tick, out: SuiteResult) -> None:
    info = MODELS[model]
    rng = np.random.default_rng(0)
    for batch in batches(model, cfg):
        feed = model_batch(model, batch, rng)
        paths = model_paths(backends, feed)
        seconds = measure(paths, repeats=cfg.repeats, min_time=cfg.min_time)
        base = f"{SUITE}/{model}/b{batch}"
        figs = {}
        for name, secs in seconds.items():
            backend = backends["torch-cuda" if name == "torch-cuda-device" else name]
            params = {"model": model, "backend": name, "batch": batch, "threads": cfg.threads,
                      "device": gpu.DEVICE if name in GPU_PATHS else "cpu",
                      # the torch backend's load-time fp16 check (Note [fp16 decision]) decides
                      "precision": "fp16" if getattr(backend, "fp16", False) else "fp32"}
            # the figures bench plan reads: the default CPU backend for CPU nodes, and for GPU machines
            # the call the device pipeline makes (device arrays in and out)
            planned = name in ("onnxruntime", "sklearn", "torch-cuda-device")
            stage = {"stage": info.stage, "items_per_call": batch} if planned and info.unit != "patches/s" else {}
            figs[name] = Figure(name=f"{base}/{name}", suite=SUITE, unit=info.unit, better="higher",
                                samples=rates(secs, batch), params=params, **stage)
            out.figures.append(figs[name])
            out.figures.append(Figure(name=f"{base}/{name}/latency", suite=SUITE, unit="ms", better="lower",
                                      samples=[1e3 * s for s in secs], params=params))
            if planned and info.unit == "patches/s":  # the plan counts audio in seconds, not patches
                audio_s = batch * AUDIO_SECONDS_PER_PATCH
                out.figures.append(Figure(
                    name=f"{base}/{name}/audio-s", suite=SUITE, unit="audio-s/s", better="higher",
                    samples=rates(secs, audio_s), params={**params, "audio_seconds_per_patch": AUDIO_SECONDS_PER_PATCH},
                    stage=info.stage, items_per_call=audio_s))
        for other in ("torch", *GPU_PATHS):
            if other in figs and "onnxruntime" in figs:
                out.figures.append(ratio_figure(f"{base}/{other}÷onnxruntime", SUITE, figs[other],
                                                figs["onnxruntime"], {"model": model, "batch": batch}))
        tick(f"{model} batch {batch}")


def run(cfg: RunConfig, tick: Tick, repo_path=MODEL_REPO) -> SuiteResult:
    from engine.repo import ModelRepository

    out = SuiteResult()
    repo = ModelRepository(repo_path)
    no_gpu = gpu.unavailable()
    if no_gpu:
        out.notes.append(gpu.skip_note("the torch CUDA backend per model and batch", no_gpu))
    present = set(repo.models())
    for model in MODELS:
        if model not in present:  # a subset repository (bench/repo_subset.py)
            out.notes.append(f"{model}: not in the repository {repo_path}, its rows skipped")
            continue
        entry = repo.model(model)
        backends = load_backends(entry, cfg.threads, out.notes)
        if not no_gpu:
            backends.update(gpu.model_backend(entry, out.notes))
        for b in backends.values():
            b.warmup()
        model_part(model, backends, cfg, tick, out)
        del backends  # torch modules of a ResNet-50 hold ~100 MB each: free before the next model
    return out
