"""ONNX graph -> ``torch.fx.GraphModule`` with onnx2torch 1.5.15, plus the fixes our models need.

onnx2torch (pinned to 1.5.15 in scripts/setup.sh, installed ``--no-deps``: see
:mod:`engine.backends.torchvision_placeholder`) builds an fx graph of torch modules from the ONNX
nodes. Three things are added here, once per process, before any conversion:

* **opset aliases** (:data:`OPSET_ALIASES`): onnx2torch registers converters per ONNX
  ``since_version`` and lacks a few newer versions our graphs use (YAMNet is opset 20, MiniLM
  17). Each alias reuses the converter of the previous version where the newer version changed
  only the type lists (bfloat16, float8, int4), not the semantics;
* **Reshape to a constant shape** (``OnnxStaticReshape``): onnx2torch's Reshape reads the
  target shape from a tensor on every call (``torch.any(shape == 0)``, ``torch.Size(shape)``),
  a device-to-host sync on CUDA that also makes the module impossible to capture in a CUDA
  graph. When the shape is an initialiser (all of ours) it becomes Python ints at conversion;
  other Reshapes keep onnx2torch's converter;
* **Flatten** (``OnnxFlatten``): onnx2torch's Flatten fails when ``axis`` equals the input
  rank (ONNX: ``[d0..dn] -> [d0*..*dn, 1]``), which MiniLM's attention-mask subgraph does
  (``Flatten(axis=2)`` of ``[B, S]``); its registration is replaced by a correct one;
* **Slice**: onnx2torch indexes with a *list* of slices, which torch deprecates (it will read it
  as a tensor index); the same function indexing with a tuple replaces it.

onnx2torch has no public way to replace a registered converter, so the last two write into its
registry and module; :func:`converter` checks the pinned version first.

A converted module "captures" when it runs on tensors of the ``meta`` device: that fails on any
op whose control flow reads tensor values on the host (``.item()``, ``bool(tensor)``), the ops that
break CUDA graph capture. :func:`host_sync_free` runs that check on the CPU.
"""

from __future__ import annotations

import math
import threading
import types

import numpy as np

from engine.backends.onnx_io import GraphTensor
from engine.backends.torchvision_placeholder import TORCHVISION_OPS, import_onnx2torch, using_placeholder
from engine.errors import ModelError

ONNX2TORCH_VERSION = "1.5.15"

#: (op, newer since_version, version whose converter it reuses): what the newer version changed
OPSET_ALIASES = (
    ("Reshape", 19, 14),  # opset 19 added float8 types
    ("Identity", 19, 16),  # opset 19 added float8 types
    ("GreaterOrEqual", 16, 12),  # opset 16 added bfloat16
)
_FLATTEN_VERSIONS = (1, 9, 11, 13, 21)
_RESHAPE_VERSIONS = (5, 13, 14, 19, 21)

_lock = threading.Lock()
_patched: types.ModuleType | None = None


def converter() -> types.ModuleType:
    """The onnx2torch package with this module's fixes registered (once)."""
    global _patched
    with _lock:
        if _patched is not None:
            return _patched
        try:
            onnx2torch = import_onnx2torch()
        except ImportError as e:
            raise ModelError(
                f"the torch backend needs onnx2torch=={ONNX2TORCH_VERSION} "
                f"(pip install --no-deps onnx2torch=={ONNX2TORCH_VERSION}): {e}"
            ) from None
        from importlib.metadata import version

        found = version("onnx2torch")
        if found != ONNX2TORCH_VERSION:
            raise ModelError(f"the torch backend is written against onnx2torch {ONNX2TORCH_VERSION} "
                             f"(its converter registry is patched), found {found}")
        _register_fixes()
        _patched = onnx2torch
        return onnx2torch


