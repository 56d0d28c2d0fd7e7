"""The torch backend: ONNX -> torch conversion and its fixes, CPU parity with ONNX Runtime,
the CUDA-side logic that runs on the CPU (buckets, padding, fp16 check), and real-GPU tests
(``gpu`` marker: they skip without CUDA and have not run in this project)."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest

import torch
from onnx import TensorProto, helper

from engine.backends import BACKEND_CHOICES, load_backend, resolve_backend
from engine.backends import torchvision_placeholder as tvp
from engine.backends.onnx_to_torch import graph_io, host_sync_free, to_torch
from engine.backends.onnx_static import input_dims, specialize
from engine.backends.torch_cuda import (BucketedRunner, Step, batch_buckets, bucket_for, calibration_inputs,
                                        fp16_check, fp16_errors, fp16_setting, length_buckets_setting,
                                        parse_device, pool_tensors, share_tensors)
from engine.errors import ConfigError, InputError, ModelError

CUDA = torch.cuda.is_available()


def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _ort(model, feed):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def _torch_run(model, feed):
    module = to_torch(model, "test")
    with torch.inference_mode():
        out = module(*[torch.from_numpy(v) for v in feed.values()])
    return [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


# ----------------------------------------------------------------------------- torchvision placeholder


def test_placeholder_ops_raise_model_error():
    mods = tvp.placeholder_modules()
    assert mods["torchvision"].ops is mods["torchvision.ops"]
    for op in ("nms", "roi_align", "box_convert"):
        with pytest.raises(ModelError, match=f"torchvision.ops.{op}"):
            getattr(mods["torchvision.ops"], op)(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_placeholder_is_not_left_in_sys_modules():
    tvp.import_onnx2torch()
    if tvp.real_torchvision_works():
        assert not tvp.using_placeholder()
    else:  # this environment: onnx2torch got the placeholder, nobody else sees it
        assert tvp.using_placeholder()
        assert "torchvision" not in sys.modules and "torchvision.ops" not in sys.modules


def test_graph_needing_torchvision_is_refused_at_load():
    if not tvp.using_placeholder():
        pytest.skip("a real torchvision is installed")
    i64 = TensorProto.INT64
    model = _graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"])],
        [_vi("boxes", [1, 4, 4]), _vi("scores", [1, 1, 4])], [_vi("sel", [None, 3], i64)], opset=11)
    with pytest.raises(ModelError, match="NonMaxSuppression"):
        to_torch(model, "detector")


# ----------------------------------------------------------------------------- conversion fixes


@pytest.mark.parametrize("shape,axis", [((3, 4), 2), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((2, 3, 4), 3)])
def test_flatten_matches_onnx(shape, axis):
    # onnx2torch 1.5.15 fails for axis == rank (MiniLM's Flatten(axis=2) of [B, S])
    model = _graph([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], [_vi("x", list(shape))],
                   [_vi("y", None)])
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    (want,), (got,) = _ort(model, {"x": x}), _torch_run(model, {"x": x})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target,allowzero", [([0, -1], 0), ([-1, 4], 0), ([2, 0, 3], 1), ([4, 6], 0)])
def test_reshape_to_constant_shape(target, allowzero):
    shape = helper.make_tensor("shape", TensorProto.INT64, [len(target)], target)
    model = _graph([helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=allowzero)],
                   [_vi("x", [2, 12] if not allowzero else [2, 0, 3])], [_vi("y", None)], [shape], opset=19)
    x = np.arange(24 if not allowzero else 0, dtype=np.float32).reshape((2, 12) if not allowzero else (2, 0, 3))
    (want,), (got,) = _ort(model, {"x": x}), _torch_run(model, {"x": x})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _dynamic_reshape_model():
    """Reshape x [2, 12] to the runtime shape of y: onnx2torch's tensor-shape Reshape."""
    return _graph([helper.make_node("Shape", ["y"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["z"])],
                  [_vi("x", [2, 12]), _vi("y", [4, 6])], [_vi("z", None)])


def test_reshape_to_computed_shape_and_host_sync_check():
    model = _dynamic_reshape_model()
    feed = {"x": np.arange(24, dtype=np.float32).reshape(2, 12), "y": np.zeros((4, 6), np.float32)}
    (want,), (got,) = _ort(model, feed), _torch_run(model, feed)
    np.testing.assert_array_equal(got, want)
    # onnx2torch's tensor Reshape reads the shape tensor on the host: not capturable
    example = [torch.from_numpy(v) for v in feed.values()]
    assert not host_sync_free(to_torch(model, "dyn"), example)
    static = _graph([helper.make_node("Reshape", ["x", "shape"], ["z"]), helper.make_node("Relu", ["z"], ["r"])],
                    [_vi("x", [2, 12])], [_vi("r", None)],
                    [helper.make_tensor("shape", TensorProto.INT64, [2], [4, 6])])
    assert host_sync_free(to_torch(static, "static"), example[:1])


def _named_dynamic_model(batch="N", length="L"):
    """y = Reshape(x, [N, L, 2] computed from Shape(x)) + 1: sizes read at run time."""
    s = helper.make_tensor
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "two"], ["nl"]),
             helper.make_node("Concat", ["nl", "two_"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Add", ["r", "one"], ["y"])]
    inits = [s("zero", TensorProto.INT64, [1], [0]), s("two", TensorProto.INT64, [1], [2]),
             s("two_", TensorProto.INT64, [1], [2]), s("one", TensorProto.FLOAT, [], [1.0])]
    return _graph(nodes, [_vi("x", [batch, length, 2])], [_vi("y", [batch, length, 2])], inits)


def test_specialize_fixes_named_dims_and_folds_the_shape_chain(tmp_path):
    import onnx

    model = _named_dynamic_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert input_dims(model) == {"x": ["N", "L", 2]}
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).astype(np.float32)
    example = [torch.from_numpy(x)]
    assert not host_sync_free(to_torch(model, "dyn"), example)
    static = specialize(path, {"N": 3, "L": 5}, "m")
    assert "Shape" not in {n.op_type for n in static.graph.node}
    assert input_dims(static) == {"x": [3, 5, 2]}
    module = to_torch(static, "static")
    assert host_sync_free(module, example)
    with torch.inference_mode():
        np.testing.assert_array_equal(module(*example).numpy(), x + 1)
    with pytest.raises(ModelError, match=r"dynamic dimensions \['L'\]"):
        specialize(path, {"N": 3}, "m")
    unnamed = tmp_path / "u.onnx"
    onnx.save(_named_dynamic_model(length=None), unnamed)
    with pytest.raises(ModelError, match=r"x\[1\]"):
        specialize(unnamed, {"N": 3}, "m")


def test_length_buckets_need_named_batch_and_length_dims():
    """The specialiser maps the graph's batch dimension name to the rows and the names of the
    config's -1 dimensions to the length; unnamed or shared names are refused at load."""
    from types import SimpleNamespace

    from engine.backends.base import TensorSpec
    from engine.backends.torch_backend import TorchBackend

    be = SimpleNamespace(inputs=[TensorSpec("x", np.dtype(np.float32), (-1, 2))], model_name="m", path="m.onnx")
    assert callable(TorchBackend._specialiser(be, {"x": ["N", "L", 2]}))
    for dims in ({"x": ["N", None, 2]}, {"x": [None, "L", 2]}, {"x": ["N", "N", 2]}):
        with pytest.raises(ModelError, match="named dynamic dimensions"):
            TorchBackend._specialiser(be, dims)


def test_opset_aliases_convert_and_match():
    # Identity/Reshape at opset 19 and GreaterOrEqual at 16 are missing from onnx2torch 1.5.15
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [3, 2])
    model = _graph([helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Reshape", ["i", "shape"], ["r"]),
                    helper.make_node("GreaterOrEqual", ["r", "t"], ["y"])],
                   [_vi("x", [2, 3]), _vi("t", [3, 2])], [_vi("y", None, TensorProto.BOOL)], [shape], opset=19)
    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.full((3, 2), 2.5, np.float32)}
    (want,), (got,) = _ort(model, feed), _torch_run(model, feed)
    np.testing.assert_array_equal(got, want)


