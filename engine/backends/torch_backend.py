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
  are used without copies and give torch CUDA tensors. **Not yet run on a GPU.**

``infer`` is thread-safe (CPU: stateless forward; CUDA: one call at a time per model).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from engine.backends.base import BaseBackend, check_inputs, specs_from_config, split_batches
from engine.backends.onnx_io import check_io, onnx_file
from engine.backends.onnx_to_torch import graph_io, to_torch
from engine.backends.torch_cuda import CudaRunner, fp16_setting, parse_device, torch_dtype
from engine.errors import InputError, ModelError

log = logging.getLogger(__name__)


def is_device_array(value) -> bool:
    """A GPU array: a CUDA torch tensor, or anything with ``__cuda_array_interface__``, or a
    DLPack producer on a CUDA device."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.is_cuda
    if hasattr(value, "__cuda_array_interface__"):
        return True
    if hasattr(value, "__dlpack_device__") and not isinstance(value, np.ndarray):
        return value.__dlpack_device__()[0] in (2, 3)  # kDLCUDA, kDLCUDAHost
    return False


def as_tensor(value):
    """A torch view of an array (no copy): torch tensors, numpy, CUDA array interface, DLPack."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if hasattr(value, "__cuda_array_interface__"):
        return torch.as_tensor(value, device="cuda")
    return torch.from_dlpack(value)


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
            self._cuda = CudaRunner(module, model=entry.name, index=index, inputs=ordered,
                                    outputs=self.outputs, output_index=self._output_index,
                                    max_batch_size=self.max_batch_size, fp16=fp16, tolerance=tolerance)
        else:
            self._module = module

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

        with torch.inference_mode():
            out = self._module(*[torch.from_numpy(a) for a in arrays])
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return [out[i].numpy() for i in self._output_index]

    # -- device path ----------------------------------------------------------------------------
    def infer(self, inputs: Mapping[str, object]) -> dict:
        """numpy in -> numpy out; on CUDA, GPU arrays in -> torch CUDA tensors out (no host copy)."""
        if self._cuda is not None and isinstance(inputs, Mapping) and any(
                is_device_array(v) for v in inputs.values()):
            return self._infer_device(inputs)
        return super().infer(inputs)

    def _infer_device(self, inputs: Mapping[str, object]) -> dict:
        import torch

        tensors = {name: as_tensor(value) for name, value in inputs.items()}
        for s in self.inputs:
            t, want = tensors.get(s.name), torch_dtype(s.dtype)
            if t is not None and t.dtype != want:
                if t.dtype.is_floating_point != want.is_floating_point:
                    raise InputError(f"{self.model_name}: input {s.name!r} has dtype {t.dtype}, expected {want}")
                tensors[s.name] = t.to(want)
        # names, shapes and batch size checked by the numpy rules on zero-byte stand-ins
        specs = {s.name: s.dtype for s in self.inputs}
        stand_ins = {name: np.broadcast_to(np.zeros((), specs.get(name, np.float32)), tuple(t.shape))
                     for name, t in tensors.items()}
        _, batch = check_inputs(self.model_name, self.inputs, stand_ins, self.max_batch_size)
        ordered = [tensors[n] for n in self._input_order]
        slices = split_batches(batch, self.max_batch_size) if self.max_batch_size > 0 else [slice(None)]
        parts = [self._cuda.run_device([t[sl] for t in ordered]) for sl in slices]
        return {s.name: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]
                for k, s in enumerate(self.outputs)}

    def warmup(self) -> None:
        super().warmup()
        if self._cuda is not None:
            self._cuda.warmup()
