"""engine.backends.tensorrt: the logic that runs without TensorRT (fp16 graphs, profiles, cache, dispatch).

Nothing here imports ``tensorrt``; the builder is driven by a fake module. fp16 graphs are run
with ONNX Runtime's CPU provider against the fp32 graph they came from.

Error measure for fp16 graphs: ``max|fp16 - fp32| / max|fp32|`` per output (normalised max
difference). fp16 has unit roundoff u = 2**-11 ~ 4.9e-4; every fp16 tensor between ops is
rounded once, so a graph of depth D accumulates roughly sqrt(D) * u * (conditioning) -- a few
1e-3 for the graphs here. The bounds are set about 5x above what was measured on 2 cores with
onnxruntime 1.32 and are far below what an fp16 overflow (inf/NaN) or a missing Cast would give.
"""

from __future__ import annotations

import json
import sys
from unittest import mock

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from engine.backends.tensorrt import builder as trtb  # noqa: E402
from engine.backends.tensorrt import cache as trtc  # noqa: E402
from engine.backends.tensorrt.fp16 import FP16_MAX, to_fp16  # noqa: E402
from engine.backends.tensorrt.profiles import (  # noqa: E402
    Profile,
    ShapeRange,
    profile_from_config,
    text_profile,
)
from engine.errors import ConfigError, InputError, ModelError  # noqa: E402
from engine.repo.config import parse_config, validate_config  # noqa: E402
from fake_tensorrt import fake_trt  # noqa: E402

OPSET = 17


# --------------------------------------------------------------------------- helpers
def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _model(nodes, inputs, outputs, inits=()):
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _run(model, feed):
    # no graph optimisation: ORT's LayerNormFusion (already at level BASIC) fuses a decomposed
    # LayerNorm kept in fp32 with its fp16 Mul/Add across the Cast into one node with mixed
    # fp32/fp16 inputs, then rejects it ("bound to different types"); the graph itself is valid
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def _norm_max_diff(ref, got):
    assert got.dtype == ref.dtype == np.float32
    assert np.isfinite(got).all()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    out = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    out.update({t.name: t.data_type for t in g.initializer})
    return out


