"""Backends: batch splitting, input validation, and the real fetched models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.backends import BaseBackend, TensorSpec, load_backend, run_batched, split_batches
from engine.errors import InputError, ModelError


def test_run_batched_splits_and_concatenates():
    seen = []

    def run(batch):
        seen.append(len(batch["x"]))
        return {"y": batch["x"] * 2, "n": np.full((len(batch["x"]), 1), len(batch["x"]))}

    x = np.arange(70, dtype=np.float32).reshape(70, 1)
    out = run_batched(run, {"x": x}, 70, 32)
    assert seen == [32, 32, 6]
    np.testing.assert_array_equal(out["y"], x * 2)
    assert out["n"][:, 0].tolist() == [32] * 64 + [6] * 6
    seen.clear()
    run_batched(run, {"x": x[:32]}, 32, 32)
    run_batched(run, {"x": x}, 70, 0)  # no batching dimension: one call
    assert seen == [32, 70]
    assert split_batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]


class Echo(BaseBackend):
    name = "echo"

    def __init__(self, max_batch_size=4):
        super().__init__("echo", max_batch_size,
                         [TensorSpec("a", np.dtype(np.float32), (3,)), TensorSpec("b", np.dtype(np.int64), (-1,))],
                         [TensorSpec("y", np.dtype(np.float32), (3,))])
        self.calls = []

    def _run(self, inputs):
        self.calls.append({k: v.shape for k, v in inputs.items()})
        return {"y": inputs["a"] + inputs["b"].sum(1, keepdims=True).astype(np.float32)}


def test_base_backend_splits_larger_batches():
    be = Echo(max_batch_size=4)
    a = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    b = np.ones((10, 5), np.int64)
    y = be.infer({"a": a, "b": b})["y"]
    assert [c["a"][0] for c in be.calls] == [4, 4, 2]
    np.testing.assert_allclose(y, a + 5)
    assert be.infer({"a": a[:0], "b": b[:0]})["y"].shape == (0, 3)
    be.warmup()


@pytest.mark.parametrize(
    "inputs,match",
    [
        ({"a": np.zeros((2, 3), np.float32)}, "missing"),
        ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 1), np.int64), "c": 1}, "unknown"),
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 1), np.int64)}, "shape"),
        ({"a": np.zeros((3,), np.float32), "b": np.zeros((2, 1), np.int64)}, "shape"),
        ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 1), np.int64)}, "batch size"),
        ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 1), np.float32)}, "dtype"),
        ({"a": np.zeros((2, 3), np.complex64), "b": np.zeros((2, 1), np.int64)}, "dtype"),
    ],
)
def test_input_validation(inputs, match):
    with pytest.raises(InputError, match=match):
        Echo().infer(inputs)


def test_safe_casts_are_accepted():
    y = Echo().infer({"a": np.zeros((2, 3), np.float64), "b": np.zeros((2, 1), np.int32)})["y"]
    assert y.dtype == np.float32


# ----------------------------------------------------------------------------- real models


@pytest.mark.models
@pytest.mark.parametrize("name,batch", [("open_nsfw", 3), ("yamnet", 5), ("minilm", 2), ("profanity", 4)])
def test_real_backend_shapes(model_entry, name, batch):
    be = load_backend(model_entry(name), threads=1)
    assert be.model_name == name and be.max_batch_size > 0
    be.warmup()
    inputs = be._dummy_inputs(batch=batch, dynamic=7)
    out = be.infer(inputs)
    assert set(out) == {s.name for s in be.outputs}
    for s in be.outputs:
        want = (batch,) + tuple(7 if d == -1 else d for d in s.shape)
        assert out[s.name].shape == want and out[s.name].dtype == s.dtype


@pytest.mark.models
def test_onnx_split_equals_single_runs(model_entry):
    be = load_backend(model_entry("yamnet"), threads=1)
    x = np.random.default_rng(0).normal(-2, 2, (be.max_batch_size + 3, 1, 96, 64)).astype(np.float32)
    big = be.infer({"audio": x})["class_scores"]
    small = np.concatenate([be.infer({"audio": x[i:i + 8]})["class_scores"] for i in range(0, len(x), 8)])
    assert big.shape == (len(x), 521)
    np.testing.assert_allclose(big, small, atol=1e-4)


@pytest.mark.models
def test_onnx_backend_is_thread_safe(model_entry):
    be = load_backend(model_entry("open_nsfw"), threads=1)
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-120, 130, (2, 224, 224, 3)).astype(np.float32) for _ in range(6)]
    serial = [be.infer({"input:0": x})["outputs"] for x in xs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda x: be.infer({"input:0": x})["outputs"], xs))
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.models
def test_onnx_session_options(model_entry):
    be = load_backend(model_entry("yamnet"), threads=2)
    opts = be.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert be.session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.models
def test_sklearn_backend_inputs(model_entry):
    be = load_backend(model_entry("profanity"))
    a = be.infer({"TEXT": np.array([["you are lovely"], ["shit happens"]], dtype=object)})["PROB"]
    b = be.infer({"TEXT": ["you are lovely", b"shit happens"]})["PROB"]
    assert a.shape == (2, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a[1, 0] > 0.5 > a[0, 0]
    many = [f"text number {i}" for i in range(600)]  # > max_batch_size 256
    assert be.infer({"TEXT": many})["PROB"].shape == (600, 1)
    with pytest.raises(InputError):
        be.infer({"TEXT": [1, 2]})


@pytest.mark.models
def test_backend_rejects_config_model_mismatch(model_repo, model_entry):
    import dataclasses

    from tritonclient.grpc import model_config_pb2 as mc

    entry = model_entry("open_nsfw")
    cfg = mc.ModelConfig()
    cfg.CopyFrom(entry.config)
    cfg.input[0].name = "image"
    with pytest.raises(ModelError, match="image"):
        load_backend(dataclasses.replace(entry, config=cfg))
    cfg.CopyFrom(entry.config)
    cfg.output[0].dims[0] = 3
    with pytest.raises(ModelError, match="contradicts"):
        load_backend(dataclasses.replace(entry, config=cfg))
