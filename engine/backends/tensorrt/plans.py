"""Get a model's engine: from the cache when it was built for exactly this build, else build it.

Used by the runtime backend (on first load) and by ``engine compile`` (ahead of time), so both
key, build and store engines the same way:

1. :func:`engine_profiles` - the profiles from ``config.pbtxt`` and the pipeline's batch size;
2. :func:`get_or_build`    - key = (ONNX sha256, TensorRT version, GPU, precision, profiles);
   :func:`~engine.backends.tensorrt.cache.lookup` the plan, or build it with the repository's
   timing cache and :func:`~engine.backends.tensorrt.cache.store` it. A plan built for another
   GPU or TensorRT version has another key, so it is never found, never loaded: rebuilt.

No TensorRT import here (the module is passed in); the GPU identity comes from torch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.backends.onnx_io import onnx_file  # the ONNX backends' one rule for the model file
from engine.backends.tensorrt.builder import DEFAULT_WORKSPACE, build_engine
from engine.backends.tensorrt.cache import EngineKey, atomic_write, key_for, lookup, store, timing_cache_path
from engine.backends.tensorrt.profiles import Profile, profile_from_config, text_profile
from engine.errors import ModelError
from engine.repo.lock import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: its name and compute capability ``"major.minor"``."""

    name: str
    compute_capability: str


def torch_gpu(device: str = "cuda") -> GpuInfo:
    """The identity of a CUDA device, from torch; ModelError without one."""
    import torch

    if not torch.cuda.is_available():
        raise ModelError(f"TensorRT needs a CUDA GPU; torch {torch.__version__} sees none")
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ModelError(f"TensorRT runs on CUDA devices, not {device!r}")
    major, minor = torch.cuda.get_device_capability(dev)
    return GpuInfo(torch.cuda.get_device_name(dev), f"{major}.{minor}")


def is_onnx_model(config) -> bool:
    return config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"


def engine_profiles(entry, opt_batch: int | None = None) -> list[Profile]:
    """One profile from the config: text models (``max_seq_length`` parameter) get
    ``(1, max_seq_length // 2, max_seq_length)`` on their token axis; others need fixed dims.

    ``opt_batch``: the batch size TensorRT tunes for, capped at ``max_batch_size``; None =
    the repository pipeline's batch size for this model (:func:`pipeline_opt_batch`), so the
    runtime and ``engine compile`` key the same engine without being told.
    """
    cfg = entry.config
    if opt_batch is None:
        opt_batch = pipeline_opt_batch(entry)
    path = Path(entry.version_dir).parent / "config.pbtxt"
    if opt_batch is not None and cfg.max_batch_size > 0:
        opt_batch = min(int(opt_batch), int(cfg.max_batch_size))
    max_seq = cfg.parameters["max_seq_length"].string_value if "max_seq_length" in cfg.parameters else ""
    if max_seq:
        return [text_profile(cfg, int(max_seq), opt_batch=opt_batch, path=str(path))]
    return [profile_from_config(cfg, opt_batch=opt_batch, path=str(path))]


def pipeline_batch_sizes(pipeline) -> dict[str, int]:
    """``{model: batch size}`` of the pipeline's vision and audio models (the opt batch)."""
    out = {}
    for part in (pipeline.vision, pipeline.audio):
        if part is not None:
            out[part.model] = part.batch_size
    return out


def pipeline_opt_batch(entry) -> int | None:
    """The batch size ``<repo>/pipeline.toml`` runs this model with; None without one."""
    from engine.pipeline import PIPELINE_FILE, load_pipeline

    repo = Path(entry.version_dir).parent.parent
    if not (repo / PIPELINE_FILE).is_file():
        return None
    return pipeline_batch_sizes(load_pipeline(repo)).get(entry.name)


@dataclass(frozen=True)
class Plan:
    """A serialized engine in the cache."""

    key: EngineKey
    path: Path  # <version>/trt/<key>.plan (its sidecar: the same name with .json)
    built: bool  # False: found in the cache


def get_or_build(entry, *, precision: str, profiles: Sequence[Profile], gpu: GpuInfo, trt,
                 workspace: int = DEFAULT_WORKSPACE, rebuild: bool = False) -> Plan:
    """The cached plan for this exact build, built and stored first if there is none.

    ``rebuild=True`` builds and replaces the cached plan even when one is found.

    The timing cache lives at the repository root (two levels above the version folder) and
    is shared by all models built with the same TensorRT and GPU.
    """
    onnx = onnx_file(entry)
    if not onnx.is_file():
        raise ModelError(f"{entry.name}: {onnx} does not exist; run `engine models fetch`")
    version = str(trt.__version__)
    key = key_for(sha256_file(onnx), trt_version=version, gpu_name=gpu.name,
                  compute_capability=gpu.compute_capability, precision=precision, profiles=profiles)
    found = None if rebuild else lookup(entry.version_dir, key)
    if found is not None:
        log.info("%s: TensorRT engine %s from the cache", entry.name, found.name)
        return Plan(key, found, built=False)
    repo_root = Path(entry.version_dir).parent.parent
    timing_path = timing_cache_path(repo_root, version, gpu.name, gpu.compute_capability)
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    log.info("%s: building a %s TensorRT %s engine for %s (sm %s); this takes minutes",
             entry.name, precision, version, gpu.name, gpu.compute_capability)
    start = time.perf_counter()
    plan, new_timing = build_engine(onnx.read_bytes(), profiles, precision, timing,
                                    workspace=workspace, trt=trt)
    atomic_write(timing_path, new_timing)
    path = store(entry.version_dir, key, plan)
    log.info("%s: engine built in %.0f s: %s", entry.name, time.perf_counter() - start, path)
    return Plan(key, path, built=True)