def test_graph_io_skips_initializers_and_keeps_order():
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1, 2, 3])
    model = _graph([helper.make_node("Add", ["b", "w"], ["s"]), helper.make_node("Mul", ["s", "a"], ["y"])],
                   [_vi("b", ["N", 3]), _vi("a", [1, 3]), _vi("w", [3])], [_vi("y", ["N", 3])], [w])
    ins, outs = graph_io(model)
    assert list(ins) == ["b", "a"] and list(outs) == ["y"]
    assert ins["b"].shape == ("N", 3) and ins["b"].dtype == np.float32


# ----------------------------------------------------------------------------- CUDA-side logic on the CPU


def test_parse_device():
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device("cuda:3") == ("cuda", 3)
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA:0", "cpu:0"):
        with pytest.raises(ModelError, match="expected 'cpu'"):
            parse_device(bad)


def test_batch_buckets_and_bucket_for():
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert batch_buckets(1) == (1,)
    b = batch_buckets(64)
    assert [bucket_for(n, b) for n in (1, 2, 3, 5, 17, 33, 64)] == [1, 2, 4, 8, 32, 64, 64]
    with pytest.raises(InputError, match="exceeds"):
        bucket_for(65, b)
    with pytest.raises(InputError):
        batch_buckets(0)


def test_bucketed_runner_pads_and_unpads():
    """Eager steps over the same fixed buffers a CUDA graph would capture."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3).eval()
    made = []

    def make_step(key):
        made.append(key)
        buf = torch.full((key[0], 5), float("nan"))  # the padding must be overwritten, never read

        def run():
            with torch.inference_mode():
                return [lin(buf), buf.sum(1, keepdim=True)]

        return Step([buf], run)

    runner = BucketedRunner(make_step, batch_buckets(8))
    x = torch.randn(8, 5)
    for rows in (8, 3, 1, 5, 3):
        y, s = runner.run([x[:rows]])
        assert y.shape == (rows, 3) and s.shape == (rows, 1)
        with torch.inference_mode():
            torch.testing.assert_close(y, lin(x[:rows]))
        torch.testing.assert_close(s, x[:rows].sum(1, keepdim=True))
        bucket = bucket_for(rows, runner.buckets)
        assert runner.steps[(bucket,)].inputs[0][rows:].eq(0).all()  # padding rows are zero
    assert made == [(8,), (4,), (1,)]  # one step per bucket, made on first use
    assert runner.keys() == [(b,) for b in batch_buckets(8)]


def test_bucketed_runner_pads_lengths():
    """Length buckets (Note [length buckets]): inputs zero-padded along their dynamic axes, the
    outputs' dynamic axes cut back; a masked mean over the tokens is unchanged by the padding."""
    made = []

    def make_step(key):
        made.append(key)
        rows, n = key
        ids = torch.full((rows, n), -7, dtype=torch.int64)  # poisoned: every element is written
        mask = torch.full((rows, n), -7, dtype=torch.int64)
        feats = torch.full((rows, 2, n), float("nan"))

        def run():
            m = mask.unsqueeze(1).float()
            tokens = feats * m + ids.unsqueeze(1).float()  # [rows, 2, n]: output axis 2 dynamic
            mean = (feats * m).sum(2) / m.sum(2).clamp_min(1)  # [rows, 2]: static
            return [tokens, mean]

        return Step([ids, mask, feats], run)

    runner = BucketedRunner(make_step, batch_buckets(4), lengths=(4, 8), dynamic_in=[(1,), (1,), (2,)],
                            dynamic_out=[(2,), ()])
    g = torch.Generator().manual_seed(1)
    for rows, n in ((3, 5), (1, 2), (4, 8), (3, 3)):
        ids = torch.randint(1, 100, (rows, n), generator=g)
        mask = (torch.rand(rows, n, generator=g) < 0.7).long()
        feats = torch.randn(rows, 2, n, generator=g)
        tokens, mean = runner.run([ids, mask, feats])
        assert tokens.shape == (rows, 2, n) and mean.shape == (rows, 2)
        m = mask.unsqueeze(1).float()
        torch.testing.assert_close(tokens, feats * m + ids.unsqueeze(1).float())
        torch.testing.assert_close(mean, (feats * m).sum(2) / m.sum(2).clamp_min(1))
        step = runner.steps[runner.key([ids, mask, feats])]
        assert step.inputs[1][:, n:].eq(0).all() and step.inputs[1][rows:].eq(0).all()  # padding = masked
        assert step.inputs[2][:rows, :, n:].eq(0).all()
    assert made == [(4, 8), (1, 4), (4, 4)]
    assert runner.key([torch.zeros(2, 9)] * 2 + [torch.zeros(2, 2, 9)]) is None  # longer: eager
    with pytest.raises(InputError, match="differ"):
        runner.key([torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 2, 3)])
    assert runner.keys() == [(b, n) for b in (1, 2, 4) for n in (4, 8)]


