"""Triton-layout model repository with sha256 verification against ``models.lock``.

Layout::

    model_repo/
      models.lock
      <model>/config.pbtxt
      <model>/<version>/<files>      # version folders are produced by `engine models fetch`
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from engine.errors import IntegrityError, ModelError, ModelNotFetchedError
from engine.repo.config import load_config
from engine.repo.lock import LOCK_NAME, Lock, read_lock, verify_file

FETCH_HINT = "run `engine models fetch` to download and convert the models"


@dataclass(frozen=True)
class ModelEntry:
    """One loadable model: its parsed config and its verified files."""

    name: str
    config: mc.ModelConfig
    version_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # file name (relative to version_dir) -> path

    @property
    def version(self) -> str:
        return self.version_dir.name

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """``parameters { key: ... value { string_value: ... } }`` of the config."""
        p = self.config.parameters.get(key)
        return p.string_value if p is not None else default

    def file(self, name: str) -> Path:
        try:
            return self.files[name]
        except KeyError:
            raise ModelNotFetchedError(
                f"model {self.name!r} version {self.version}: file {name!r} is missing in "
                f"{self.version_dir}; {FETCH_HINT}"
            ) from None


def _version_dirs(model_dir: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    if model_dir.is_dir():
        for p in model_dir.iterdir():
            if p.is_dir() and p.name.isdigit():
                out[int(p.name)] = p
    return out


def select_version(config: mc.ModelConfig, model_dir: Path) -> Path | None:
    """The version folder Triton would serve (highest allowed number), or None."""
    available = _version_dirs(model_dir)
    policy = config.version_policy.WhichOneof("policy_choice")
    if policy == "specific":
        allowed = [v for v in config.version_policy.specific.versions if v in available]
    else:  # latest / all / unset: the highest version
        allowed = list(available)
    if not allowed:
        return None
    return available[max(allowed)]


class ModelRepository:
    """``ModelRepository(path)``: list models, load verified :class:`ModelEntry` objects.

    ``verify=False`` skips the sha256 check (files must still be present); intended for
    development on models that are not in the lock yet.
    """

    def __init__(self, path: str | os.PathLike = "model_repo", *, verify: bool = True):
        self.path = Path(path)
        self.verify = verify
        if not self.path.is_dir():
            raise ModelError(f"model repository {self.path} does not exist")
        self.lock_path = self.path / LOCK_NAME
        self._lock: Lock | None = None
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.path)!r})"

    @property
    def lock(self) -> Lock:
        with self._mutex:
            if self._lock is None:
                self._lock = read_lock(self.lock_path)
            return self._lock

    def models(self) -> list[str]:
        return sorted(
            p.name for p in self.path.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file()
        )

    def config(self, name: str) -> mc.ModelConfig:
        model_dir = self.path / name
        if not (model_dir / "config.pbtxt").is_file():
            raise ModelError(
                f"model {name!r} not found in {self.path} (known: {', '.join(self.models()) or 'none'})"
            )
        return load_config(model_dir / "config.pbtxt")

    def model(self, name: str) -> ModelEntry:
        config = self.config(name)
        model_dir = self.path / name
        vdir = select_version(config, model_dir)
        if vdir is None:
            raise ModelNotFetchedError(
                f"model {name!r}: no version folder in {model_dir}; {FETCH_HINT}"
            )
        files: dict[str, Path] = {}
        if self.verify:
            entries = self.lock.files_for(name, vdir.name)
            if not entries:
                raise IntegrityError(
                    f"model {name!r} version {vdir.name}: no files recorded in {self.lock_path}; "
                    "the folder cannot be verified (re-run `engine models fetch`, or re-lock "
                    "with engine.repo.fetch.fetch(..., update_lock=True) after review)"
                )
            missing = [e.filename for e in entries if not (vdir / e.filename).is_file()]
            if missing:
                raise ModelNotFetchedError(
                    f"model {name!r} version {vdir.name}: missing {', '.join(missing)} in {vdir}; "
                    f"{FETCH_HINT}"
                )
            for e in entries:
                p = vdir / e.filename
                verify_file(p, e, self.lock_path)
                files[e.filename] = p
        else:
            for p in sorted(vdir.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    files[p.relative_to(vdir).as_posix()] = p
            if not files:
                raise ModelNotFetchedError(f"model {name!r}: {vdir} is empty; {FETCH_HINT}")
        if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
            fname = config.default_model_filename or "model.onnx"
            if fname not in files:
                raise ModelNotFetchedError(
                    f"model {name!r}: {fname} missing in {vdir}; {FETCH_HINT}"
                )
        return ModelEntry(name=name, config=config, version_dir=vdir, files=files)

    def __iter__(self):
        return iter(self.models())
