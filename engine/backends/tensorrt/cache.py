"""Where TensorRT engines live, and when a stored one may be reused.

A serialized engine (a "plan") is only valid for the TensorRT version and the GPU model it
was built with, and only for the precision and shape profiles it was built for. The cache key
(:class:`EngineKey`) is the sha256 of all of these, so a plan is found only by the exact
build it came from; :func:`lookup` additionally re-reads the JSON sidecar and the plan's own
sha256 and refuses (returns None: rebuild) on any mismatch. It never deserializes a plan.

Layout inside the model repository::

    <model>/<version>/trt/<key>.plan      # serialized engine
    <model>/<version>/trt/<key>.json      # sidecar: the key fields + the plan's sha256
    <repo>/.trt_timing/<trt version>_<gpu>_sm<cc>.cache   # timing cache per TensorRT + GPU

Triton Inference Server serves plans from its own layout, ``<model>/<version>/model.plan``
with ``platform: "tensorrt_plan"``: :func:`plan_for_triton` and :func:`triton_config` give the
path and the config that ``engine compile`` writes for it.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``); the sidecar is
written after the plan, so a plan without its sidecar is treated as absent.
No TensorRT import here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.backends.tensorrt.profiles import Profile
from engine.errors import InputError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
KEY_SCHEMA = 1  # bump when the key fields change


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on.

    ``profiles`` keep their order (TensorRT addresses profiles by index); inputs inside a
    profile are sorted by :class:`Profile`, so input order does not change the key.
    ``compute_capability`` is ``"major.minor"`` (e.g. ``"9.0"`` for H100).
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[Profile, ...]

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}: expected one of {PRECISIONS}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise InputError(f"onnx_sha256 must be 64 lowercase hex digits, got {self.onnx_sha256!r}")
        if not re.fullmatch(r"\d+\.\d+", self.compute_capability):
            raise InputError(f"compute_capability must be 'major.minor', got {self.compute_capability!r}")
        if not self.trt_version or not self.gpu_name:
            raise InputError("trt_version and gpu_name must not be empty")
        if not self.profiles:
            raise InputError("an engine needs at least one optimisation profile")
        object.__setattr__(self, "profiles", tuple(self.profiles))

    def fields(self) -> dict:
        """JSON-able canonical form (what the sidecar stores)."""
        return {
            "schema": KEY_SCHEMA,
            "onnx_sha256": self.onnx_sha256,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "profiles": [p.to_json() for p in self.profiles],
        }

    def digest(self) -> str:
        blob = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return sha256_bytes(blob.encode())


def engine_dir(version_dir: str | os.PathLike) -> Path:
    return Path(version_dir) / "trt"


def plan_path(version_dir: str | os.PathLike, key: EngineKey) -> Path:
    return engine_dir(version_dir) / f"{key.digest()}.plan"


def sidecar_path(version_dir: str | os.PathLike, key: EngineKey) -> Path:
    return engine_dir(version_dir) / f"{key.digest()}.json"


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def store(version_dir: str | os.PathLike, key: EngineKey, plan: bytes) -> Path:
    """Save a plan and its sidecar; returns the plan path."""
    if not plan:
        raise InputError("refusing to store an empty plan")
    p = atomic_write(plan_path(version_dir, key), plan)
    meta = dict(key.fields(), key=key.digest(), plan_sha256=sha256_bytes(plan), plan_bytes=len(plan))
    atomic_write(sidecar_path(version_dir, key), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return p


def lookup(version_dir: str | os.PathLike, key: EngineKey) -> Path | None:
    """The stored plan for exactly ``key``, or None (build it). Never loads the plan."""
    p, side = plan_path(version_dir, key), sidecar_path(version_dir, key)
    if not p.is_file() or not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("TensorRT cache: unreadable sidecar %s (%s): rebuilding", side, e)
        return None
    want = key.fields()
    diff = sorted(k for k in want if meta.get(k) != want[k])
    if diff:
        log.warning("TensorRT cache: %s was built for another %s: rebuilding", p, ", ".join(diff))
        return None
    if meta.get("plan_sha256") != sha256_file(p):
        log.warning("TensorRT cache: %s does not match its recorded sha256: rebuilding", p)
        return None
    return p


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-") or "unknown"


def timing_cache_path(repo_root: str | os.PathLike, trt_version: str, gpu_name: str,
                      compute_capability: str) -> Path:
    """One timing cache per (TensorRT version, GPU), shared by all models of the repository."""
    name = f"{_slug(trt_version)}_{_slug(gpu_name)}_sm{compute_capability.replace('.', '')}.cache"
    return Path(repo_root) / ".trt_timing" / name


@dataclass(frozen=True)
class TritonPlan:
    """Where ``engine compile`` writes a plan for Triton Inference Server."""

    path: Path  # <triton repo>/<model>/<version>/model.plan
    config_path: Path  # <triton repo>/<model>/config.pbtxt
    platform: str = "tensorrt_plan"
    default_model_filename: str = "model.plan"


def plan_for_triton(triton_repo: str | os.PathLike, model: str, version: int | str) -> TritonPlan:
    """Triton's layout for a TensorRT model: ``<model>/<version>/model.plan``.

    ``triton_repo`` should be a separate repository from the ONNX one: the same model folder
    cannot be both ``onnxruntime_onnx`` and ``tensorrt_plan``.
    """
    version = str(version)
    if not version.isdigit() or int(version) < 1:
        raise InputError(f"Triton versions are positive integers, got {version!r}")
    if not model or "/" in model or model in (".", ".."):
        raise InputError(f"invalid model name {model!r}")
    root = Path(triton_repo) / model
    return TritonPlan(path=root / version / "model.plan", config_path=root / "config.pbtxt")


def triton_config(config, *, max_batch_size: int | None = None):
    """Copy of an ONNX model's ``ModelConfig`` for serving its plan from Triton.

    ``platform`` becomes ``"tensorrt_plan"``, ``default_model_filename`` ``"model.plan"``,
    instance groups ``KIND_GPU``. ``max_batch_size`` must not exceed the profile's max batch
    (pass the profile's value when it is smaller than the ONNX config's).
    """
    from tritonclient.grpc import model_config_pb2 as mc

    out = mc.ModelConfig()
    out.CopyFrom(config)
    out.platform = "tensorrt_plan"
    out.backend = ""
    out.default_model_filename = "model.plan"
    if max_batch_size is not None:
        out.max_batch_size = int(max_batch_size)
    for g in out.instance_group:
        g.kind = mc.ModelInstanceGroup.KIND_GPU
    return out


def key_for(onnx_bytes_or_sha: bytes | str, *, trt_version: str, gpu_name: str,
            compute_capability: str | Sequence[int], precision: str,
            profiles: Sequence[Profile]) -> EngineKey:
    """Convenience constructor: hashes ONNX bytes, formats ``(9, 0)`` as ``"9.0"``."""
    sha = onnx_bytes_or_sha if isinstance(onnx_bytes_or_sha, str) else sha256_bytes(onnx_bytes_or_sha)
    cc = compute_capability
    if not isinstance(cc, str):
        cc = ".".join(str(int(v)) for v in cc)
    return EngineKey(sha, str(trt_version), str(gpu_name), cc, precision, tuple(profiles))