def test_fp16_errors():
    ref = [np.array([[1.0, -2.0], [4.0, 0.5]]), np.array([10.0, 20.0])]
    assert fp16_errors(ref, ref) == [0.0, 0.0]
    got = [ref[0] + np.array([[0.0, 0.04], [0.0, 0.0]]), np.array([10.0, np.inf])]
    err = fp16_errors(ref, got)
    assert err[0] == pytest.approx(0.04 / 4.0) and err[1] == float("inf")
    assert fp16_errors([np.zeros(3)], [np.full(3, 1e-3)]) == [pytest.approx(1e-3)]
    assert fp16_errors([np.zeros(3)], [np.zeros(4)]) == [float("inf")]


def test_fp16_check_refuses_an_overflowing_model():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    x = [torch.randn(3, 8)]
    ok, err = fp16_check(lin, x, [0], device_type="cpu")
    assert ok and 0 < err[0] < 1e-2  # fp16 really ran, and rounds well inside the tolerance
    assert not fp16_check(lin, x, [0], device_type="cpu", tolerance=err[0] / 2)[0]
    with torch.no_grad():
        lin.weight.mul_(1e5)  # outputs beyond fp16's 65504: inf under autocast
    ok, err = fp16_check(lin, x, [0], device_type="cpu")
    assert not ok and err == [float("inf")]


