"""TensorRT runtime backend: run a cached (or freshly built) engine on a CUDA device.

**The TensorRT calls in this module have never run in this project** (no TensorRT wheel
installs anywhere it is built or tested, the lent GPU machine included). The tests drive it
with a fake ``tensorrt`` module whose engine computes on host memory through the addresses it
is given, so the control flow is tested: profile choice, input shapes, tensor addresses,
output sizes, batch splitting, cache reuse and rebuild, error translation. The calls follow
the TensorRT 10 Python API, unchanged in 11:

* ``Runtime(logger).deserialize_cuda_engine(plan)`` (:func:`.builder.load`);
* ``engine.num_io_tensors``, ``get_tensor_name(i)``, ``get_tensor_mode(name)``
  (``TensorIOMode.INPUT/OUTPUT``), ``get_tensor_dtype(name)``, ``get_tensor_shape(name)``,
  ``num_optimization_profiles``, ``create_execution_context()``;
* ``context.set_optimization_profile_async(index, stream)``, ``set_input_shape(name, shape)``,
  ``get_tensor_shape(name)``, ``set_tensor_address(name, ptr)``, ``execute_async_v3(stream)``.

Buffers are torch tensors on the backend's device. Outputs are allocated per call from torch's
caching allocator (which pools device memory itself): a returned tensor is never overwritten
by a later call, which a fixed output pool could not promise to callers that keep tensors.
Work is enqueued on torch's current stream of the device, i.e. the caller's stream (a
``with torch.cuda.stream(s):`` block around the call is honoured).

``infer`` takes numpy arrays (copied to the device, outputs copied back: numpy out) or torch
tensors / objects with ``__cuda_array_interface__`` / ``__dlpack__`` (used in place when
contiguous and of the engine's dtype on the device: torch tensors out, still on the stream).
"""

from __future__ import annotations

import logging
import threading
from typing import Mapping

import numpy as np

from engine.backends.base import BaseBackend, check_names, check_shape, common_batch, specs_from_config, split_batches
from engine.backends.tensorrt import tensors as io
from engine.backends.tensorrt.builder import DEFAULT_WORKSPACE, import_tensorrt, load
from engine.backends.tensorrt.memory import TorchMemory, is_tensor_input
from engine.backends.tensorrt.plans import GpuInfo, engine_profiles, get_or_build
from engine.backends.tensorrt.profiles import Profile
from engine.errors import EngineError, InputError, ModelError

log = logging.getLogger(__name__)


