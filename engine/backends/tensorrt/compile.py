"""``engine compile``: build the TensorRT engines ahead of time and lay them out for Triton.

For every ONNX model of the repository (or those named):

1. build the engine into the repository's cache, or find it there (:func:`.plans.get_or_build`,
   the same key the runtime backend uses, so the runtime then loads it without building);
2. write a separate Triton model repository (``plan_for_triton``: an ONNX model folder
   cannot also be a ``tensorrt_plan`` one)::

       <out>/<model>/config.pbtxt            # platform "tensorrt_plan", KIND_GPU
       <out>/<model>/<label files>           # Triton reads label_filename beside config.pbtxt
       <out>/<model>/<version>/model.plan    # the serialized engine
       <out>/<model>/<version>/model.plan.json  # its sidecar: TensorRT version, GPU, profiles

A plan only loads on the GPU model and TensorRT version in its sidecar (Triton's TensorRT
backend must be built against that TensorRT version). Models Triton cannot serve as plans
(the sklearn text classifier) are skipped unless named, which is an error.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.backends.tensorrt.builder import import_tensorrt
from engine.backends.tensorrt.cache import atomic_write, plan_for_triton, sidecar_path, triton_config
from engine.backends.tensorrt.plans import (
    GpuInfo,
    engine_profiles,
    get_or_build,
    is_onnx_model,
    torch_gpu,
)
from engine.errors import InputError

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"  # model.plan -> model.plan.json


@dataclass(frozen=True)
class Compiled:
    model: str
    plan: Path  # <out>/<model>/<version>/model.plan
    config: Path  # <out>/<model>/config.pbtxt
    built: bool  # False: the engine came from the cache


def default_output(repo_path: str | Path) -> Path:
    """``model_repo`` -> ``model_repo_tensorrt`` beside it."""
    repo_path = Path(repo_path).resolve()
    return repo_path.with_name(repo_path.name + "_tensorrt")


def select_models(repo, names: Sequence[str] | None) -> list[str]:
    """The ONNX models to compile: all of them, or ``names`` (InputError for a non-ONNX one)."""
    if not names:
        return [n for n in repo.models() if is_onnx_model(repo.config(n))]
    for n in names:
        if not is_onnx_model(repo.config(n)):  # repo.config: ModelError for unknown names
            raise InputError(f"model {n!r} is not an ONNX model; TensorRT engines are built from ONNX")
    return list(dict.fromkeys(names))


def compile_repository(repo, out: str | Path, *, models: Sequence[str] | None = None,
                       precision: str = "fp16", trt=None, gpu: GpuInfo | None = None) -> list[Compiled]:
    """Build (or find) every selected model's engine and write the Triton repository ``out``.

    ``repo``: a :class:`engine.repo.ModelRepository`; ``trt``/``gpu``: the tensorrt module and
    the GPU identity (default: ``import tensorrt`` and torch's current CUDA device).
    """
    trt = import_tensorrt() if trt is None else trt  # first: no TensorRT, nothing else to do
    out = Path(out).resolve()
    if out == Path(repo.path).resolve() or Path(repo.path).resolve() in out.parents:
        raise InputError(f"the Triton repository {out} must be outside the model repository {repo.path}")
    gpu = torch_gpu() if gpu is None else gpu
    done = []
    for name in select_models(repo, models):
        entry = repo.model(name)
        profiles = engine_profiles(entry)  # opt batch from the pipeline, as the runtime's
        plan = get_or_build(entry, precision=precision, profiles=profiles, gpu=gpu, trt=trt)
        done.append(write_triton_model(entry, plan, out, max_batch=min(r.max[0] for r in profiles[0].inputs)))
    return done


def write_triton_model(entry, plan, out: Path, *, max_batch: int) -> Compiled:
    """Copy a cached plan and its sidecar into Triton's layout with a ``tensorrt_plan`` config."""
    from google.protobuf import text_format

    target = plan_for_triton(out, entry.name, entry.version)
    atomic_write(target.path, plan.path.read_bytes())
    sidecar = sidecar_path(entry.version_dir, plan.key)
    atomic_write(target.path.with_name(target.path.name + SIDECAR_SUFFIX), sidecar.read_bytes())
    cfg = triton_config(entry.config, max_batch_size=max_batch if entry.config.max_batch_size > 0 else None)
    text = f"# TensorRT engine of {entry.name} built by `engine compile`: see model.plan.json\n"
    atomic_write(target.config_path, (text + text_format.MessageToString(cfg)).encode())
    for label in sorted({o.label_filename for o in cfg.output if o.label_filename}):
        src = Path(entry.version_dir) / label
        if not src.is_file():
            src = Path(entry.version_dir).parent / label
        if not src.is_file():
            raise InputError(f"{entry.name}: label file {label!r} not found beside config.pbtxt or in "
                             f"{entry.version_dir}")
        shutil.copyfile(src, target.config_path.parent / label)
    log.info("%s: %s (%s)", entry.name, target.path, "built" if plan.built else "from the cache")
    return Compiled(entry.name, target.path, target.config_path, plan.built)