def test_calibration_inputs_are_seeded_and_valid():
    from engine.backends.base import TensorSpec

    specs = [TensorSpec("x", np.dtype(np.float32), (3, -1)), TensorSpec("ids", np.dtype(np.int64), (-1,))]
    a, b = calibration_inputs(specs, 2), calibration_inputs(specs, 2)
    assert a["x"].shape == (2, 3, 16) and a["x"].dtype == np.float32
    assert a["ids"].shape == (2, 16) and set(np.unique(a["ids"])) <= {0, 1}
    np.testing.assert_array_equal(a["x"], b["x"])
    assert calibration_inputs(specs, 0)["x"].shape == (3, 16)


def _config_entry(tmp_path, **params):
    """A ModelEntry of model "m" whose config.pbtxt has these string ``parameters``."""
    from tritonclient.grpc import model_config_pb2 as mc

    from engine.repo import ModelEntry

    cfg = mc.ModelConfig(name="m")
    for k, v in params.items():
        cfg.parameters[k].string_value = v
    return ModelEntry("m", cfg, tmp_path / "m" / "1")


def test_fp16_setting_from_config(tmp_path):
    def entry(**params):
        return _config_entry(tmp_path, **params)

    assert fp16_setting(entry()) == ("auto", 1e-2)
    assert fp16_setting(entry(torch_fp16="FALSE", torch_fp16_tolerance="0.05")) == ("false", 0.05)
    with pytest.raises(ConfigError) as e:
        fp16_setting(entry(torch_fp16="sometimes"))
    assert e.value.field == "parameters.torch_fp16"
    with pytest.raises(ConfigError, match="positive"):
        fp16_setting(entry(torch_fp16_tolerance="-1"))


def test_length_buckets_setting(tmp_path):
    def entry(**params):
        return _config_entry(tmp_path, **params)

    assert length_buckets_setting(entry()) == ()
    assert length_buckets_setting(entry(torch_length_buckets="64, 16,32,16")) == (16, 32, 64)
    for bad in ("", "16,x", "0,16", "-4"):
        with pytest.raises(ConfigError, match="positive lengths"):
            length_buckets_setting(entry(torch_length_buckets=bad))


