"""Host-to-device staging of decoded frames for the device pipeline: chunks, streams, two buffers.

CPU-decoded frames reach the device in chunks of at most ``batch_size`` frames of one geometry
(:func:`chunk_spans`). Each chunk's planes are written into a pinned host buffer and copied to a
device buffer with ``non_blocking`` copies on a side stream; there are two such buffer slots
(:class:`DoubleBuffer`), so while the compute stream preprocesses and runs the model on chunk i
(slot i % 2), chunk i + 1 is written and copied into the other slot. Events order the two
streams, see Note [double buffering].

:class:`CudaStreams` does this with torch CUDA streams, events and pinned memory;
:class:`HostStreams` is the same interface on the CPU (copies complete when issued, nothing to
wait for), which is how the device pipeline runs where there is no GPU.

Note [double buffering]
-----------------------
Slot k holds chunks k, k + 2, k + 4, ... Two hazards when chunk i + 2 reuses the slot of chunk i:

* the host must not overwrite the pinned buffer while the copy of chunk i still reads it: the
  host waits for the slot's ``copied`` event before filling it (by then the copy of chunk i has
  long finished: chunk i + 1's compute was queued in between);
* the copy must not overwrite the device buffer while chunk i's preprocessing still reads it:
  the copy stream waits for the slot's ``consumed`` event, recorded on the compute stream after
  chunk i's preprocessing was queued.

A slot's device buffers are (re)allocated on the compute stream, the caller's (torch's caching
allocator files memory under the stream it was allocated on). Memory that work queued on the
compute stream still uses may be handed out again at once, for that stream; so after an
allocation ``consumed`` is an event recorded there, and the first copy into the new buffers
waits for everything queued on the compute stream before it.

The compute stream waits for ``copied`` before reading the slot. The caller queues chunk i's
compute, then stages chunk i + 1, so the host-side fill and the copy overlap chunk i's compute.

Rows in the buffers start every :data:`ROW_ALIGN` bytes, as decoders lay out their planes: with a
dense layout an 854-wide 480p frame would have odd row strides, and the CUDA kernel's staging
would fall back from 32-bit loads to byte loads (Note [CUDA preprocess: 8-bit fast path]). The
copies move the padded rows whole.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .ops.cuda import _plane_geometry

ROW_ALIGN = 64  # bytes between row starts in the staging buffers are a multiple of this


def padded_row(samples: int, itemsize: int) -> int:
    """Samples from one row start to the next: ``samples`` rounded up to ROW_ALIGN bytes."""
    per_align = ROW_ALIGN // itemsize
    return -(-samples // per_align) * per_align


def chunk_spans(keys: Sequence[Hashable], batch_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` spans of consecutive equal ``keys``, each at most ``batch_size`` long.

    One kernel launch preprocesses frames of one format and size, so a change of key (a stream
    that changes resolution, host frames next to device frames) starts a new chunk; the last
    chunk of a run may be partial.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start] or i - start == batch_size:
            spans.append((start, i))
            start = i
    return spans


def plane_shapes(format: str, width: int, height: int) -> tuple[tuple[int, int, int], ...]:
    """(rows, pixels, channels) of each plane of one frame (the kernels' geometry)."""
    return tuple(_plane_geometry(format.removesuffix("_10"), width, height))


class HostStreams:
    """The stream interface on the CPU: a copy is complete when issued, so events are None and
    waits return at once."""

    def __init__(self):
        import torch

        self.torch = torch
        self.device = torch.device("cpu")

    def host_buffer(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype)

    def device_buffer(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device=self.device)

    def copy(self, dst: Any, src: Any) -> None:
        dst.copy_(src)

    def record_copy(self) -> Any:
        return None

    def record_compute(self) -> Any:
        return None

    def copy_wait(self, event: Any) -> None:
        pass

    def compute_wait(self, event: Any) -> None:
        pass

    def host_wait(self, event: Any) -> None:
        pass

    def upload(self, array: np.ndarray) -> Any:
        """A host array as a tensor on the device (:func:`upload`)."""
        return upload(array, self.device)


class CudaStreams(HostStreams):
    """Pinned host buffers, a side stream for host-to-device copies, events between the streams.

    The compute stream is torch's current stream on the device when a method is called (the
    caller's, as for every kernel of :mod:`engine.ops.cuda` / :mod:`engine.kernels`).
    """

    def __init__(self, device: str):
        super().__init__()
        torch = self.torch
        self.device = torch.device(device)
        self.copy_stream = torch.cuda.Stream(self.device)

    def host_buffer(self, shape: tuple[int, ...], dtype: Any) -> Any:
        # pinned: a non_blocking copy from pageable memory would be a synchronous one
        return self.torch.empty(shape, dtype=dtype, pin_memory=True)

    def copy(self, dst: Any, src: Any) -> None:
        with self.torch.cuda.stream(self.copy_stream):
            dst.copy_(src, non_blocking=True)

    def _record(self, stream: Any) -> Any:
        event = self.torch.cuda.Event()
        event.record(stream)
        return event

    def record_copy(self) -> Any:
        return self._record(self.copy_stream)

    def record_compute(self) -> Any:
        return self._record(self.torch.cuda.current_stream(self.device))

    def copy_wait(self, event: Any) -> None:
        if event is not None:
            self.copy_stream.wait_event(event)

    def compute_wait(self, event: Any) -> None:
        if event is not None:
            self.torch.cuda.current_stream(self.device).wait_event(event)

    def host_wait(self, event: Any) -> None:
        if event is not None:
            event.synchronize()



def upload(array: np.ndarray, device: Any) -> Any:
    """A host array as a tensor on ``device`` without blocking the host: on a GPU, pinned staging
    and a copy queued on the current stream (torch's pinned-memory allocator keeps the staging
    buffer until the copy has run; a pageable copy would wait for the stream); on the CPU, the
    array itself, shared."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


@dataclass
class _Slot:
    layout: tuple | None = None  # (sample dtype, plane shapes) the buffers are allocated for
    host: list = field(default_factory=list)  # per plane: pinned [capacity, rows, padded samples]
    host_views: list = field(default_factory=list)  # numpy views of their samples (no padding)
    device: list = field(default_factory=list)  # per plane: device [capacity, rows, padded samples]
    samples: tuple = ()  # per plane: samples per row (the rest of a row is padding)
    copied: Any = None  # event: the copies of the chunk staged here have run
    consumed: Any = None  # event: the compute reading the chunk staged here has run


@dataclass(frozen=True)
class Staged:
    """One chunk in a slot: its batched device planes ``[count, rows, samples]``."""

    index: int
    slot: _Slot
    planes: tuple


class DoubleBuffer:
    """Two pinned host + device buffer slots for a sequence of chunks (Note [double buffering]).

    ``stage(i, frames)`` fills slot i % 2 and queues its copy; ``acquire`` makes the compute
    stream wait for that copy and returns the device planes; ``release`` marks the compute that
    reads them as queued. Buffers hold ``capacity`` frames, so a last partial chunk uses views of
    its first rows; they are reallocated only when the frame geometry changes.
    """

    def __init__(self, streams: HostStreams, capacity: int, sample_dtype_10bit: Any):
        if capacity < 1:
            raise InputError(f"capacity must be >= 1, got {capacity}")
        self.streams = streams
        self.capacity = capacity
        self.dtype_10bit = sample_dtype_10bit  # torch.uint16 for the CUDA kernels, int16 for Triton
        self.slots = (_Slot(), _Slot())

    def stage(self, index: int, frames: Sequence[Any]) -> Staged:
        """Write ``frames`` (one format and size, host planes) into slot ``index % 2`` and queue
        the host-to-device copy."""
        count = len(frames)
        if not 0 < count <= self.capacity:
            raise InputError(f"a chunk holds 1..{self.capacity} frames, got {count}")
        streams, slot = self.streams, self.slots[index % 2]
        f0 = frames[0]
        shapes = plane_shapes(f0.format, f0.width, f0.height)
        dtype = self.dtype_10bit if f0.format.endswith("_10") else streams.torch.uint8
        streams.host_wait(slot.copied)  # the pinned buffer is free once its last copy ran
        if slot.layout != (dtype, shapes):
            streams.host_wait(slot.consumed)  # free device buffers only when nothing reads them
            self._allocate(slot, dtype, shapes)
            # torch's allocator hands the new device buffers out on the compute stream: memory
            # the compute stream freed while its kernels still read it (the last chunk's model
            # input) may come back at once, so the copy stream waits for that compute too
            slot.consumed = streams.record_compute()
        for k, frame in enumerate(frames):
            for view, plane, (rows, pixels, ch) in zip(slot.host_views, frame.planes, shapes):
                _fill(view[k], plane, rows, pixels, ch)
        streams.copy_wait(slot.consumed)
        for host, dev in zip(slot.host, slot.device):
            streams.copy(dev[:count], host[:count])
        slot.copied = streams.record_copy()
        return Staged(index, slot, tuple(dev[:count, :, :n] for dev, n in zip(slot.device, slot.samples)))

    def acquire(self, staged: Staged) -> tuple:
        """The chunk's device planes, after the compute stream waits for their copy."""
        self.streams.compute_wait(staged.slot.copied)
        return staged.planes

    def release(self, staged: Staged) -> None:
        """Call after the compute that reads the chunk is queued: the slot may be refilled."""
        staged.slot.consumed = self.streams.record_compute()

    def _allocate(self, slot: _Slot, dtype: Any, shapes: tuple) -> None:
        slot.samples = tuple(pixels * ch for _, pixels, ch in shapes)
        padded = [(self.capacity, rows, padded_row(n, dtype.itemsize)) for (rows, _, _), n in zip(shapes, slot.samples)]
        slot.host = [self.streams.host_buffer(shape, dtype) for shape in padded]
        slot.device = [self.streams.device_buffer(shape, dtype) for shape in padded]
        slot.host_views = [h.numpy()[:, :, :n] for h, n in zip(slot.host, slot.samples)]
        slot.layout = (dtype, shapes)


def _fill(dst: np.ndarray, plane: Any, rows: int, pixels: int, ch: int) -> None:
    """Copy one decoded plane (rows may be padded) into a ``[rows, pixels * ch]`` buffer view
    (contiguous rows, padded between them)."""
    src = np.asarray(plane)
    if src.dtype.itemsize != dst.dtype.itemsize:
        raise InputError(f"plane dtype {src.dtype} does not match the staging buffer's {dst.dtype}")
    if src.dtype != dst.dtype:  # 10-bit samples: uint16 and int16 hold the same bits below 1024
        src = src.view(dst.dtype)
    if src.ndim == 3:
        np.reshape(dst, (rows, pixels, ch), copy=False)[...] = src[:rows, :pixels]  # a view, or an error
    else:
        dst[...] = src[:rows, : pixels * ch]
