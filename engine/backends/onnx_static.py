"""An ONNX graph with dynamic dimensions specialised to fixed sizes, for CUDA graph capture.

A graph exported with dynamic axes (MiniLM: ``batch`` x ``sequence``) computes its reshape
targets, position ids and attention-mask shapes at run time from ``Shape`` nodes. Converted to
torch, those chains read tensor values on the host (a device-to-host sync per Reshape), so the
module runs eagerly and cannot be captured in a CUDA graph (Note [length buckets] in
:mod:`engine.backends.torch_cuda`).

:func:`specialize` fixes every dynamic dimension by name and lets ONNX Runtime fold what then
becomes constant: its ``ORT_ENABLE_BASIC`` level (constant folding, redundant-node elimination,
fusions into standard ONNX ops; not MatMul + Add -> Gemm, see below) with
``add_free_dimension_override_by_name``, saved with ``optimized_model_filepath``. For MiniLM at
8 x 64 tokens that leaves 215 of 516 nodes, no Shape node, and a module with no host reads. The
result is checked to hold only default-domain (standard ONNX) nodes, which onnx2torch converts.
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping

from engine.errors import ModelError


def input_dims(model) -> dict[str, list[int | str | None]]:
    """Per graph input (initialisers excluded): each dimension's fixed size, its name (dynamic),
    or None (dynamic and unnamed)."""
    def dim(d):
        if d.HasField("dim_value"):
            return int(d.dim_value)
        return d.dim_param or None

    inits = {i.name for i in model.graph.initializer}
    return {v.name: [dim(d) for d in v.type.tensor_type.shape.dim]
            for v in model.graph.input if v.name not in inits}


def specialize(path: str | os.PathLike, sizes: Mapping[str, int], name: str = "model"):
    """The ONNX model at ``path`` with each named dynamic dimension fixed to ``sizes[dim name]``
    and the subgraphs that become constant folded (see the module docstring); every dynamic
    input dimension must be named in ``sizes`` (checked on the result: the source is read once,
    by ONNX Runtime)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for dim, size in sizes.items():
        so.add_free_dimension_override_by_name(dim, int(size))
    with tempfile.TemporaryDirectory(prefix="engine-static-") as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "static.onnx")
        try:
            # without MatMulAddFusion the weights stay byte for byte those of the dynamic graph
            # (its Gemm transposes them), so every specialisation shares one copy on the GPU
            ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=["MatMulAddFusion"])
            static = onnx.load(so.optimized_model_filepath)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"{name}: ONNX Runtime cannot specialise the graph to {dict(sizes)}: {e}") from None
    # ORT fixes the dimensions it was given sizes for: any other stays dynamic in the result
    missing = sorted({f"{k}[{i}]" if d is None else d
                      for k, dims in input_dims(static).items() for i, d in enumerate(dims) if not isinstance(d, int)})
    if missing:
        raise ModelError(f"{name}: cannot fix the dynamic dimensions {missing} (sizes given for {sorted(sizes)})")
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in static.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ModelError(f"{name}: the specialised graph has non-standard nodes {foreign}")
    return static

