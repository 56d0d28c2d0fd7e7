"""A fake ``tensorrt`` module for the CPU tests of engine.backends.tensorrt.

* :func:`fake_trt` - the module: builder side from ``unittest.mock`` (records calls), runtime
  side returning a :class:`FakeEngine` for every plan (``trt._plans`` lists what was
  deserialized).
* :class:`FakeEngine` / :class:`FakeContext` - behave like TensorRT's where the backend relies
  on it: a context starts on profile 0, ``set_input_shape`` returns False for a shape outside
  the *active* profile, ``set_tensor_address`` for an address that is not 256-byte aligned
  (the documented requirement), output shapes follow the input shapes, and ``execute_async_v3`` reads
  its inputs from and writes its outputs to the raw addresses it was given (host memory
  here), so wrong addresses, shapes or sizes give wrong numbers or a failed call.
* :class:`HostMemory` - the backend's torch buffer provider on the CPU, its buffers 256-byte
  aligned as CUDA allocations are (:func:`aligned_tensor`).
"""

from __future__ import annotations

import contextlib
import ctypes
import types
from typing import Callable, Sequence
from unittest import mock

import numpy as np

from engine.backends.tensorrt import tensors as io
from engine.backends.tensorrt.memory import ALIGNMENT, TorchMemory
from engine.backends.tensorrt.profiles import Profile

DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
          "BOOL": np.bool_, "UINT8": np.uint8, "INT8": np.int8}


def _view(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The numpy array at a raw address (what a kernel would read or write)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = (ctypes.c_char * n).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.calls: list[tuple] = []
        self.fail_execute = False

    def set_optimization_profile_async(self, index, stream):
        self.calls.append(("set_optimization_profile_async", index, stream))
        if not 0 <= index < len(self.engine.profiles):
            return False
        self.profile = index
        self.shapes.clear()  # switching profiles invalidates the input shapes
        return True

    def set_input_shape(self, name, shape):
        shape = tuple(shape)
        self.calls.append(("set_input_shape", name, shape))
        if not self.engine.profiles[self.profile][name].contains(shape):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name):
        if name in self.engine.input_names:
            return self.shapes.get(name, self.engine.shapes[name])
        if set(self.shapes) != set(self.engine.input_names):
            return self.engine.shapes[name]  # still -1 where dynamic
        return self.engine.output_shapes(self.shapes)[name]

    def set_tensor_address(self, name, ptr):
        self.calls.append(("set_tensor_address", name, ptr))
        if ptr % ALIGNMENT:
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        self.calls.append(("execute_async_v3", stream))
        if self.fail_execute:
            return False
        e = self.engine
        assert set(self.addresses) == set(e.shapes), f"unbound tensors: {set(e.shapes) - set(self.addresses)}"
        inputs = {n: _view(self.addresses[n], self.shapes[n], e.dtypes[n]).copy() for n in e.input_names}
        for name, value in e.compute(inputs).items():
            out = _view(self.addresses[name], self.get_tensor_shape(name), e.dtypes[name])
            out[...] = value  # raises if the allocation's shape is not the engine's
        return True

    def call_names(self) -> list[str]:
        return [c[0] for c in self.calls]


class FakeEngine:
    """``io``: ``(name, "INPUT"|"OUTPUT", DataType name, shape with -1)``;
    ``output_shapes(input shapes) -> {output: shape}``; ``compute(inputs) -> {output: array}``."""

    def __init__(self, io: Sequence[tuple[str, str, str, tuple[int, ...]]], profiles: Sequence[Profile],
                 output_shapes: Callable, compute: Callable):
        self.io = list(io)
        self.profiles = list(profiles)
        self.output_shapes = output_shapes
        self.compute = compute
        self.dtypes = {n: DTYPES[d] for n, _, d, _ in self.io}
        self.shapes = {n: tuple(s) for n, _, _, s in self.io}
        self.input_names = [n for n, m, _, _ in self.io if m == "INPUT"]
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self):
        return len(self.io)

    @property
    def num_optimization_profiles(self):
        return len(self.profiles)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def _row(self, name):
        return next(r for r in self.io if r[0] == name)

    def get_tensor_mode(self, name):
        return self._row(name)[1]

    def get_tensor_dtype(self, name):
        return self._row(name)[2]

    def get_tensor_shape(self, name):
        return list(self._row(name)[3])

    def create_execution_context(self):
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


