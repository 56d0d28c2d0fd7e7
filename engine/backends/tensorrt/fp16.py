"""fp32 ONNX graph -> mixed-precision fp16 graph, for TensorRT's strongly typed networks.

TensorRT 11 removed ``BuilderFlag.FP16``: a network is strongly typed and every tensor keeps
the type the ONNX graph gives it, so reduced precision must be written into the graph.
:func:`to_fp16` does that, in the spirit of ModelOpt AutoCast / onnxconverter-common's
``convert_float_to_float16(keep_io_types=True, op_block_list=...)``:

* float initialisers, ``Constant``/``ConstantOfShape`` values and ``Cast(to=FLOAT)`` become fp16
  in nodes that run in fp16;
* numerically sensitive nodes stay fp32 (:data:`KEEP_FP32_OPS`, plus the
  ``ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div`` chain of a decomposed
  LayerNorm, see Note [fp32 islands]);
* graph inputs and outputs keep their fp32 type; ``Cast`` nodes sit at the boundaries and
  wherever an fp32 node meets an fp16 tensor (one Cast per tensor and target type, shared by
  its consumers).

Note [fp32 islands]
    Exp/Log/Softmax overflow or lose the tail in fp16 (exp(11.1) > 65504); reductions and
    x**2 overflow for |x| > 256 and sum 2**-11-relative rounding errors; LayerNorm's variance
    is a reduction of squares. These ops take fp32 inputs (a Cast before them) and their
    fp32 outputs are cast back to fp16 only where an fp16 node consumes them, so a chain of
    kept nodes (a decomposed LayerNorm) runs entirely in fp32 without fp16 round trips.

Note [fp16 clipping]
    fp16's largest finite value is 65504. Constants outside that range (masks often use
    ``finfo(float32).min``) are clipped to +-65504 rather than becoming inf, so that
    ``0 * mask`` stays 0 instead of NaN; the number of clipped values is logged.

Pure ONNX graph surgery, tested on the CPU with ONNX Runtime. ORT's CPU provider runs fp16
nodes that lack an fp16 kernel (Pow, ReduceMean, ...) in fp32 and drops some of the
intermediate roundings, so CPU numbers bound the rounding of stored tensors, not TensorRT's
fp16 arithmetic; the converted graphs have not been built by TensorRT in this project's CI.
Needs full type inference (``onnx.shape_inference``): models over 2 GB are not handled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from engine.errors import InputError

log = logging.getLogger(__name__)

FLOAT = 1  # onnx.TensorProto.FLOAT
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)  # 65504, see Note [fp16 clipping]

#: Ops that always run in fp32 (see Note [fp32 islands]).
KEEP_FP32_OPS = frozenset({
    "LayerNormalization", "Softmax", "LogSoftmax", "Exp", "Log",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "Pow", "Sqrt",
    "Range",  # the ONNX spec has no fp16 Range
})
#: Ops whose float inputs may have any type (no Cast is inserted in front of them).
_ANY_INPUT_OPS = frozenset({"Shape", "Size", "Cast", "CastLike"})
#: (op, input index) that the ONNX spec types as tensor(float) whatever the data type.
_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})


@dataclass
class Fp16Report:
    """What :func:`to_fp16` did (also logged)."""

    fp16_nodes: int = 0
    fp32_nodes: list[str] = field(default_factory=list)  # "op:name" of nodes kept in fp32
    casts_inserted: int = 0
    clipped_values: int = 0


def _tensor_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types: dict[str, int] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            types[v.name] = v.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def _layernorm_chains(nodes) -> set[int]:
    """Indices of nodes forming ``ReduceMean, Sub, Pow|Mul, ReduceMean, Add, Sqrt, Div`` chains."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)

    def follow(name: str, op: str, also: str | None = None) -> int | None:
        for j in consumers.get(name, []):
            n = nodes[j]
            if n.op_type == op and (also is None or also in n.input):
                return j
        return None

    out: set[int] = set()
    for i, mean in enumerate(nodes):
        if mean.op_type != "ReduceMean":
            continue
        x = mean.input[0]
        sub = follow(mean.output[0], "Sub", also=x)
        if sub is None:
            continue
        d = nodes[sub].output[0]
        sq = follow(d, "Pow")
        if sq is None:
            sq = next((j for j in consumers.get(d, []) if nodes[j].op_type == "Mul"
                       and list(nodes[j].input) == [d, d]), None)
        if sq is None:
            continue
        var = follow(nodes[sq].output[0], "ReduceMean")
        if var is None:
            continue
        add = follow(nodes[var].output[0], "Add")
        if add is None:
            continue
        sqrt = follow(nodes[add].output[0], "Sqrt")
        if sqrt is None:
            continue
        div = follow(nodes[sqrt].output[0], "Div", also=d)
        if div is None:
            continue
        out.update({i, sub, sq, var, add, sqrt, div})
    return out


def _fp16_array(arr: np.ndarray, report: Fp16Report) -> np.ndarray:
    big = np.abs(arr) > FP16_MAX
    if big.any():
        report.clipped_values += int(np.count_nonzero(big & np.isfinite(arr)))
        arr = np.where(big & np.isfinite(arr), np.sign(arr) * FP16_MAX, arr)
    return arr.astype(np.float16)


