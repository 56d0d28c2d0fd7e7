"""PyTorch backend: the repository's ONNX models converted to torch modules (onnx2torch).

Loads like the ONNX Runtime backend: the ONNX file comes from a ModelEntry whose files
ModelRepository verified against models.lock; the graph's inputs and outputs are checked
against config.pbtxt (:func:`engine.backends.onnx_io.check_io`); batches above max_batch_size
are split by ``run_batched``. The converted module takes the graph inputs positionally.

* ``device="cpu"``: fp32 eager under ``torch.inference_mode``; numpy in, numpy out. ``threads``
  sets torch's intra-op threads, which are process-wide in torch (not per model as in ONNX
  Runtime). This is the path the tests run (parity with ONNX Runtime on every model).
* ``device="cuda[:N]"``: :class:`engine.backends.torch_cuda.CudaRunner` (fp16 where the model
  passes the check, channels_last, CUDA graphs per batch bucket, pinned staging). numpy inputs
  give numpy outputs; torch tensors, ``__cuda_array_interface__`` or DLPack arrays on the GPU
  are used without copies (adopted as the TensorRT backend does,
  :meth:`engine.backends.tensorrt.memory.TorchMemory.adopt`) and give torch CUDA tensors (a
  model running as CUDA graphs copies the rows into its captured input buffers on the device).
  Dynamic-length models (MiniLM) run as CUDA graphs per batch x length bucket when their config
  names ``torch_length_buckets`` (Note [length buckets] in :mod:`engine.backends.torch_cuda`).
  Checked on an H100 (2026-11-26) for open_nsfw and YAMNet, (2026-11-27) for MiniLM with its
  length buckets.

``infer`` is thread-safe (CPU: stateless forward; CUDA: one call at a time per model).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from engine.backends.base import (BaseBackend, check_names, check_shape, common_batch, specs_from_config,
                                  split_batches)
from engine.backends.onnx_io import check_io, onnx_file
from engine.backends.onnx_static import input_dims, specialize
from engine.backends.onnx_to_torch import graph_io, to_torch
# the TensorRT backend's torch helpers: device arrays adopted the same way by both GPU backends
from engine.backends.tensorrt.memory import TorchMemory, is_tensor_input
from engine.backends.tensorrt.tensors import numpy_of_torch, torch_dtype
from engine.backends.torch_cuda import (LENGTH_BUCKETS_KEY, CudaRunner, fp16_setting, length_buckets_setting,
                                        parse_device, run_module)
from engine.errors import InputError, ModelError

log = logging.getLogger(__name__)


class TorchBackend(BaseBackend):
    name = "torch"

    def __init__(self, entry, *, device: str = "cpu", threads: int | None = None):
        import onnx
        import torch

        cfg = entry.config
        inputs, outputs = specs_from_config(cfg)
        super().__init__(entry.name, cfg.max_batch_size, inputs, outputs)
        self.path = onnx_file(entry)
        self.device = device
        kind, index = parse_device(device)
        try:
            graph = onnx.load(str(self.path))
        except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
            raise ModelError(f"{entry.name}: cannot read {self.path}: {e}") from None
        graph_inputs, graph_outputs = graph_io(graph)
        check_io(entry.name, self.max_batch_size, self.inputs, self.outputs, graph_inputs, graph_outputs)
        self._input_order = list(graph_inputs)  # the module's positional arguments
        order = list(graph_outputs)
        self._output_index = [order.index(s.name) for s in self.outputs]
        module = to_torch(graph, entry.name)
        dims = input_dims(graph)
        del graph
        if threads is not None:
            if threads < 1:
                raise ModelError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))  # process-wide in torch
        self._cuda: CudaRunner | None = None
        self._module = None
        if kind == "cuda":
            fp16, tolerance = fp16_setting(entry)
            ordered = [next(s for s in self.inputs if s.name == n) for n in self._input_order]
            lengths = length_buckets_setting(entry)
            self._cuda = CudaRunner(module, model=entry.name, index=index, inputs=ordered,
                                    outputs=self.outputs, output_index=self._output_index,
                                    max_batch_size=self.max_batch_size, fp16=fp16, tolerance=tolerance,
                                    length_buckets=lengths,
                                    specialise=self._specialiser(dims) if lengths else None)
            self._memory = TorchMemory(f"cuda:{index}")
        else:
            self._module = module

    def _specialiser(self, dims: dict[str, list]):
        """``(rows, length) -> module`` of the graph specialised to those sizes (Note [length
        buckets] in :mod:`engine.backends.torch_cuda`): the graph's batch dimension names take
        ``rows``, the names of the config's dynamic dimensions (-1) take ``length``."""
        batch, length = set(), set()
        for s in self.inputs:
            names = dims[s.name]
            batch.add(names[0])
            length.update(names[a + 1] for a, d in enumerate(s.shape) if d == -1)
        if not all(isinstance(d, str) for d in batch | length) or batch & length:
            raise ModelError(f"{self.model_name}: parameters.{LENGTH_BUCKETS_KEY} needs named dynamic dimensions "
                             f"in the ONNX graph, one for the batch and others for the length; found {dims}")
        path, name = self.path, self.model_name

        def module(rows: int, n: int):
            sizes = dict.fromkeys(batch, rows) | dict.fromkeys(length, n)
            return to_torch(specialize(path, sizes, name), name)

        return module

    @property
    def length_buckets(self) -> tuple[int, ...]:
        """The token lengths this backend runs CUDA graphs for (Note [length buckets]); () when
        it runs any length alike (the CPU, eager CUDA)."""
        runner = self._cuda.runner if self._cuda is not None else None
        return runner.lengths if runner is not None else ()

    @property
    def fp16(self) -> bool:
        """Whether inference runs under fp16 autocast (only ever on CUDA)."""
        return bool(self._cuda and self._cuda.fp16)

    # -- numpy path (BaseBackend.infer validates and splits, then calls _run per chunk) --------
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(inputs[n]) for n in self._input_order]
        try:
            if self._cuda is not None:
                outs = self._cuda.run_host(arrays)
            else:
                outs = self._forward_cpu(arrays)
        except (ModelError, InputError):
            raise
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, IndexError, ...
            raise ModelError(f"{self.model_name}: inference failed: {type(e).__name__}: {e}") from None
        return {s.name: o.astype(s.dtype, copy=False) for s, o in zip(self.outputs, outs)}

    def _forward_cpu(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        outs = run_module(self._module, [torch.from_numpy(a) for a in arrays], self._output_index)
        return [o.numpy() for o in outs]

    # -- device path ----------------------------------------------------------------------------
    def infer(self, inputs: Mapping[str, object]) -> dict:
        """numpy in -> numpy out; on CUDA, GPU arrays in -> torch CUDA tensors out (no host copy)."""
        if self._cuda is not None and isinstance(inputs, Mapping) and any(
                is_tensor_input(v) for v in inputs.values()):
            return self._infer_device(inputs)
        return super().infer(inputs)

    def _infer_device(self, inputs: Mapping[str, object]) -> dict:
        import torch

        check_names(self.model_name, self.inputs, inputs)
        batched = self.max_batch_size > 0
        tensors = {}
        for s in self.inputs:
            t = self._memory.adopt(inputs[s.name])  # GPU arrays shared, host arrays uploaded
            check_shape(s, tuple(t.shape), batched, self.model_name)
            have = numpy_of_torch(t.dtype)
            if have != s.dtype:
                if have is None or not np.can_cast(have, s.dtype, casting="same_kind"):
                    raise InputError(f"{self.model_name}: input {s.name!r} has dtype {t.dtype}, expected {s.dtype}")
                t = t.to(torch_dtype(s.dtype))
            tensors[s.name] = t
        batch = common_batch(self.model_name, {k: tuple(v.shape) for k, v in tensors.items()},
                             self.max_batch_size)
        ordered = [tensors[n] for n in self._input_order]
        slices = split_batches(batch, self.max_batch_size) if batched else [slice(None)]
        parts = [self._cuda.run_device([t[sl] for t in ordered]) for sl in slices]
        return {s.name: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
                for k, s in enumerate(self.outputs)}

    def warmup(self) -> None:
        super().warmup()
        if self._cuda is not None:
            self._cuda.warmup()