def fake_trt(version, *, fp16_flag=True, parse_ok=True, plan=b"PLAN", inputs=("x",), engine=None):
    """The fake module; ``engine`` = what ``Runtime(...).deserialize_cuda_engine`` returns."""
    network = mock.MagicMock(name="network")
    network.num_inputs = len(inputs)
    network.get_input.side_effect = lambda i: types.SimpleNamespace(name=inputs[i])
    builder = mock.MagicMock(name="builder")
    builder.create_network.return_value = network
    builder.build_serialized_network.return_value = plan
    config = builder.create_builder_config.return_value
    config.get_timing_cache.return_value.serialize.return_value = b"TIMING"
    config.set_timing_cache.return_value = True
    config.add_optimization_profile.side_effect = lambda prof: len(config.add_optimization_profile.call_args_list) - 1
    parser = mock.MagicMock(name="parser")
    parser.parse.return_value = parse_ok
    parser.num_errors = 0 if parse_ok else 1
    parser.get_error.return_value = "Unsupported op Foo"
    flags = types.SimpleNamespace(FP16="FP16", TF32="TF32") if fp16_flag else types.SimpleNamespace(TF32="TF32")
    plans: list[bytes] = []

    def deserialize(data):
        plans.append(bytes(data))
        return engine

    runtime = mock.MagicMock(name="runtime")
    runtime.deserialize_cuda_engine.side_effect = deserialize
    return types.SimpleNamespace(
        __version__=version, Logger=mock.MagicMock(WARNING=2), Builder=mock.MagicMock(return_value=builder),
        OnnxParser=mock.MagicMock(return_value=parser), BuilderFlag=flags,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"), Runtime=mock.MagicMock(return_value=runtime),
        DataType=types.SimpleNamespace(**{k: k for k in DTYPES}, BF16="BF16"),
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT", NONE="NONE"),
        _builder=builder, _config=config, _parser=parser, _network=network, _runtime=runtime, _plans=plans,
    )


def aligned_tensor(value, dtype=None):
    """A CPU torch tensor holding ``value`` (array or tensor) at a 256-byte aligned address, as
    CUDA allocations are (torch's CPU allocations are 64-byte aligned)."""
    import torch

    src = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    dtype = src.dtype if dtype is None else dtype
    n = src.numel() * torch.empty((), dtype=dtype).element_size()
    raw = torch.empty(n + ALIGNMENT, dtype=torch.uint8)
    off = (-raw.data_ptr()) % ALIGNMENT
    out = raw[off:off + n].view(dtype).reshape(tuple(src.shape))
    out.copy_(src)
    return out


class HostMemory(TorchMemory):
    """torch CPU tensors as the "device": their data_ptr() is what the fake engine reads.

    Events are numbered; ``waits`` lists what the stream was made to wait for, ``scopes``
    counts the device scopes entered.
    """

    STREAM = 0xC0FFEE  # a recognisable stream handle

    def __init__(self):
        import torch

        self.torch = torch
        self.device = torch.device("cpu")
        self.events = 0
        self.waits: list = []
        self.scopes = 0

    def scope(self):
        self.scopes += 1
        return contextlib.nullcontext()

    def stream_handle(self) -> int:
        return self.STREAM

    def record(self):
        self.events += 1
        return self.events

    def wait(self, event) -> None:
        self.waits.append(event)

    def empty(self, shape, dtype):
        return aligned_tensor(np.zeros(shape, dtype))

    def upload(self, array):
        return aligned_tensor(array)

    def aligned(self, tensor):
        return tensor if tensor.data_ptr() % ALIGNMENT == 0 else aligned_tensor(tensor)

    def cast(self, tensor, dtype):
        return aligned_tensor(tensor, io.torch_dtype(dtype))