class TensorRTBackend(BaseBackend):
    """A model's TensorRT engine on one GPU.

    Parameters
    ----------
    entry : :class:`engine.repo.ModelEntry` of an ONNX model.
    device : CUDA device (``"cuda"``, ``"cuda:1"``).
    precision : ``"fp16"`` (default) or ``"fp32"``, see :mod:`.builder`.
    opt_batch : the batch size TensorRT tunes for; None = the batch size the repository's
        pipeline.toml gives this model (what ``engine compile`` uses), else ``max_batch_size``.
        Part of the engine's cache key.
    profiles : optimisation profiles, smallest first (default: :func:`.plans.engine_profiles`).
    threads : accepted for the common backend signature; TensorRT does not use host threads.
    workspace : builder scratch memory when the engine has to be built.
    trt, memory, gpu : the ``tensorrt`` module, the buffer/stream provider
        (:class:`TorchMemory`) and the GPU identity; tests pass fakes.
    """

    name = "tensorrt"

    def __init__(self, entry, *, device: str = "cuda", precision: str = "fp16",
                 opt_batch: int | None = None, profiles: list[Profile] | None = None,
                 threads: int | None = None, workspace: int = DEFAULT_WORKSPACE,
                 trt=None, memory=None, gpu: GpuInfo | None = None):
        del threads  # no host thread pool: the work is on the GPU
        self.trt = import_tensorrt() if trt is None else trt
        cfg = entry.config
        inputs, outputs = specs_from_config(cfg)
        super().__init__(entry.name, cfg.max_batch_size, inputs, outputs)
        self.memory = TorchMemory(device) if memory is None else memory
        self.precision = precision
        self.profiles = list(profiles) if profiles is not None else engine_profiles(entry, opt_batch)
        if gpu is None:
            gpu = self.memory.gpu
        build = dict(precision=precision, profiles=self.profiles, gpu=gpu, trt=self.trt, workspace=workspace)
        with self.memory.scope():  # TensorRT builds for, and loads onto, the current device
            self.plan = get_or_build(entry, **build)
            self._load(entry, build)
        self.engine_inputs, self.engine_outputs = io.read_io(self.trt, self.engine)
        io.check_io(self.model_name, self.max_batch_size, (self.inputs, self.outputs),
                    (self.engine_inputs, self.engine_outputs))
        if self.engine.num_optimization_profiles != len(self.profiles):
            raise ModelError(f"{self.model_name}: engine {self.plan.path} has "
                             f"{self.engine.num_optimization_profiles} optimisation profiles, its cache "
                             f"key says {len(self.profiles)}")
        self._active_profile = 0  # a new context starts on profile 0
        self._last_enqueue = None  # event after the latest enqueue, for callers on other streams
        self._dtypes = {s.name: s.dtype for s in self.engine_inputs + self.engine_outputs}
        self._split = io.split_size(self.profiles, self.max_batch_size)
        # one context holds one set of shapes and addresses: calls enqueue one at a time
        self._lock = threading.Lock()

    def _load(self, entry, build: dict) -> None:
        # the runtime must outlive the engine, the engine its context: all three are kept
        try:
            self.runtime, self.engine = load(self.plan.path.read_bytes(), trt=self.trt)
        except ModelError:
            if self.plan.built:
                raise
            # the key matched but this TensorRT refuses the plan (e.g. another driver): rebuild once
            log.warning("%s: TensorRT refused the cached engine %s: rebuilding it", entry.name, self.plan.path)
            self.plan = get_or_build(entry, rebuild=True, **build)
            self.runtime, self.engine = load(self.plan.path.read_bytes(), trt=self.trt)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ModelError(f"{self.model_name}: TensorRT could not create an execution context "
                             "(out of GPU memory?)")

    @property
    def split_size(self) -> int:
        return self._split

    # ------------------------------------------------------------------ host (numpy) path
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: self.memory.upload(v) for k, v in inputs.items()}
        outs = self._enqueue(tensors)
        return {s.name: self.memory.download(outs[s.name]) for s in self.outputs}

    # ------------------------------------------------------------------ device (tensor) path
    def infer(self, inputs):
        if isinstance(inputs, Mapping) and any(is_tensor_input(v) for v in inputs.values()):
            return self.infer_tensors(inputs)
        return super().infer(inputs)

    def infer_tensors(self, inputs: Mapping[str, object]) -> dict:
        """Device tensors in, torch tensors on the device out (enqueued, not synchronised).

        Host arrays among the inputs are uploaded; the outputs are torch tensors all the same.
        """
        check_names(self.model_name, self.inputs, inputs)
        batched = self.max_batch_size > 0
        tensors = {}
        for s in self.inputs:
            t = self.memory.adopt(inputs[s.name])
            check_shape(s, tuple(t.shape), batched, self.model_name)
            tensors[s.name] = self._as_dtype(s.name, t, s.dtype)
        batch = common_batch(self.model_name, {k: tuple(v.shape) for k, v in tensors.items()},
                             self.max_batch_size)
        if batched and batch == 0:
            return {s.name: self.memory.empty((0,) + tuple(max(d, 0) for d in s.shape), s.dtype)
                    for s in self.outputs}
        parts = [self._enqueue({k: v[sl] for k, v in tensors.items()})
                 for sl in split_batches(batch, self._split)]
        if len(parts) == 1:
            return {s.name: parts[0][s.name] for s in self.outputs}
        cat = self.memory.torch.cat
        return {s.name: cat([p[s.name] for p in parts], dim=0) for s in self.outputs}

    def _as_dtype(self, name: str, tensor, dtype: np.dtype):
        have = io.numpy_of_torch(tensor.dtype)
        if have == dtype:
            return tensor
        if have is None or not np.can_cast(have, dtype, casting="same_kind"):
            raise InputError(f"{self.model_name}: input {name!r} has dtype {tensor.dtype}, expected {dtype}")
        return self.memory.cast(tensor, dtype)

    # ------------------------------------------------------------------ the TensorRT calls
    def _enqueue(self, tensors: dict) -> dict:
        """Bind ``tensors`` and fresh outputs, enqueue the engine; returns every engine output.

        Inputs are made contiguous (TensorRT reads dense row-major buffers) and 256-byte aligned
        (``TorchMemory.aligned``); a tensor that is not costs one copy.
        """
        tensors = {k: self.memory.aligned(v.contiguous()) for k, v in tensors.items()}
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in tensors.items()}
        index = io.choose_profile(self.profiles, shapes)
        with self._lock, self.memory.scope():
            try:
                return self._bind_and_enqueue(tensors, shapes, index)
            except EngineError:
                raise
            except Exception as e:  # noqa: BLE001 - TensorRT and torch raise RuntimeError/TypeError
                raise ModelError(f"{self.model_name}: TensorRT inference failed: {e}") from e

    def _bind_and_enqueue(self, tensors: dict, shapes: dict, index: int) -> dict:
        ctx = self.context
        stream = self.memory.stream_handle()
        # the context's scratch memory is shared by all calls: a caller on another stream
        # must not start before the previous enqueue has finished with it
        self.memory.wait(self._last_enqueue)
        if index != self._active_profile:
            self._check(ctx.set_optimization_profile_async(index, stream),
                        f"cannot switch to optimisation profile {index}")
            self._active_profile = index
        for name, shape in shapes.items():
            self._check(ctx.set_input_shape(name, shape), f"input {name!r} rejects shape {shape}")
        out_shapes = io.output_shapes(self.model_name, self.engine_outputs,
                                      {s.name: ctx.get_tensor_shape(s.name) for s in self.engine_outputs})
        outs = {name: self.memory.empty(shape, self._dtypes[name]) for name, shape in out_shapes.items()}
        for name, t in list(tensors.items()) + list(outs.items()):
            self._check(ctx.set_tensor_address(name, t.data_ptr()), f"cannot bind {name!r}")
        self._check(ctx.execute_async_v3(stream), "execute_async_v3 failed (see the TensorRT log)")
        self._last_enqueue = self.memory.record()
        return outs

    def _check(self, ok, what: str) -> None:
        # the binding methods report failure by returning False (details go to the TRT logger)
        if ok is False:
            raise ModelError(f"{self.model_name}: TensorRT: {what}")
