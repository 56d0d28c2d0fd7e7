"""Backend protocol, tensor specs and the shared batch-splitting helper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, runtime_checkable

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from engine.errors import InputError, ModelError

# Triton DataType -> numpy dtype (TYPE_STRING -> object arrays of str/bytes)
TRITON_TO_NUMPY: dict[int, np.dtype] = {
    mc.TYPE_BOOL: np.dtype(np.bool_),
    mc.TYPE_UINT8: np.dtype(np.uint8),
    mc.TYPE_UINT16: np.dtype(np.uint16),
    mc.TYPE_UINT32: np.dtype(np.uint32),
    mc.TYPE_UINT64: np.dtype(np.uint64),
    mc.TYPE_INT8: np.dtype(np.int8),
    mc.TYPE_INT16: np.dtype(np.int16),
    mc.TYPE_INT32: np.dtype(np.int32),
    mc.TYPE_INT64: np.dtype(np.int64),
    mc.TYPE_FP16: np.dtype(np.float16),
    mc.TYPE_FP32: np.dtype(np.float32),
    mc.TYPE_FP64: np.dtype(np.float64),
    mc.TYPE_STRING: np.dtype(object),
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input/output. ``shape`` excludes the batch dim when max_batch_size > 0; -1 = dynamic."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @classmethod
    def from_config(cls, t) -> "TensorSpec":
        try:
            dtype = TRITON_TO_NUMPY[t.data_type]
        except KeyError:
            raise ModelError(f"tensor {t.name!r}: unsupported data_type {mc.DataType.Name(t.data_type)}") from None
        return cls(t.name, dtype, tuple(int(d) for d in t.dims))

    def full_shape(self, max_batch_size: int) -> tuple[int, ...]:
        return ((-1,) + self.shape) if max_batch_size > 0 else self.shape


def specs_from_config(config: mc.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return ([TensorSpec.from_config(t) for t in config.input],
            [TensorSpec.from_config(t) for t in config.output])


@runtime_checkable
class Backend(Protocol):
    name: str  # "onnxruntime" | "sklearn" | ...
    model_name: str
    max_batch_size: int  # 0 = no batching dimension
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def warmup(self) -> None: ...


def _coerce(spec: TensorSpec, value, batched: bool, model: str) -> np.ndarray:
    if spec.dtype == np.dtype(object):
        arr = np.asarray(value, dtype=object)
        for v in arr.flat:
            if not isinstance(v, (str, bytes, np.str_, np.bytes_)):
                raise InputError(f"{model}: input {spec.name!r} must hold str/bytes, got {type(v).__name__}")
        # [B] -> [B,1] for the common dims: [1] string inputs
        if batched and arr.ndim == 1 and spec.shape == (1,):
            arr = arr[:, None]
    else:
        arr = np.asarray(value)
        if arr.dtype != spec.dtype:
            if arr.dtype == np.dtype(object) or not np.can_cast(arr.dtype, spec.dtype, casting="same_kind"):
                raise InputError(
                    f"{model}: input {spec.name!r} has dtype {arr.dtype}, expected {spec.dtype}"
                )
            arr = arr.astype(spec.dtype)
    check_shape(spec, tuple(arr.shape), batched, model)
    return arr


def check_shape(spec: TensorSpec, shape: tuple[int, ...], batched: bool, model: str) -> None:
    """InputError unless ``shape`` (batch axis included when ``batched``) fits ``spec``."""
    want = spec.full_shape(1 if batched else 0)
    if len(shape) != len(want) or any(w != -1 and w != a for w, a in zip(want, shape)):
        dims = ["B" if (batched and i == 0) else str(d) for i, d in enumerate(want)]
        raise InputError(
            f"{model}: input {spec.name!r} has shape {tuple(shape)}, expected [{', '.join(dims)}]"
            " (-1 = any)"
        )


def check_inputs(model: str, specs: list[TensorSpec], inputs: Mapping[str, object],
                 max_batch_size: int) -> tuple[dict[str, np.ndarray], int]:
    """Validate names/dtypes/shapes; returns (arrays, batch size or 0)."""
    check_names(model, specs, inputs)
    batched = max_batch_size > 0
    arrays = {s.name: _coerce(s, inputs[s.name], batched, model) for s in specs}
    return arrays, common_batch(model, {k: v.shape for k, v in arrays.items()}, max_batch_size)


def check_names(model: str, specs: list[TensorSpec], inputs: Mapping[str, object]) -> None:
    """InputError unless ``inputs`` is a mapping with exactly the names of ``specs``."""
    if not isinstance(inputs, Mapping):
        raise InputError(f"{model}: inputs must be a dict name -> array")
    names = {s.name for s in specs}
    unknown = sorted(set(inputs) - names)
    if unknown:
        raise InputError(f"{model}: unknown input(s) {unknown}; expected {sorted(names)}")
    missing = sorted(names - set(inputs))
    if missing:
        raise InputError(f"{model}: missing input(s) {missing}")


def common_batch(model: str, shapes: Mapping[str, tuple[int, ...]], max_batch_size: int) -> int:
    """The batch size all inputs share (0 without a batch axis); InputError if they disagree."""
    if max_batch_size <= 0:
        return 0
    sizes = {s[0] for s in shapes.values()}
    if len(sizes) != 1:
        raise InputError(f"{model}: inputs disagree on the batch size: "
                         f"{ {k: v[0] for k, v in shapes.items()} }")
    return sizes.pop()


def run_batched(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                inputs: dict[str, np.ndarray], batch: int, max_batch_size: int) -> dict[str, np.ndarray]:
    """Run ``run`` on chunks of at most ``max_batch_size`` rows and concatenate the outputs.

    The one place that splits batches larger than max_batch_size (every backend uses it).
    ``max_batch_size == 0`` (no batch dim) or ``batch <= max_batch_size`` -> a single call.
    """
    slices = split_batches(batch, max_batch_size)
    if len(slices) == 1:
        return run(inputs)
    parts = [run({k: v[sl] for k, v in inputs.items()}) for sl in slices]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def split_batches(batch: int, max_batch_size: int) -> list[slice]:
    """The slices run_batched uses (exposed for callers that stream)."""
    if max_batch_size <= 0 or batch <= max_batch_size:
        return [slice(0, batch)]
    return [slice(s, min(s + max_batch_size, batch)) for s in range(0, batch, max_batch_size)]


class BaseBackend:
    """Common part: spec bookkeeping, input validation, batch splitting."""

    name = "base"

    def __init__(self, model_name: str, max_batch_size: int, inputs: list[TensorSpec],
                 outputs: list[TensorSpec]):
        self.model_name = model_name
        self.max_batch_size = int(max_batch_size)
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_name} max_batch_size={self.max_batch_size}>"

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays, batch = check_inputs(self.model_name, self.inputs, inputs, self.max_batch_size)
        if self.max_batch_size > 0 and batch == 0:
            return {s.name: np.zeros((0,) + tuple(max(d, 0) for d in s.shape), s.dtype)
                    for s in self.outputs}
        return run_batched(self._run, arrays, batch, self.split_size)

    @property
    def split_size(self) -> int:
        """Most rows one ``_run`` call takes (a TensorRT engine's profiles may allow fewer)."""
        return self.max_batch_size

    def _dummy_inputs(self, batch: int = 1, dynamic: int = 8) -> dict[str, np.ndarray]:
        out = {}
        for s in self.inputs:
            shape = tuple(dynamic if d == -1 else d for d in s.shape)
            if self.max_batch_size > 0:
                shape = (batch,) + shape
            if s.dtype == np.dtype(object):
                out[s.name] = np.full(shape, "warmup", dtype=object)
            else:
                out[s.name] = np.zeros(shape, s.dtype)
        return out

    def warmup(self) -> None:
        self.infer(self._dummy_inputs())