def test_share_tensors_keeps_one_copy_of_equal_weights():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())  # equal values, other tensors
    c = torch.nn.Linear(4, 3)  # other values
    for m in (a, b):
        m.register_buffer("steps", torch.arange(3))
        m.register_buffer("ones", torch.ones(1).expand(4))  # stride 0, as onnx2torch makes some
    pool: dict = {}
    pool_tensors(share_tensors(a, pool), pool)
    assert len(pool) == 4
    assert share_tensors(b, pool) == []
    assert b.weight is a.weight and b.bias is a.bias and b.steps is a.steps and b.ones is a.ones
    assert isinstance(b.weight, torch.nn.Parameter)
    missing = share_tensors(c, pool)
    assert len(missing) == 2 and c.weight is not a.weight
    pool_tensors(missing, pool)
    assert len(pool) == 6


# ----------------------------------------------------------------------------- backend choice


def test_resolve_backend(monkeypatch, caplog):
    import engine.backends as backends

    assert BACKEND_CHOICES == ("auto", "onnxruntime", "torch", "tensorrt")
    assert resolve_backend("auto", "cpu") == "onnxruntime"
    assert resolve_backend("torch", "cpu") == "torch"
    usable = {"tensorrt": True, "torch": True}
    monkeypatch.setattr(backends, "_cuda_usable", lambda what: usable[what])
    assert resolve_backend("auto", "cuda") == "tensorrt"
    usable["tensorrt"] = False
    assert resolve_backend("auto", "cuda") == "torch"
    usable["torch"] = False
    with caplog.at_level(logging.WARNING, logger="engine.backends"):
        assert resolve_backend("auto", "cuda") == "onnxruntime"
    assert "falling back to ONNX Runtime" in caplog.text


def _fake_entry(**config):
    from tritonclient.grpc import model_config_pb2 as mc

    return types.SimpleNamespace(name="m", config=mc.ModelConfig(name="m", **config))


@pytest.mark.parametrize("config,kwargs,match", [
    ({"platform": "onnxruntime_onnx"}, {"backend": "fast"}, "not one of"),
    ({"platform": "onnxruntime_onnx"}, {"device": "gpu"}, "expected 'cpu'"),
    ({"platform": "onnxruntime_onnx"}, {"device": "cuda", "backend": "onnxruntime"}, "CPU only"),
    ({"platform": "onnxruntime_onnx"}, {"backend": "tensorrt"}, "needs a CUDA device"),
    ({"backend": "sklearn"}, {"backend": "torch"}, "sklearn backend only"),
    ({"platform": "tensorrt_plan"}, {}, "no backend for platform"),
])
def test_load_backend_refuses(config, kwargs, match):
    with pytest.raises(ModelError, match=match):
        load_backend(_fake_entry(**config), **kwargs)


@pytest.mark.models
def test_sklearn_models_stay_sklearn_on_the_cpu(model_entry):
    assert load_backend(model_entry("profanity"), device="cuda:1").name == "sklearn"


def test_tensorrt_runtime_missing_is_a_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "engine.backends.tensorrt.runtime", None)  # import fails
    with pytest.raises(ModelError, match="TensorRT runtime is unavailable"):
        load_backend(_fake_entry(platform="onnxruntime_onnx"), device="cuda", backend="tensorrt")


# ----------------------------------------------------------------------------- real models (CPU)

# Measured on the development CPU (torch 2.13.0+cpu vs onnxruntime 1.32.0, inputs below):
# open_nsfw outputs 7e-9 / embedding 5.2e-6 (of max 6.2), yamnet class_scores 5.1e-5 (of max 46)
# / embedding 5e-6, minilm token_embeddings 2.4e-6 (of max 6.1): summation order only. The bound:
# |torch - ort| <= 1e-4 * max|ort| + 1e-4 * |ort| per element.
REL = 1e-4


