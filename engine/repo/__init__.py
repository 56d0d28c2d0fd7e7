"""Model repository: config.pbtxt parsing, models.lock verification, `models fetch`."""

from engine.repo.config import load_config, parse_config, validate_config
from engine.repo.lock import Lock, read_lock, sha256_file, write_lock
from engine.repo.repository import ModelEntry, ModelRepository

# `engine models fetch` lives in the submodule engine.repo.fetch (imported lazily: it pulls in
# onnx and, for MiniLM, torch):  from engine.repo.fetch import fetch


__all__ = [
    "Lock", "ModelEntry", "ModelRepository", "load_config", "parse_config",
    "read_lock", "sha256_file", "validate_config", "write_lock",
]
