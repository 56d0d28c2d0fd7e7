"""An engine's IO tensors and the per-call shape logic, without TensorRT.

Everything here takes the ``tensorrt`` module and the engine as arguments (tests pass fakes)
and only reads them; the calls that change a context are in :mod:`.runtime`.

* :func:`read_io`          - the engine's inputs and outputs as :class:`TensorSpec` (full shapes);
* :func:`check_io`         - the engine agrees with ``config.pbtxt`` (the ONNX backends' rule);
* :func:`choose_profile`   - which optimisation profile a call's input shapes run under;
* :func:`split_size`       - the most rows one call may take under the profiles;
* :func:`output_shapes`    - the output shapes the context reports, checked to be concrete.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from engine.backends.base import TensorSpec
from engine.backends.onnx_io import GraphTensor
from engine.backends.onnx_io import check_io as onnx_check_io
from engine.backends.tensorrt.profiles import Profile
from engine.errors import InputError, ModelError

# trt.DataType member -> numpy dtype. BF16, FP8, INT4 and FP4 have no numpy dtype: an engine
# with such an IO tensor is refused (they only occur inside the graphs built here).
_NUMPY_OF = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
    "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8,
}


def numpy_dtype(trt, data_type) -> np.dtype:
    """The numpy dtype of a ``trt.DataType``; ModelError for types numpy has not got."""
    for name, dtype in _NUMPY_OF.items():
        if getattr(trt.DataType, name, None) == data_type:
            return np.dtype(dtype)
    raise ModelError(f"TensorRT IO tensor type {data_type} has no numpy equivalent "
                     f"(supported: {', '.join(_NUMPY_OF)})")


def torch_dtype(dtype: np.dtype):
    """The torch dtype with the same layout as a numpy dtype (all of :data:`_NUMPY_OF`)."""
    import torch

    return torch.from_numpy(np.empty(0, dtype)).dtype


def read_io(trt, engine) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """``(inputs, outputs)`` of a deserialized engine, in the engine's order.

    Shapes are the engine's full shapes (batch axis included, -1 where dynamic).
    """
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        spec = TensorSpec(name, numpy_dtype(trt, engine.get_tensor_dtype(name)),
                          tuple(int(d) for d in engine.get_tensor_shape(name)))
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(spec)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(spec)
    return inputs, outputs


def check_io(model: str, max_batch_size: int, config: tuple[list[TensorSpec], list[TensorSpec]],
             engine: tuple[list[TensorSpec], list[TensorSpec]]) -> None:
    """ModelError unless the engine's IO matches the config's, by the rule every ONNX backend
    uses (:func:`engine.backends.onnx_io.check_io`); the engine's -1 dims are dynamic.

    The engine may have outputs the config does not list (they are computed and dropped).
    """
    def graph(specs):
        return {s.name: GraphTensor(s.dtype, tuple(None if d == -1 else d for d in s.shape)) for s in specs}

    onnx_check_io(model, max_batch_size, config[0], config[1], graph(engine[0]), graph(engine[1]))


def choose_profile(profiles: Sequence[Profile], shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Index of the first profile every input shape fits (profiles are listed smallest first).

    InputError naming the nearest miss when none fits.
    """
    if not profiles:
        raise ModelError("the engine has no optimisation profile")
    errors = []
    for i, p in enumerate(profiles):
        try:
            p.check(shapes)
        except InputError as e:
            errors.append(f"profile {i}: {e}")
            continue
        return i
    raise InputError("no optimisation profile of the engine takes these shapes: " + "; ".join(errors))


def split_size(profiles: Sequence[Profile], max_batch_size: int) -> int:
    """Most rows per engine call: the largest batch some profile takes for every input.

    0 (no splitting) for models without a batch axis.
    """
    if max_batch_size <= 0:
        return 0
    best = max(min(r.max[0] for r in p.inputs) for p in profiles)
    return min(best, max_batch_size)


def output_shapes(model: str, outputs: Sequence[TensorSpec],
                  reported: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """The output shapes the context computed from the input shapes, checked to be concrete.

    A -1 left after every input shape is set means a data-dependent output size, which needs
    an output allocator; no model here has one, so it is refused instead of guessed.
    """
    out = {}
    for s in outputs:
        shape = tuple(int(d) for d in reported[s.name])
        if any(d < 0 for d in shape):
            raise ModelError(f"{model}: output {s.name!r} has shape {list(shape)} after the input "
                             "shapes were set (data-dependent sizes are not supported)")
        out[s.name] = shape
    return out


def numpy_of_torch(dtype) -> np.dtype | None:
    """The numpy dtype of a torch dtype, None for those numpy has not got (bfloat16, ...)."""
    import torch

    try:
        return np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        return None