def _feed(name, rng):
    if name == "open_nsfw":  # BGR minus the Caffe mean (ResNet-50: few rows keep it quick)
        return {"input:0": rng.uniform(-123, 151, (3, 224, 224, 3)).astype(np.float32)}
    if name == "yamnet":  # log-mel patches; 70 rows > max_batch_size 64: split in two
        return {"audio": rng.normal(-4, 2, (70, 1, 96, 64)).astype(np.float32)}
    ids = rng.integers(1000, 30000, (5, 33))
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    mask[3, 20:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def assert_matches_ort(got, want):
    assert set(got) == set(want)
    for k, ref in want.items():
        assert got[k].shape == ref.shape and got[k].dtype == ref.dtype, k
        bound = REL * np.abs(ref).max() + REL * np.abs(ref)
        worst = float((np.abs(got[k] - ref) - bound).max())
        assert worst <= 0, f"{k}: {np.abs(got[k] - ref).max()} above the bound"


@pytest.mark.models
@pytest.mark.parametrize("name", ["open_nsfw", "yamnet", "minilm"])
def test_torch_cpu_matches_onnxruntime(model_entry, name):
    entry = model_entry(name)
    tb = load_backend(entry, backend="torch")
    ob = load_backend(entry, backend="onnxruntime")
    assert tb.name == "torch" and not tb.fp16
    assert [s.name for s in tb.outputs] == [s.name for s in ob.outputs]  # embedding outputs included
    feed = _feed(name, np.random.default_rng(7))
    assert_matches_ort(tb.infer(feed), ob.infer(feed))


@pytest.mark.models
@pytest.mark.parametrize("name", ["open_nsfw", "yamnet", "minilm"])
def test_fp16_check_on_the_real_models(model_entry, name):
    """The load-time fp16 decision, run under the CPU's fp16 autocast (CUDA runs it on the GPU).
    Measured here: open_nsfw 2.9e-4 / 6.6e-3, yamnet 3.2e-3 / 2.7e-3, minilm 2.0e-3."""
    be = load_backend(model_entry(name), backend="torch")
    specs = {s.name: s for s in be.inputs}
    feed = calibration_inputs([specs[n] for n in be._input_order], be.max_batch_size, rows=2)
    ok, errors = fp16_check(be._module, [torch.from_numpy(a) for a in feed.values()], be._output_index,
                            device_type="cpu")
    assert ok, errors
    assert all(0 < e < 1e-2 for e in errors), errors  # > 0: fp16 really ran


@pytest.mark.models
def test_minilm_specialised_to_a_bucket_matches_the_dynamic_graph(model_entry):
    """What a CUDA graph of the (8, 64) bucket runs (Note [length buckets]), on the CPU: the
    graph with fixed sizes, no host reads, and zero-padded inputs give ONNX Runtime's outputs on
    the valid rows and tokens."""
    import onnx

    entry = model_entry("minilm")
    be = load_backend(entry, backend="torch")
    assert length_buckets_setting(entry) == (16, 32, 64, 128, 256)
    dims = input_dims(onnx.load(str(be.path), load_external_data=False))
    module = be._specialiser(dims)(8, 64)
    feed = _feed("minilm", np.random.default_rng(7))  # 5 texts x 33 tokens
    padded = []
    for name in be._input_order:
        buf = np.zeros((8, 64), np.int64)
        buf[:5, :33] = feed[name]
        padded.append(torch.from_numpy(buf))
    assert host_sync_free(module, padded)
    with torch.inference_mode():
        got = module(*padded)[:5, :33].numpy()
    want = load_backend(entry, backend="onnxruntime").infer(feed)
    assert_matches_ort({"token_embeddings": got}, want)


@pytest.mark.models
def test_torch_backend_validates_like_onnxruntime(model_entry):
    import dataclasses

    from tritonclient.grpc import model_config_pb2 as mc

    be = load_backend(model_entry("yamnet"), backend="torch")
    with pytest.raises(InputError, match="shape"):
        be.infer({"audio": np.zeros((2, 96, 64), np.float32)})
    with pytest.raises(InputError, match="missing"):
        be.infer({})
    assert be.infer({"audio": np.zeros((0, 1, 96, 64), np.float32)})["class_scores"].shape == (0, 521)
    be.warmup()
    entry = model_entry("open_nsfw")
    cfg = mc.ModelConfig()
    cfg.CopyFrom(entry.config)
    cfg.output[1].dims[0] = 512
    with pytest.raises(ModelError, match="contradicts"):
        load_backend(dataclasses.replace(entry, config=cfg), backend="torch")


@pytest.mark.models
def test_session_runs_the_pipelines_backend_choice(tmp_path, model_repo_path, stack):
    """backend = "torch" in pipeline.toml: the Session loads torch backends on the CPU, with the
    ONNX Runtime session's results."""
    import engine

    for item in model_repo_path.iterdir():
        if item.name != "pipeline.toml":
            (tmp_path / item.name).symlink_to(item)
    text = (model_repo_path / "pipeline.toml").read_text()
    assert text.count('backend = "auto"') == 3
    (tmp_path / "pipeline.toml").write_text(text.replace('backend = "auto"', 'backend = "torch"'))
    torch_session = stack.enter_context(engine.Session(tmp_path))
    ort_session = stack.enter_context(engine.Session(model_repo_path))
    assert {m: torch_session.backend(m).name for m in ("open_nsfw", "yamnet", "minilm", "profanity")} == {
        "open_nsfw": "torch", "yamnet": "torch", "minilm": "torch", "profanity": "sklearn"}
    assert ort_session.backend("open_nsfw").name == "onnxruntime"
    image = np.random.default_rng(3).integers(0, 256, (300, 400, 3), np.uint8)
    texts = ["I will hurt you", "a quiet walk in the park"]
    a = torch_session.moderate(image=image, text=texts)
    b = ort_session.moderate(image=image, text=texts)
    assert a.policies.keys() == b.policies.keys()
    for k in a.policies:
        assert a.policies[k].score == pytest.approx(b.policies[k].score, rel=1e-4, abs=1e-5), k
    np.testing.assert_allclose(torch_session.embed(text=texts)["text"], ort_session.embed(text=texts)["text"],
                               atol=1e-5)


# ----------------------------------------------------------------------------- real GPU (not run here)

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.mark.gpu
@pytest.mark.models
@needs_cuda
@pytest.mark.parametrize("name", ["open_nsfw", "yamnet", "minilm"])
def test_cuda_outputs_match_onnxruntime(model_entry, name):
    entry = model_entry(name)
    cuda = load_backend(entry, device="cuda", backend="torch")
    cuda.warmup()
    feed = _feed(name, np.random.default_rng(7))
    want = load_backend(entry, backend="onnxruntime").infer(feed)
    got = cuda.infer(feed)
    # fp16 (when the check kept it) rounds at ~5e-4; 1e-2 of the output's range is the fp16 tolerance
    tol = 1e-2 if cuda.fp16 else 1e-4
    for k, ref in want.items():
        assert got[k].shape == ref.shape
        assert np.abs(got[k] - ref).max() <= tol * np.abs(ref).max() + 1e-5, k
    # graphs captured per bucket (MiniLM: per batch x length bucket, Note [length buckets])
    assert cuda._cuda.runner is not None and cuda._cuda.runner.steps


@pytest.mark.gpu
@pytest.mark.models
@needs_cuda
def test_cuda_minilm_lengths_across_buckets(model_entry):
    """Texts of several lengths: each call in its (batch, length) graph, a length above the
    largest bucket eagerly; all equal ONNX Runtime within the fp16 tolerance."""
    entry = model_entry("minilm")
    cuda = load_backend(entry, device="cuda", backend="torch")
    ort = load_backend(entry, backend="onnxruntime")
    rng = np.random.default_rng(11)
    for rows, n in ((5, 33), (3, 7), (1, 200), (2, 16), (2, 300)):
        ids = rng.integers(1000, 30000, (rows, n))
        mask = np.ones_like(ids)
        mask[0, n // 2:] = 0
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        got, want = cuda.infer(feed)["token_embeddings"], ort.infer(feed)["token_embeddings"]
        tol = 1e-2 if cuda.fp16 else 1e-4
        assert got.shape == want.shape and np.abs(got - want).max() <= tol * np.abs(want).max() + 1e-5, (rows, n)
    assert set(cuda._cuda.runner.steps) == {(8, 64), (4, 16), (1, 256), (2, 16)}


@pytest.mark.gpu
@pytest.mark.models
@needs_cuda
def test_cuda_device_arrays_in_and_out(model_entry):
    be = load_backend(model_entry("yamnet"), device="cuda", backend="torch")
    x = torch.randn(70, 1, 96, 64, device="cuda")
    out = be.infer({"audio": x})
    assert out["class_scores"].is_cuda and out["class_scores"].shape == (70, 521)
    host = be.infer({"audio": x.cpu().numpy()})
    np.testing.assert_allclose(out["class_scores"].cpu().numpy(), host["class_scores"], atol=1e-5)