def _register_fixes() -> None:
    import torch
    from onnx2torch.node_converters import registry, slice as o2t_slice
    from onnx2torch.utils.common import (OnnxMapping, OnnxToTorchModule, OperationConverterResult,
                                         onnx_mapping_from_node)

    for op, newer, older in OPSET_ALIASES:
        registry.add_converter(op, newer)(registry.get_converter(op, older))

    class OnnxFlatten(torch.nn.Module, OnnxToTorchModule):
        """ONNX Flatten: ``[d0..dn] -> [d0*..*d(axis-1), d(axis)*..*dn]`` for 0 <= axis <= rank."""

        def __init__(self, axis: int):
            super().__init__()
            self.axis = axis

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            axis = self.axis + x.dim() if self.axis < 0 else self.axis
            return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))

    def convert_flatten(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
        return OperationConverterResult(torch_module=OnnxFlatten(node.attributes.get("axis", 1)),
                                        onnx_mapping=onnx_mapping_from_node(node=node))

    class OnnxStaticReshape(torch.nn.Module, OnnxToTorchModule):
        """ONNX Reshape to a shape known at conversion (0 copies the input dim unless allowzero)."""

        def __init__(self, shape: tuple[int, ...], allowzero: bool):
            super().__init__()
            self.shape, self.allowzero = shape, allowzero

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.allowzero:
                return x.reshape(self.shape)
            return x.reshape(tuple(x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)))

    tensor_reshape = registry.get_converter("Reshape", 14)

    def convert_reshape(node, graph):
        shape = graph.initializers.get(node.input_values[1])
        if shape is None:
            return tensor_reshape(node, graph)
        module = OnnxStaticReshape(tuple(int(d) for d in shape.to_numpy().reshape(-1)),
                                   bool(node.attributes.get("allowzero", 0)))
        return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
            inputs=(node.input_values[0],), outputs=node.output_values))

    def replace(op, versions, convert):
        for v in versions:
            registry._CONVERTER_REGISTRY[registry.OperationDescription("", op, v)] = convert

    replace("Flatten", _FLATTEN_VERSIONS, convert_flatten)
    replace("Reshape", _RESHAPE_VERSIONS, convert_reshape)

    list_index_slice = o2t_slice._do_slice

    def tuple_index_slice(x, flip_dims, pos_axes_slices, neg_axes_slices):
        return list_index_slice(x, flip_dims, tuple(pos_axes_slices), tuple(neg_axes_slices))

    o2t_slice._do_slice = tuple_index_slice


def graph_io(model) -> tuple[dict[str, GraphTensor], dict[str, GraphTensor]]:
    """Inputs (initialisers excluded) and outputs of an ONNX ModelProto, in graph order."""
    from onnx import helper

    def tensors(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
            except (KeyError, TypeError, ValueError):
                dtype = None
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            out[v.name] = GraphTensor(dtype, shape)
        return out

    g = model.graph
    inits = {i.name for i in g.initializer}
    return tensors(v for v in g.input if v.name not in inits), tensors(g.output)


def to_torch(model, name: str):
    """Convert an ONNX ModelProto to a ``torch.fx.GraphModule`` in eval mode.

    The module takes the graph inputs positionally in graph order and returns one tensor (one
    graph output) or a tuple in graph output order.
    """
    o2t = converter()
    if using_placeholder():
        needs = sorted({n.op_type for n in model.graph.node} & TORCHVISION_OPS)
        if needs:
            raise ModelError(f"{name}: the graph has {needs} nodes, which the torch backend runs with "
                             "torchvision, and torchvision is not usable here")
    try:
        module = o2t.convert(model)
    except NotImplementedError as e:  # onnx2torch's "Converter is not implemented (...)"
        raise ModelError(f"{name}: onnx2torch cannot convert the graph: {e}") from None
    return module.eval()


def host_sync_free(module, example: list) -> bool:
    """True when ``module`` runs on ``meta`` copies of ``example`` (no host reads of tensor
    values, so nothing in it stops a CUDA graph capture). Runs on the CPU; ``module`` is not
    changed."""
    import copy

    import torch

    meta = copy.deepcopy(module).to("meta")
    try:
        with torch.inference_mode():
            meta(*[torch.empty_like(t, device="meta") for t in example])
    except (RuntimeError, NotImplementedError):  # "Tensor.item() cannot be called on meta tensors"
        return False
    return True