def _fp16_tensor(t, report: Fp16Report, name: str | None = None):
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t)
    out = numpy_helper.from_array(_fp16_array(arr, report), name if name is not None else t.name)
    return out


def to_fp16(model, *, keep_ops: frozenset[str] | set[str] = KEEP_FP32_OPS,
            keep_nodes: set[str] = frozenset(), detect_layernorm: bool = True,
            check: bool = True):
    """Return ``(fp16_model, report)``: a mixed-precision copy of an fp32 ONNX ``ModelProto``.

    Parameters
    ----------
    model : onnx.ModelProto
        fp32 graph (graphs with If/Loop/Scan sub-graphs are refused: InputError).
    keep_ops : set of op types run in fp32 (default :data:`KEEP_FP32_OPS`).
    keep_nodes : node names run in fp32 in addition.
    detect_layernorm : keep decomposed LayerNorm chains in fp32 (Note [fp32 islands]).
    check : run ``onnx.checker.check_model`` on the result.

    Graph inputs and outputs keep their types; only FLOAT tensors are touched (double,
    bfloat16 and integer tensors are left alone).
    """
    import onnx
    from onnx import helper

    types = _tensor_types(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes = list(g.node)
    for n in nodes:
        if n.op_type in _SUBGRAPH_OPS or any(a.type in (5, 10) for a in n.attribute):  # GRAPH(S)
            raise InputError(f"to_fp16: node {n.name or n.op_type!r} has a sub-graph ({n.op_type}); "
                             "control flow is not supported")
    report = Fp16Report()
    keep_idx = {i for i, n in enumerate(nodes) if n.op_type in keep_ops or (n.name and n.name in keep_nodes)}
    if detect_layernorm:
        keep_idx |= _layernorm_chains(nodes)

    # graph outputs: the producer writes "<y>__mixed", a final Cast writes <y> (Note: boundaries)
    out_names = {o.name for o in g.output if types.get(o.name) == FLOAT}
    inits = {t.name: t for t in g.initializer}
    rename = {y: f"{y}__mixed" for y in out_names if y not in inits and y not in {i.name for i in g.input}}
    for n in nodes:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
        for k, name in enumerate(n.output):
            if name in rename:
                n.output[k] = rename[name]
    for old, new in rename.items():
        types[new] = types[old]

    cur: dict[str, int] = {i.name: i.type.tensor_type.elem_type for i in g.input}
    cur.update({name: FLOAT for name, t in inits.items() if t.data_type == FLOAT})
    versions: dict[tuple[str, int], str] = {}
    new_inits: list = []
    new_nodes: list = []

    def version(name: str, want: int) -> str:
        if cur.get(name) == want:
            return name
        key = (name, want)
        if key in versions:
            return versions[key]
        suffix = "fp16" if want == FLOAT16 else "fp32"
        new = f"{name}__{suffix}"
        if name in inits and inits[name].data_type == FLOAT and want == FLOAT16:
            new_inits.append(_fp16_tensor(inits[name], report, new))
        else:
            new_nodes.append(helper.make_node("Cast", [name], [new], to=want, name=f"{new}__cast"))
            report.casts_inserted += 1
        versions[key] = new
        cur[new] = want
        return new

    for i, n in enumerate(nodes):
        mode = FLOAT if i in keep_idx else FLOAT16
        if mode == FLOAT:
            report.fp32_nodes.append(f"{n.op_type}:{n.name}")
        else:
            report.fp16_nodes += 1
        fixed = _FP32_INPUTS.get(n.op_type, set())
        for k, name in enumerate(n.input):
            if not name or types.get(name) != FLOAT or n.op_type in _ANY_INPUT_OPS:
                continue
            n.input[k] = version(name, FLOAT if k in fixed else mode)
        if mode == FLOAT16:
            for a in n.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16
                elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(_fp16_tensor(a.t, report))
        for name in n.output:
            if types.get(name) == FLOAT:
                cur[name] = mode
        new_nodes.append(n)

    for old, new in rename.items():
        if cur.get(new) == FLOAT16 and (new, FLOAT) not in versions:
            new_nodes.append(helper.make_node("Cast", [new], [old], to=FLOAT, name=f"{old}__cast"))
            report.casts_inserted += 1
        else:  # already fp32 (or an fp32 copy exists): pass it through
            new_nodes.append(helper.make_node("Identity", [version(new, FLOAT)], [old], name=f"{old}__out"))

    used = {name for nd in new_nodes for name in nd.input} | {o.name for o in g.output}
    kept_inits = [t for t in g.initializer if t.name in used] + [t for t in new_inits if t.name in used]
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]  # stale types; re-inferred by consumers
    if check:
        onnx.checker.check_model(m)
    log.info("to_fp16: %d nodes fp16, %d kept fp32, %d casts inserted, %d constants clipped to +-65504",
             report.fp16_nodes, len(report.fp32_nodes), report.casts_inserted, report.clipped_values)
    return m, report