def mlp_ln_softmax(d_in=24, d_hidden=40, d_out=10, seed=0):
    """x[B, d_in] -> MatMul/Add/Relu -> MatMul/Add -> LayerNormalization -> MatMul -> Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("w1", rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_hidden))),
        _init("b1", rng.normal(0, 0.1, d_hidden)),
        _init("w2", rng.normal(0, 1 / np.sqrt(d_hidden), (d_hidden, d_hidden))),
        _init("b2", rng.normal(0, 0.1, d_hidden)),
        _init("gamma", rng.uniform(0.5, 1.5, d_hidden)),
        _init("beta", rng.normal(0, 0.1, d_hidden)),
        _init("w3", rng.normal(0, 2 / np.sqrt(d_hidden), (d_hidden, d_out))),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        h.make_node("Add", ["h1", "b1"], ["h2"], name="add1"),
        h.make_node("Relu", ["h2"], ["h3"], name="relu"),
        h.make_node("MatMul", ["h3", "w2"], ["h4"], name="mm2"),
        h.make_node("Add", ["h4", "b2"], ["h5"], name="add2"),
        h.make_node("LayerNormalization", ["h5", "gamma", "beta"], ["h6"], name="ln", axis=-1, epsilon=1e-5),
        h.make_node("MatMul", ["h6", "w3"], ["logits"], name="mm3"),
        h.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", d_in])],
                  [h.make_tensor_value_info("probs", T.FLOAT, ["B", d_out]),
                   h.make_tensor_value_info("logits", T.FLOAT, ["B", d_out])], inits)


def decomposed_ln(d=48):
    """LayerNorm written out: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, then Mul/Add."""
    rng = np.random.default_rng(1)
    inits = [_init("two", 2.0), _init("eps", 1e-5), _init("g", rng.uniform(0.5, 1.5, d)),
             _init("b", rng.normal(0, 0.1, d))]
    nodes = [
        h.make_node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
        h.make_node("Sub", ["x", "mu"], ["dx"], name="sub"),
        h.make_node("Pow", ["dx", "two"], ["sq"], name="pow"),
        h.make_node("ReduceMean", ["sq"], ["var"], name="var", axes=[-1]),
        h.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        h.make_node("Sqrt", ["ve"], ["std"], name="sqrt"),
        h.make_node("Div", ["dx", "std"], ["xn"], name="div"),
        h.make_node("Mul", ["xn", "g"], ["xg"], name="scale"),
        h.make_node("Add", ["xg", "b"], ["y"], name="shift"),
    ]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", d])],
                  [h.make_tensor_value_info("y", T.FLOAT, ["B", d])], inits)


# --------------------------------------------------------------------------- fp16
def test_fp16_mlp_layernorm_softmax_types_and_accuracy():
    m = mlp_ln_softmax()
    m16, report = to_fp16(m)
    t = _types(m16)
    # boundaries stay fp32
    assert t["x"] == T.FLOAT and t["probs"] == T.FLOAT and t["logits"] == T.FLOAT
    # compute in fp16: weights and the MatMuls' outputs
    assert {n.name: n for n in m16.graph.initializer}["w1__fp16"].data_type == T.FLOAT16
    nodes = {n.name: n for n in m16.graph.node}
    assert t[nodes["mm1"].output[0]] == T.FLOAT16
    assert t[nodes["mm3"].output[0]] == T.FLOAT16
    # sensitive ops see fp32 inputs and weights
    for name in ("ln", "softmax"):
        assert all(t[i] == T.FLOAT for i in nodes[name].input), name
    assert sorted(report.fp32_nodes) == ["LayerNormalization:ln", "Softmax:softmax"]
    # fp32 originals of weights only used in fp16 are dropped
    assert "w1" not in {i.name for i in m16.graph.initializer}

    x = np.random.default_rng(2).normal(0, 2, (7, 24)).astype(np.float32)
    ref, got = _run(m, {"x": x}), _run(m16, {"x": x})
    # measured ~5e-4 (probs) / ~1e-3 (logits): bound 5e-3 (about 10 roundings of u=4.9e-4)
    assert _norm_max_diff(ref["probs"], got["probs"]) < 5e-3
    assert _norm_max_diff(ref["logits"], got["logits"]) < 5e-3
    assert np.allclose(got["probs"].sum(-1), 1, atol=1e-5)  # the softmax ran in fp32


def test_fp16_decomposed_layernorm_runs_in_fp32():
    m = decomposed_ln()
    m16, report = to_fp16(m)
    kept = {s.split(":")[1] for s in report.fp32_nodes}
    assert kept == {"mean", "sub", "pow", "var", "add_eps", "sqrt", "div"}
    t = _types(m16)
    nodes = {n.name: n for n in m16.graph.node}
    # no fp16 round trip inside the chain: Sub's output feeds Pow and Div directly, in fp32
    assert nodes["pow"].input[0] == nodes["sub"].output[0] == nodes["div"].input[0]
    assert t[nodes["sub"].output[0]] == T.FLOAT
    assert t[nodes["scale"].output[0]] == T.FLOAT16
    # |x - mean| > 256 here, so x**2 would overflow fp16 (max 65504) in an fp16 Pow
    x = np.random.default_rng(3).normal(0, 400, (5, 48)).astype(np.float32)
    ref, got = _run(m, {"x": x})["y"], _run(m16, {"x": x})["y"]
    assert _norm_max_diff(ref, got) < 2e-3  # measured 2.6e-4: fp16 rounding of xn, g, b and y
    # Without the island the Pow is fp16. ORT's CPU provider has no fp16 Pow/ReduceMean and
    # silently runs them in fp32, so the overflow cannot be shown numerically here: check types.
    naive, _ = to_fp16(m, keep_ops=frozenset(), detect_layernorm=False)
    assert _types(naive)[next(n for n in naive.graph.node if n.name == "pow").output[0]] == T.FLOAT16


def test_fp16_clips_mask_constants_and_rewrites_casts():
    # scores + (1 - mask) * finfo(float32).min -> Softmax; the mask arrives as int64 and is Cast
    nodes = [
        h.make_node("Cast", ["mask"], ["maskf"], name="cast_mask", to=T.FLOAT),
        h.make_node("Constant", [], ["one"], name="c_one", value=h.make_tensor("v", T.FLOAT, [], [1.0])),
        h.make_node("Constant", [], ["neg"], name="c_neg",
                    value=h.make_tensor("v", T.FLOAT, [], [float(np.finfo(np.float32).min)])),
        h.make_node("Sub", ["one", "maskf"], ["inv"], name="sub"),
        h.make_node("Mul", ["inv", "neg"], ["bias"], name="mul"),
        h.make_node("Add", ["scores", "bias"], ["s2"], name="add"),
        h.make_node("Softmax", ["s2"], ["p"], name="softmax", axis=-1),
    ]
    m = _model(nodes, [h.make_tensor_value_info("scores", T.FLOAT, [2, 6]),
                       h.make_tensor_value_info("mask", T.INT64, [2, 6])],
               [h.make_tensor_value_info("p", T.FLOAT, [2, 6])])
    m16, report = to_fp16(m)
    assert report.clipped_values == 1
    cast = next(n for n in m16.graph.node if n.name == "cast_mask")
    assert cast.attribute[0].i == T.FLOAT16
    neg = next(n for n in m16.graph.node if n.name == "c_neg").attribute[0].t
    assert neg.data_type == T.FLOAT16 and numpy_helper.to_array(neg) == -FP16_MAX
    assert _types(m16)["mask"] == T.INT64
    # the graph output comes straight from the fp32 Softmax: Identity, not a Cast pair
    assert [n.op_type for n in m16.graph.node if "p" in n.output] == ["Identity"]
    scores = np.random.default_rng(4).normal(0, 3, (2, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.int64)
    ref, got = _run(m, {"scores": scores, "mask": mask})["p"], _run(m16, {"scores": scores, "mask": mask})["p"]
    assert np.isfinite(got).all()  # -inf * 0 would be NaN
    assert np.all(got[1, 3:] == 0)
    assert _norm_max_diff(ref, got) < 5e-3  # one fp16 rounding of scores (|s| < 12): ~6e-3 abs in logits


def test_fp16_refuses_control_flow():
    then = h.make_graph([h.make_node("Identity", ["x"], ["y1"])], "then", [],
                        [h.make_tensor_value_info("y1", T.FLOAT, [1])])
    nodes = [h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)]
    m = _model(nodes, [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [1])],
               [h.make_tensor_value_info("y", T.FLOAT, [1])])
    with pytest.raises(InputError, match="sub-graph"):
        to_fp16(m)


# (model, feed maker, {output: bound}); bounds ~5x the measured normalised max difference
def _nsfw_feed(rng):
    return {"input:0": rng.uniform(-123, 151, (2, 224, 224, 3)).astype(np.float32)}


def _yamnet_feed(rng):
    return {"audio": rng.normal(-2, 2, (2, 1, 96, 64)).astype(np.float32)}


def _minilm_feed(rng):
    ids = rng.integers(1000, 30000, (2, 20))
    mask = np.ones((2, 20), np.int64)
    mask[1, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((2, 20), np.int64)}


REAL = [
    # measured: outputs 2e-5, embedding 4.1e-3
    ("open_nsfw", _nsfw_feed, {"outputs": 1e-3, "embedding": 2e-2}),
    # measured: class_scores 2.3e-3, embedding 2.1e-3
    ("yamnet", _yamnet_feed, {"class_scores": 1e-2, "embedding": 1e-2}),
    # measured: token_embeddings 2.2e-4 (LayerNorm after every block keeps errors from growing)
    ("minilm", _minilm_feed, {"token_embeddings": 2e-3}),
]


@pytest.mark.models
@pytest.mark.parametrize("name,feed,bounds", REAL, ids=[r[0] for r in REAL])
def test_fp16_real_models(model_entry, name, feed, bounds):
    entry = model_entry(name)
    m = onnx.load(str(entry.file("model.onnx")))
    m16, report = to_fp16(m)
    if name == "minilm":
        assert any(s.startswith("LayerNormalization:") for s in report.fp32_nodes)
        assert sum(s.startswith("Softmax:") for s in report.fp32_nodes) == 6
    f = feed(np.random.default_rng(5))
    ref, got = _run(m, f), _run(m16, f)
    diffs = {k: _norm_max_diff(ref[k], got[k]) for k in bounds}
    print(f"{name}: fp16 normalised max diff {diffs}")
    for k, bound in bounds.items():
        assert diffs[k] < bound, (k, diffs[k])


# --------------------------------------------------------------------------- profiles
MINILM_CFG = """
name: "minilm" platform: "onnxruntime_onnx" max_batch_size: 64
input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
        { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "token_embeddings" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]
