"""Device memory, streams and the current device for the TensorRT backend, from torch.

:class:`TorchMemory` is everything the backend asks of CUDA: buffers (torch tensors, so
torch's caching allocator pools device memory), the caller's stream, the device TensorRT must
see as current, and ordering between streams. Tests replace it with host memory.
"""

from __future__ import annotations

import numpy as np

from engine.backends.tensorrt import tensors as io
from engine.device_staging import upload
from engine.backends.tensorrt.plans import torch_gpu


# IExecutionContext::setTensorAddress: "The pointer must have at least 256-byte alignment."
ALIGNMENT = 256


def is_tensor_input(value) -> bool:
    """True for torch tensors and device-array objects; False for numpy arrays and lists."""
    if isinstance(value, np.ndarray):
        return False
    module = type(value).__module__.split(".")[0]
    return module == "torch" or hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__")


class TorchMemory:
    """Buffers and the stream for TensorRT, from torch on one CUDA device."""

    def __init__(self, device: str = "cuda"):
        import torch

        self.torch = torch
        self.gpu = torch_gpu(device)  # ModelError without CUDA
        self.device = torch.device(device)
        if self.device.index is None:  # "cuda" = the current device, pinned now
            self.device = torch.device("cuda", torch.cuda.current_device())

    def scope(self):
        """Make the device current: TensorRT deserializes and enqueues on the current device."""
        return self.torch.cuda.device(self.device)

    def stream_handle(self) -> int:
        """The ``cudaStream_t`` of torch's current stream on the device (the caller's)."""
        return self.torch.cuda.current_stream(self.device).cuda_stream

    def record(self):
        """An event marking the work enqueued so far on the current stream."""
        event = self.torch.cuda.Event()
        event.record(self.torch.cuda.current_stream(self.device))
        return event

    def wait(self, event) -> None:
        """Make the current stream wait for ``event`` (None: nothing to wait for)."""
        if event is not None:
            self.torch.cuda.current_stream(self.device).wait_event(event)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        return self.torch.empty(shape, dtype=io.torch_dtype(dtype), device=self.device)

    def upload(self, array) -> object:
        """Host array -> device tensor, queued on the current stream without blocking the host
        (:func:`engine.device_staging.upload`)."""
        return upload(array, self.device)

    def adopt(self, value):
        """A caller's value as a torch tensor on the device, without a copy when it is there
        (:func:`adopt_tensor`)."""
        return adopt_tensor(value, self.device)

    def aligned(self, tensor):
        """``tensor`` (contiguous), or a copy where its address is not ALIGNMENT-aligned: a
        slice of a split batch or a caller's view may start anywhere; torch's CUDA allocations
        are aligned."""
        return tensor if tensor.data_ptr() % ALIGNMENT == 0 else tensor.clone()

    def download(self, tensor) -> np.ndarray:
        """Device tensor -> host array (waits for the stream's work up to here)."""
        return tensor.cpu().numpy()

    def cast(self, tensor, dtype: np.dtype):
        return tensor.to(io.torch_dtype(dtype))


def adopt_tensor(value, device):
    """A caller's value as a torch tensor on ``device`` (a ``torch.device``), without a copy
    when it is there.

    torch tensors are taken as they are. Other device arrays share memory: through
    ``torch.from_dlpack`` where they have ``__dlpack__`` (CuPy, JAX; torch hands the producer its
    current stream, and the producer orders its pending work before it), else through their
    ``__cuda_array_interface__`` (Numba, PyCUDA), after which torch's current stream waits for
    the stream the interface names (v3: the producer may still have work queued there;
    ``torch.as_tensor`` does not look at it). A tensor on another device is copied over, and host
    arrays are uploaded (on the CPU, numpy arrays are shared through ``torch.from_numpy``).
    """
    import torch

    if isinstance(value, torch.Tensor):
        t = value
    elif not is_tensor_input(value):
        t = torch.from_numpy(np.ascontiguousarray(value))
    elif hasattr(value, "__dlpack__"):
        t = torch.from_dlpack(value)
    else:
        t = torch.as_tensor(value)  # on the data's own device: a copy to `device` waits below
        producer = value.__cuda_array_interface__.get("stream")
        if producer is not None and t.is_cuda:
            # 1 and 2 are the legacy and per-thread default streams, valid handles as they are
            torch.cuda.current_stream(t.device).wait_stream(torch.cuda.ExternalStream(int(producer), device=t.device))
    return t if t.device == device else t.to(device)
