"""`engine compile`: the Triton layout it writes (fake tensorrt) and its error without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.backends.tensorrt import cache as trtc
from engine.backends.tensorrt.compile import compile_repository, default_output
from engine.backends.tensorrt.plans import GpuInfo, engine_profiles, pipeline_batch_sizes
from engine.errors import InputError
from engine.repo import ModelEntry, ModelRepository, load_config, validate_config
from engine.repo.lock import FileLock, Lock, WheelLock, sha256_bytes, write_lock
from fake_tensorrt import fake_trt

ROOT = Path(__file__).resolve().parents[1]
H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")

CFG = """
name: "{name}" platform: "onnxruntime_onnx" max_batch_size: 32
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }},
        {{ name: "ids" data_type: TYPE_INT64 dims: [ -1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] {label} }} ]
parameters: {{ key: "max_seq_length" value: {{ string_value: "64" }} }}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""
SKLEARN_CFG = """
name: "clf" backend: "sklearn" max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "PROB" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def make_repo(tmp_path: Path) -> Path:
    """toy (ONNX), tagger (ONNX with a label file in its version folder), clf (sklearn)."""
    root = tmp_path / "repo"
    lock = Lock(wheels={"w": WheelLock("w", "1.0", "w-1.0-py3-none-any.whl", "0" * 64)})
    files = {
        "toy": (CFG.format(name="toy", label=""), {"model.onnx": b"toy onnx"}),
        "tagger": (CFG.format(name="tagger", label='label_filename: "labels.csv"'),
                   {"model.onnx": b"tagger onnx", "labels.csv": b"a\nb\nc\nd\n"}),
        "clf": (SKLEARN_CFG, {"model.joblib": b"m"}),
    }
    for model, (cfg, blobs) in files.items():
        (root / model / "1").mkdir(parents=True)
        (root / model / "config.pbtxt").write_text(cfg)
        for fname, data in blobs.items():
            (root / model / "1" / fname).write_bytes(data)
            rel = f"{model}/1/{fname}"
            lock.files[rel] = FileLock(rel, model, "w", "0" * 64, fname, sha256_bytes(data), "copy",
                                       len(data), sha256_bytes(data))
    write_lock(root, lock)
    (root / "pipeline.toml").write_text('[audio]\nmodel = "toy"\nbatch_size = 8\n')
    return root


def _compile(monkeypatch, *args):
    from engine import cli
    from engine.backends.tensorrt import compile as trt_compile

    trt = fake_trt("10.13.0", inputs=("ids", "x"))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_compile, "torch_gpu", lambda: H100)
    return cli.main(["compile", *args]), trt


def test_compile_writes_triton_layout(tmp_path, monkeypatch, capsys):
    repo = make_repo(tmp_path)
    out = tmp_path / "triton"
    rc, trt = _compile(monkeypatch, "--repo", str(repo), "--out", str(out), "--precision", "fp32")
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["tagger", "toy"]  # the sklearn model is skipped
    assert trt._builder.build_serialized_network.call_count == 2
    for model in ("toy", "tagger"):
        plan = out / model / "1" / "model.plan"
        assert plan.read_bytes() == b"PLAN"
        meta = json.loads((out / model / "1" / "model.plan.json").read_text())
        assert (meta["precision"], meta["gpu_name"], meta["trt_version"]) == ("fp32", H100.name, "10.13.0")
        assert meta["plan_sha256"] == trtc.sha256_bytes(b"PLAN")
        cfg = load_config(out / model / "config.pbtxt")
        validate_config(cfg, out / model / "config.pbtxt", folder_name=model)
        assert (cfg.platform, cfg.default_model_filename, cfg.max_batch_size) == ("tensorrt_plan", "model.plan", 32)
        # tuned for the pipeline's batch size where it names the model, else max_batch_size
        opt = {name: o for name, _, o, _ in meta["profiles"][0]}
        assert opt["x"] == [8 if model == "toy" else 32, 4] and opt["ids"] == opt["x"][:1] + [32]
        # the engine is in the source repository's cache too, under the key in the sidecar
        assert (repo / model / "1" / "trt" / f"{meta['key']}.plan").is_file()
    assert (out / "tagger" / "labels.csv").read_bytes() == b"a\nb\nc\nd\n"  # Triton reads it there
    assert "toy: " in capsys.readouterr().out
    # a second run finds the engines in the cache and builds nothing
    rc, trt2 = _compile(monkeypatch, "--repo", str(repo), "--out", str(out),
                        "--precision", "fp32", "--models", "toy")
    assert rc == 0 and trt2._builder.build_serialized_network.call_count == 0
    assert "from the engine cache" in capsys.readouterr().out


def test_compile_refusals(tmp_path, monkeypatch, capsys):
    repo = make_repo(tmp_path)
    rc, _ = _compile(monkeypatch, "--repo", str(repo), "--out", str(tmp_path / "t"), "--models", "clf")
    assert rc == 2 and "not an ONNX model" in capsys.readouterr().err
    rc, _ = _compile(monkeypatch, "--repo", str(repo), "--out", str(tmp_path / "t"), "--models", "nope")
    assert rc == 2 and "'nope' not found" in capsys.readouterr().err
    with pytest.raises(InputError, match="outside the model repository"):
        compile_repository(ModelRepository(repo), repo / "triton", trt=fake_trt("10.13.0"), gpu=H100)
    assert default_output(repo) == tmp_path / "repo_tensorrt"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_compile_without_tensorrt_is_one_line(tmp_path):
    repo = make_repo(tmp_path)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "compile", "--repo", str(repo)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("engine: ModelError: TensorRT is not installed")
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "repo_tensorrt").exists()


def test_shipped_pipeline_sets_the_opt_batch():
    from engine.pipeline import load_pipeline

    assert pipeline_batch_sizes(load_pipeline(ROOT / "model_repo")) == {"open_nsfw": 16, "yamnet": 64}
    cfg = load_config(ROOT / "model_repo" / "open_nsfw" / "config.pbtxt")
    entry = ModelEntry("open_nsfw", cfg, ROOT / "model_repo" / "open_nsfw" / "1")
    (p,) = engine_profiles(entry)
    assert (p["input:0"].opt, p["input:0"].max) == ((16, 224, 224, 3), (32, 224, 224, 3))
