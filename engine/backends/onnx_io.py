"""What the ONNX backends share: the model file of an entry, and graph I/O vs config.pbtxt.

ONNX Runtime reads the graph's inputs and outputs from its session, the torch backend from the
ONNX graph itself; both hand them to :func:`check_io` as ``{name: GraphTensor}`` so a config
that contradicts the model fails the same way whichever backend loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from engine.backends.base import TensorSpec
from engine.errors import ModelError


class GraphTensor(NamedTuple):
    """One graph input or output as the model declares it."""

    dtype: np.dtype | None  # None: a type the engine has no numpy equivalent for
    shape: tuple  # ints for fixed dims, str/None for symbolic ones


def onnx_file(entry) -> Path:
    """The ONNX file of a ModelEntry: ``default_model_filename`` (or model.onnx), lock-verified.

    ``entry.files`` holds the files ModelRepository verified against models.lock; the version
    folder is the fallback for entries built by hand (tests, ``verify=False``).
    """
    fname = entry.config.default_model_filename or "model.onnx"
    path = entry.files.get(fname) if getattr(entry, "files", None) else None
    return path if path is not None else entry.version_dir / fname


def check_io(model: str, max_batch_size: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
             graph_inputs: Mapping[str, GraphTensor], graph_outputs: Mapping[str, GraphTensor]) -> None:
    """ModelError unless every config tensor exists in the graph with its dtype and shape,
    and every graph input is in the config."""
    for kind, specs, actual in (("input", inputs, graph_inputs), ("output", outputs, graph_outputs)):
        for s in specs:
            node = actual.get(s.name)
            if node is None:
                raise ModelError(
                    f"{model}: config {kind} {s.name!r} is not in the ONNX model "
                    f"(model has {sorted(actual)})"
                )
            if node.dtype is not None and node.dtype != s.dtype:
                raise ModelError(
                    f"{model}: {kind} {s.name!r} is {node.dtype} in the model "
                    f"but {s.dtype} in config.pbtxt"
                )
            want = s.full_shape(max_batch_size)
            got = list(node.shape)
            if len(got) != len(want):
                raise ModelError(
                    f"{model}: {kind} {s.name!r} has rank {len(got)} in the model, "
                    f"config says {list(want)}"
                )
            for w, g in zip(want, got):
                if w != -1 and isinstance(g, int) and g != w:
                    raise ModelError(
                        f"{model}: {kind} {s.name!r} shape {got} in the model "
                        f"contradicts config dims {list(want)}"
                    )
    missing = set(graph_inputs) - {s.name for s in inputs}
    if missing:
        raise ModelError(f"{model}: model inputs {sorted(missing)} are not in config.pbtxt")