"""
NSFW_CFG = """
name: "open_nsfw" platform: "onnxruntime_onnx" max_batch_size: 32
input [ { name: "input:0" data_type: TYPE_FP32 dims: [ 224, 224, 3 ] } ]
output [ { name: "outputs" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""
NOBATCH_CFG = """
name: "nb" platform: "onnxruntime_onnx" max_batch_size: 0
input [ { name: "a" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def _cfg(text):
    return validate_config(parse_config(text), "<test>")


def test_profile_text_model():
    p = text_profile(_cfg(MINILM_CFG), 256)
    assert [r.name for r in p.inputs] == ["attention_mask", "input_ids"]
    assert p["input_ids"] == ShapeRange("input_ids", (1, 1), (64, 128), (64, 256))
    p.check({"input_ids": (3, 256), "attention_mask": (3, 256)})
    with pytest.raises(InputError, match="outside"):
        p.check({"input_ids": (3, 257)})
    with pytest.raises(InputError, match="not in the engine"):
        p.check({"token_type_ids": (1, 1)})


def test_profile_vision_model_uses_pipeline_batch():
    p = profile_from_config(_cfg(NSFW_CFG), opt_batch=16)
    r = p["input:0"]
    assert (r.min, r.opt, r.max) == ((1, 224, 224, 3), (16, 224, 224, 3), (32, 224, 224, 3))
    with pytest.raises(InputError, match="opt batch 33"):
        profile_from_config(_cfg(NSFW_CFG), opt_batch=33)


def test_profile_without_batch_axis_and_per_axis_ranges():
    p = profile_from_config(_cfg(NOBATCH_CFG), dynamic={"a": {1: (8, 16, 32), 2: (1, 2, 4)}})
    assert p["a"] == ShapeRange("a", (3, 8, 1), (3, 16, 2), (3, 32, 4))
    with pytest.raises(ConfigError, match=r"input\[0\]\.dims.*axis 2"):
        profile_from_config(_cfg(NOBATCH_CFG), dynamic={"a": {1: (8, 16, 32)}})


@pytest.mark.parametrize("dynamic,match", [
    (None, "no \\(min, opt, max\\) range"),
    ((4, 2, 8), "min <= opt <= max"),
    ((0, 1, 8), "min must be >= 1"),
    ((1, 2), "expected \\(min, opt, max\\)"),
    ({"nope": (1, 2, 3)}, "unknown input"),
])
def test_profile_rejects_impossible_shapes(dynamic, match):
    with pytest.raises((InputError, ConfigError), match=match):
        profile_from_config(_cfg(MINILM_CFG), dynamic=dynamic)


def test_profile_order_independent_and_validated():
    a = ShapeRange("a", (1,), (2,), (4,))
    b = ShapeRange("b", (1, 3), (2, 3), (4, 3))
    assert Profile((a, b)) == Profile((b, a))
    with pytest.raises(InputError, match="twice"):
        Profile((a, a))
    with pytest.raises(InputError, match="ranks"):
        ShapeRange("c", (1,), (1, 2), (1, 2))


def test_profile_from_repo_configs(repo_root):
    from engine.repo.config import load_config

    path = repo_root / "model_repo" / "minilm" / "config.pbtxt"
    if not path.is_file():
        pytest.skip("model_repo/minilm/config.pbtxt missing")
    cfg = load_config(path)
    p = text_profile(cfg, int(cfg.parameters["max_seq_length"].string_value))
    assert p["token_type_ids"].max == (64, 256)


# --------------------------------------------------------------------------- cache
SHA = "ab" * 32


def _key(**kw):
    p = text_profile(_cfg(MINILM_CFG), 256)
    args = dict(trt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                precision="fp16", profiles=[p])
    args.update(kw)
    return trtc.key_for(SHA, **args)


def test_key_stable_and_sensitive_to_every_field():
    k = _key()
    assert k.digest() == _key().digest() and len(k.digest()) == 64
    assert k.compute_capability == "9.0"
    other_profile = text_profile(_cfg(MINILM_CFG), 128)
    variants = [
        trtc.key_for("cd" * 32, trt_version="10.13.0", gpu_name=k.gpu_name, compute_capability="9.0",
                     precision="fp16", profiles=k.profiles),
        _key(trt_version="11.0.0"), _key(gpu_name="NVIDIA L4"), _key(compute_capability="8.9"),
        _key(precision="fp32"), _key(profiles=[other_profile]),
        _key(profiles=[k.profiles[0], other_profile]),
    ]
    digests = {v.digest() for v in variants}
    assert len(digests) == len(variants) and k.digest() not in digests
    # input order inside a profile does not matter; profile order does (TensorRT indexes them)
    rev = Profile(tuple(reversed(k.profiles[0].inputs)))
    assert _key(profiles=[rev]).digest() == k.digest()
    assert (_key(profiles=[k.profiles[0], other_profile]).digest()
            != _key(profiles=[other_profile, k.profiles[0]]).digest())
    assert trtc.key_for(b"onnx bytes", trt_version="10", gpu_name="g", compute_capability="9.0",
                        precision="fp32", profiles=k.profiles).onnx_sha256 == trtc.sha256_bytes(b"onnx bytes")


@pytest.mark.parametrize("kw,match", [
    ({"precision": "int8"}, "precision"),
    ({"compute_capability": "sm90"}, "compute_capability"),
    ({"gpu_name": ""}, "must not be empty"),
    ({"profiles": []}, "at least one"),
])
def test_key_validation(kw, match):
    with pytest.raises(InputError, match=match):
        _key(**kw)


def test_store_lookup_roundtrip_and_refusals(tmp_path, caplog):
    vdir = tmp_path / "minilm" / "1"
    k = _key()
    assert trtc.lookup(vdir, k) is None
    p = trtc.store(vdir, k, b"PLAN-BYTES")
    assert p == vdir / "trt" / f"{k.digest()}.plan"
    assert trtc.lookup(vdir, k) == p
    meta = json.loads((vdir / "trt" / f"{k.digest()}.json").read_text())
    assert meta["gpu_name"] == k.gpu_name and meta["plan_bytes"] == 10
    assert sorted(x.name for x in (vdir / "trt").iterdir()) == sorted([p.name, f"{k.digest()}.json"])  # no temp files
    # another GPU / version / precision: a different file name, never the stored plan
    for other in (_key(gpu_name="NVIDIA A10"), _key(trt_version="11.0.0"), _key(precision="fp32")):
        assert trtc.lookup(vdir, other) is None
    # a sidecar that disagrees with the key (copied or edited by hand) is refused
    side = vdir / "trt" / f"{k.digest()}.json"
    side.write_text(json.dumps(dict(meta, gpu_name="NVIDIA A10")))
    with caplog.at_level("WARNING"):
        assert trtc.lookup(vdir, k) is None
    assert "gpu_name" in caplog.text
    side.write_text("{not json")
    assert trtc.lookup(vdir, k) is None
    # a damaged plan is refused
    trtc.store(vdir, k, b"PLAN-BYTES")
    p.write_bytes(b"PLAN-BYTEZ")
    assert trtc.lookup(vdir, k) is None
    side.unlink()
    assert trtc.lookup(vdir, k) is None
    with pytest.raises(InputError, match="empty"):
        trtc.store(vdir, k, b"")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.plan"
    trtc.atomic_write(target, b"old")
    with mock.patch.object(trtc.os, "replace", side_effect=OSError("disk full")):
        with pytest.raises(OSError, match="disk full"):
            trtc.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["x.plan"]


def test_timing_cache_path_per_version_and_gpu(tmp_path):
    a = trtc.timing_cache_path(tmp_path, "10.13.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert a == tmp_path / ".trt_timing" / "10.13.0_NVIDIA-H100-80GB-HBM3_sm90.cache"
    assert a != trtc.timing_cache_path(tmp_path, "10.13.0", "NVIDIA L4", "8.9")
    assert a != trtc.timing_cache_path(tmp_path, "11.0.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert "/" not in trtc.timing_cache_path(tmp_path, "10", "a/b c", "9.0").name


def test_plan_for_triton_layout_and_config(tmp_path):
    t = trtc.plan_for_triton(tmp_path, "open_nsfw", 1)
    assert t.path == tmp_path / "open_nsfw" / "1" / "model.plan"
    assert t.config_path == tmp_path / "open_nsfw" / "config.pbtxt"
    assert (t.platform, t.default_model_filename) == ("tensorrt_plan", "model.plan")
    for bad in ("0", "v1", "-1"):
        with pytest.raises(InputError):
            trtc.plan_for_triton(tmp_path, "open_nsfw", bad)
    with pytest.raises(InputError):
        trtc.plan_for_triton(tmp_path, "../x", 1)
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = _cfg(NSFW_CFG + 'instance_group [ { kind: KIND_CPU, count: 1 } ]')
    out = trtc.triton_config(cfg, max_batch_size=16)
    validate_config(out, "<test>", folder_name="open_nsfw")
    assert (out.platform, out.default_model_filename, out.max_batch_size) == ("tensorrt_plan", "model.plan", 16)
    assert out.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cfg.platform == "onnxruntime_onnx"  # the input is not modified


# --------------------------------------------------------------------------- builder (fake tensorrt)
@pytest.mark.parametrize("version,precision,want", [
    ("10.13.0.35", "fp16", (False, True, False)),
    ("10.0.1", "fp32", (False, False, False)),
    ("11.0.0", "fp16", (True, False, True)),
    ("11.2.1", "fp32", (True, False, False)),
    ("12.0.0", "fp16", (True, False, True)),
])
def test_build_options_dispatch(version, precision, want):
    o = trtb.build_options(fake_trt(version), precision)
    assert (o.strongly_typed, o.fp16_flag, o.fp16_graph) == want


def test_build_options_errors():
    with pytest.raises(ModelError, match="too old"):
        trtb.build_options(fake_trt("8.6.1"), "fp16")
    with pytest.raises(ModelError, match="no BuilderFlag.FP16"):
        trtb.build_options(fake_trt("10.0.0", fp16_flag=False), "fp16")
    with pytest.raises(InputError, match="precision"):
        trtb.build_options(fake_trt("10.0.0"), "int8")
    with pytest.raises(ModelError, match="version"):
        trtb.build_options(fake_trt("unknown"), "fp32")


def _mlp_profile():
    return Profile((ShapeRange("x", (1, 24), (8, 24), (16, 24)),))


def test_build_engine_trt10_fp16_sets_flag_and_parses_fp32_graph():
    trt = fake_trt("10.13.0")
    onnx_bytes = mlp_ln_softmax().SerializeToString()
    plan, timing = trtb.build_engine(onnx_bytes, [_mlp_profile()], "fp16", b"OLD", trt=trt)
    assert (plan, timing) == (b"PLAN", b"TIMING")
    trt._builder.create_network.assert_called_once_with(0)
    trt._config.set_flag.assert_called_once_with("FP16")
    assert trt._parser.parse.call_args[0][0] == onnx_bytes
    prof = trt._builder.create_optimization_profile.return_value
    prof.set_shape.assert_called_once_with("x", (1, 24), (8, 24), (16, 24))
    trt._config.add_optimization_profile.assert_called_once_with(prof)
    trt._config.create_timing_cache.assert_called_once_with(b"OLD")
    trt._config.set_timing_cache.assert_called_once_with(trt._config.create_timing_cache.return_value, False)


def test_build_engine_trt11_fp16_strongly_typed_fp16_graph():
    trt = fake_trt("11.0.0", fp16_flag=False)
    trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp16", trt=trt)
    trt._builder.create_network.assert_called_once_with(1 << 1)
    trt._config.set_flag.assert_not_called()
    parsed = onnx.load_from_string(trt._parser.parse.call_args[0][0])
    assert T.FLOAT16 in {i.data_type for i in parsed.graph.initializer}
    assert parsed.graph.input[0].type.tensor_type.elem_type == T.FLOAT
    trt._config.create_timing_cache.assert_called_once_with(b"")


def test_build_engine_fp32_turns_tf32_off():
    # TF32 is on by default in TensorRT: an fp32 engine must not round matmul inputs to 10 bits
    for version in ("10.13.0", "11.0.0"):
        trt = fake_trt(version)
        trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp32", trt=trt)
        trt._config.clear_flag.assert_called_once_with("TF32")
    trt = fake_trt("10.13.0")
    trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp16", trt=trt)
    trt._config.clear_flag.assert_not_called()


def test_build_engine_starts_afresh_when_the_timing_cache_is_refused(caplog):
    trt = fake_trt("10.13.0")
    trt._config.set_timing_cache.side_effect = [False, True]  # the stored cache, then a new one
    trt._config.get_timing_cache.return_value = None
    plan, timing = trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp16", b"OLD", trt=trt)
    assert (plan, timing) == (b"PLAN", b"")
    assert [c.args[0] for c in trt._config.create_timing_cache.call_args_list] == [b"OLD", b""]
    assert "refused the stored timing cache" in caplog.text
    trt = fake_trt("10.13.0")
    trt._config.set_timing_cache.return_value = False
    with pytest.raises(ModelError, match="refused a new timing cache"):
        trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp16", trt=trt)


@pytest.mark.parametrize("damage", ["raises", "none"])
def test_build_engine_starts_afresh_when_the_stored_timing_cache_is_unreadable(caplog, damage):
    # a damaged cache file may fail create_timing_cache itself: by an exception or by None
    trt = fake_trt("10.13.0")
    new_cache = trt._config.create_timing_cache.return_value

    def create(blob):
        if blob == b"":
            return new_cache
        if damage == "raises":
            raise RuntimeError("corrupt timing cache")
        return None

    trt._config.create_timing_cache.side_effect = create
    plan, timing = trtb.build_engine(mlp_ln_softmax().SerializeToString(), [_mlp_profile()], "fp16", b"\x00BAD",
                                     trt=trt)
    assert (plan, timing) == (b"PLAN", b"TIMING")
    trt._config.set_timing_cache.assert_called_once_with(new_cache, False)
    assert "stored timing cache" in caplog.text


def test_build_engine_failures():
    onnx_bytes = mlp_ln_softmax().SerializeToString()
    with pytest.raises(ModelError, match="Unsupported op Foo"):
        trtb.build_engine(onnx_bytes, [_mlp_profile()], "fp32", trt=fake_trt("10.1.0", parse_ok=False))
    with pytest.raises(ModelError, match="failed to build"):
        trtb.build_engine(onnx_bytes, [_mlp_profile()], "fp32", trt=fake_trt("10.1.0", plan=None))
    with pytest.raises(InputError, match="differ from the network"):
        trtb.build_engine(onnx_bytes, [_mlp_profile()], "fp32", trt=fake_trt("10.1.0", inputs=("x", "y")))
    with pytest.raises(InputError, match="at least one"):
        trtb.build_engine(onnx_bytes, [], "fp32", trt=fake_trt("10.1.0"))
    trt = fake_trt("10.1.0")
    trt._config.add_optimization_profile.side_effect = lambda prof: -1  # TensorRT: an invalid profile
    with pytest.raises(ModelError, match="rejected optimisation profile 0"):
        trtb.build_engine(onnx_bytes, [_mlp_profile()], "fp32", trt=trt)


def test_load_refuses_unloadable_plan():
    trt = fake_trt("10.1.0")
    trt.Runtime.return_value.deserialize_cuda_engine.return_value = None
    with pytest.raises(ModelError, match="could not deserialize"):
        trtb.load(b"junk", trt=trt)


def test_missing_tensorrt_is_a_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        trtb.load(b"plan")
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        trtb.build_engine(b"", [_mlp_profile()], "fp16")
