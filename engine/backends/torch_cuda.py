"""The CUDA side of the torch backend: fp16 decision, batch buckets, CUDA graphs, pinned staging.

Pure parts (run and tested on the CPU):

* :func:`parse_device`, :func:`batch_buckets`, :func:`bucket_for`;
* :func:`calibration_inputs`, :func:`fp16_errors`, :func:`fp16_check` - the per-model fp16
  decision compares the outputs of one forward pass under fp16 autocast with fp32 on seeded
  inputs, see Note [fp16 decision]. The check takes the autocast device type, so the tests run
  it on the real models under the CPU's fp16 autocast (its fp16 kernels are not cuDNN's: the
  CPU numbers show the check works, not what a GPU will measure);
* :class:`BucketedRunner` - a batch of n rows runs through fixed buffers of the smallest bucket
  >= n (zero padding), and the first n output rows come back; on CUDA a bucket's step is a
  captured graph replay, on the CPU (tests) an eager forward over the same buffers. Models with
  a dynamic length (MiniLM's tokens) bucket the length too (Note [length buckets]);
* :func:`length_buckets_setting`, :func:`share_tensors`.

:class:`CudaRunner` puts them together on a GPU. Ran on an NVIDIA H100 (2026-11-26: its ``gpu``
tests pass for open_nsfw and YAMNet; 2026-11-27: MiniLM with length buckets); CI has no GPU, its
tests carry the ``gpu`` marker. The stream ordering and capture changes of 2026-11-28 (Note [graph
streams]) have not run on a GPU: CPU tests with fake torch.cuda pieces check them.

Note [length buckets]
    A graph with a dynamic length (MiniLM: ``batch`` x ``sequence`` tokens) converts to a module
    whose Shape -> Gather -> Reshape chains read sizes back from the device: a sync per Reshape,
    no CUDA graph, and on an H100 15 ms per call at any batch (64 texts/s at batch 1, slower
    than ONNX Runtime on the CPU; with the buckets below 1,123 texts/s, 8.6-15.8x the eager
    module up to 128 tokens, 1.7x at 64 x 256: bench/length_buckets_ab.py). With config.pbtxt
    ``parameters { key: "torch_length_buckets" value: { string_value: "16,32,64,128,256" } }``
    a call of n rows x L tokens runs in the
    (batch bucket >= n, length bucket >= L) step: the graph specialised to those sizes
    (:func:`engine.backends.onnx_static.specialize`: no Shape nodes left), converted, and
    captured. Inputs are zero-padded along every dynamic axis and the outputs' dynamic axes are
    cut back to L, which is sound when zeros mean padding: MiniLM's attention_mask 0 removes a
    token from attention (its exp underflows to exactly 0) and [PAD] is id 0. The specialised
    modules share their weights (:func:`share_tensors`), so each bucket costs a conversion
    (about 2 s on a CPU core; all 35 of MiniLM in 58 s on the H100's host) and its activations,
    not another copy of the weights. Lengths above the largest bucket run eagerly.

Note [graph streams]
    A runner's captured graphs share static input and output buffers and one memory pool, so
    their replays must never overlap, whatever stream each caller is on (torch: work on
    different streams runs in any order unless synchronised): every call's stream waits for
    the event recorded after the previous call, as the TensorRT backend does for its scratch
    memory. Captures take the runner's own stream on its own device: ``torch.cuda.graph``
    without ``stream=`` uses one side stream per process, made on the device current at the
    first capture, and a capture on a stream of another device records nothing (pytorch#87894:
    the "graph" then replays as a no-op, its outputs frozen). Only one capture may be underway
    in a process (torch's docs), and ``graph.__enter__`` synchronises the device: captures hold
    a process-wide lock. They run in ``thread_local`` capture mode, so that other threads'
    allocations (pinned staging, other models' first calls) during a capture neither fail nor
    invalidate it.

Note [fp16 decision]
    ``torch.autocast(float16)`` runs convolutions and matrix products in fp16 and keeps softmax,
    layer norm, exp/log and reductions in fp32 (autocast's own lists), much as the TensorRT
    fp16 graphs keep their fp32 islands. Whether a model tolerates it is measured at load:
    per output, ``max|y16 - y32| / max|y32|`` on :func:`calibration_inputs` (seeded N(0, 1)
    floats, 0/1 integers - valid token ids, masks and types for any vocabulary) must be at most
    :data:`FP16_TOLERANCE` (1e-2: fp16 rounds at 2**-11 ~ 4.9e-4 relative, and tens of layers
    of accumulation stay well inside 1e-2 for a model that does not overflow), and every fp16
    output must be finite. config.pbtxt ``parameters`` override it: ``torch_fp16`` = auto |
    true | false, ``torch_fp16_tolerance`` = a number.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from engine.backends.onnx_to_torch import host_sync_free
from engine.backends.tensorrt.tensors import torch_dtype
from engine.errors import InputError, ModelError

log = logging.getLogger(__name__)

FP16_TOLERANCE = 1e-2
FP16_CHOICES = ("auto", "true", "false")
LENGTH_BUCKETS_KEY = "torch_length_buckets"
_CAPTURE_LOCK = threading.Lock()  # one graph capture at a time in the process: Note [graph streams]


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("cpu", None); ``"cuda"`` / ``"cuda:N"`` -> ("cuda", N)."""
    if device == "cpu":
        return "cpu", None
    m = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if m is None:
        raise ModelError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return "cuda", int(m.group(1) or 0)


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes a CUDA graph is captured for: powers of two below max_batch_size, then
    max_batch_size (32 -> 1, 2, 4, 8, 16, 32; 48 -> 1, 2, 4, 8, 16, 32, 48). A batch of n rows
    pads to the smallest bucket >= n, so padding wastes less than half of a bucket."""
    if max_batch_size < 1:
        raise InputError(f"batch buckets need max_batch_size >= 1, got {max_batch_size}")
    out, b = [], 1
    while b < max_batch_size:
        out.append(b)
        b *= 2
    return tuple(out) + (max_batch_size,)


def bucket_for(rows: int, buckets: Sequence[int], what: str = "batch") -> int:
    """The smallest bucket that holds ``rows`` rows (or a length of ``rows``)."""
    for b in buckets:
        if rows <= b:
            return b
    raise InputError(f"{what} of {rows} exceeds the largest bucket {max(buckets)}")


def calibration_inputs(specs, max_batch_size: int, *, rows: int = 4, dynamic: int = 16,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for the fp16 check (Note [fp16 decision]); ``dynamic`` fills -1 dims."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        shape = tuple(dynamic if d == -1 else d for d in s.shape)
        if max_batch_size > 0:
            shape = (min(rows, max_batch_size),) + shape
        if s.dtype.kind == "f":
            out[s.name] = rng.standard_normal(shape).astype(s.dtype)
        elif s.dtype.kind in "iub":
            out[s.name] = rng.integers(0, 2, shape).astype(s.dtype)
        else:
            raise ModelError(f"input {s.name!r}: no calibration data for dtype {s.dtype}")
    return out


def fp16_errors(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> list[float]:
    """Per output: ``max|candidate - reference| / max|reference|``; inf where the candidate is
    not finite (fp16 overflow) or the shapes differ."""
    errors = []
    for ref, got in zip(reference, candidate, strict=True):
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        if ref.shape != got.shape or not np.isfinite(got).all():
            errors.append(float("inf"))
            continue
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        errors.append(diff / scale if scale > 0 else diff)
    return errors


def run_module(module, tensors: Sequence, output_index: Sequence[int], *, fp16: bool = False,
               device_type: str = "cpu") -> list:
    """One inference pass of a converted module; its outputs in config order (``output_index``).
    ``fp16`` runs it under ``torch.autocast(device_type, float16)`` (Note [fp16 decision]); the
    autocast weight-cast cache is off, as CUDA graph capture requires."""
    import torch

    with torch.inference_mode(), torch.autocast(device_type, torch.float16, enabled=fp16, cache_enabled=False):
        out = module(*tensors)
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    return [out[i] for i in output_index]


def fp16_check(module, tensors: Sequence, output_index: Sequence[int], *, device_type: str,
               tolerance: float = FP16_TOLERANCE) -> tuple[bool, list[float]]:
    """(passes, per-output errors) of fp16 autocast against fp32 on ``tensors``
    (Note [fp16 decision]). Runs on any device autocast supports: the CPU in the tests."""
    def host(outs):
        return [o.float().cpu().numpy() for o in outs]

    ref = host(run_module(module, tensors, output_index, device_type=device_type))
    got = host(run_module(module, tensors, output_index, fp16=True, device_type=device_type))
    errors = fp16_errors(ref, got)
    return all(e <= tolerance for e in errors), errors


def fp16_setting(entry) -> tuple[str, float]:
    """(torch_fp16, torch_fp16_tolerance) from config.pbtxt ``parameters``, validated."""
    from engine.errors import ConfigError

    path = entry.version_dir.parent / "config.pbtxt"
    mode = (entry.parameter("torch_fp16") or "auto").lower()
    if mode not in FP16_CHOICES:
        raise ConfigError(path, "parameters.torch_fp16", f"{mode!r} is not one of {', '.join(FP16_CHOICES)}")
    raw = entry.parameter("torch_fp16_tolerance") or str(FP16_TOLERANCE)
    try:
        tol = float(raw)
    except ValueError:
        tol = -1.0
    if not tol > 0:
        raise ConfigError(path, "parameters.torch_fp16_tolerance", f"expected a positive number, got {raw!r}")
    return mode, tol


def length_buckets_setting(entry) -> tuple[int, ...]:
    """config.pbtxt ``parameters.torch_length_buckets`` (Note [length buckets]): the sorted
    lengths, or () when unset."""
    from engine.errors import ConfigError

    raw = entry.parameter(LENGTH_BUCKETS_KEY)
    if raw is None:
        return ()
    try:
        lengths = sorted({int(v) for v in raw.split(",")})
    except ValueError:
        lengths = []
    if not lengths or lengths[0] < 1:
        raise ConfigError(entry.version_dir.parent / "config.pbtxt", f"parameters.{LENGTH_BUCKETS_KEY}",
                          f"expected comma-separated positive lengths, got {raw!r}")
    return tuple(lengths)


def share_tensors(module, pool: dict) -> list:
    """Put the tensors of ``pool`` in place of the equal parameters and buffers of ``module``
    (same kind, dtype, shape and bytes), so modules converted from one model's weights hold one
    copy of them. Returns ``(store, name, key)`` of the tensors not found, to be added to the
    pool by :func:`pool_tensors` once the module has moved to its device."""
    import torch

    missing = []
    for sub in module.modules():
        for kind, store in (("parameter", sub._parameters), ("buffer", sub._buffers)):
            for name, t in store.items():
                if t is None:
                    continue
                flat = torch.empty(t.numel(), dtype=t.dtype)  # dense, whatever t's strides (0 when expanded)
                data = flat.copy_(t.detach().reshape(-1)).view(torch.uint8).numpy()
                key = (kind, t.dtype, tuple(t.shape), hashlib.blake2b(data, digest_size=16).digest())
                if key in pool:
                    store[name] = pool[key]
                else:
                    missing.append((store, name, key))
    return missing


def pool_tensors(missing: list, pool: dict) -> None:
    """Add the tensors :func:`share_tensors` did not find (now moved) to ``pool``."""
    for store, name, key in missing:
        pool.setdefault(key, store[name])


@dataclass
class Step:
    """One bucket: fixed input buffers and the call that fills (and returns) the outputs."""

    inputs: list  # torch tensors [bucket, ...]
    run: Callable[[], list]


class BucketedRunner:
    """Runs batches through per-bucket fixed buffers: rows copied in, the padding zeroed, run,
    views of the valid part of the outputs returned (valid until the next call: callers copy
    them and serialise calls). A bucket is ``(batch,)``, or ``(batch, length)`` with ``lengths``
    (Note [length buckets]): then ``dynamic_in`` / ``dynamic_out`` name, per input / output, the
    axes (batch axis 0 counted) padded to the length bucket / cut back to the length.

    Padding is sound for models whose rows are independent (inference-mode batch norm, no
    cross-row ops): the same assumption Triton's dynamic batcher makes.
    """

    def __init__(self, make_step: Callable[[tuple[int, ...]], Step], buckets: Sequence[int],
                 lengths: Sequence[int] = (), dynamic_in: Sequence[Sequence[int]] = (),
                 dynamic_out: Sequence[Sequence[int]] = ()):
        self.buckets, self.lengths = tuple(buckets), tuple(lengths)
        self.dynamic_in, self.dynamic_out = [tuple(a) for a in dynamic_in], [tuple(a) for a in dynamic_out]
        self._make_step = make_step
        self.steps: dict[tuple[int, ...], Step] = {}

    def keys(self) -> list[tuple[int, ...]]:
        """Every bucket."""
        if self.lengths:
            return [(b, n) for b in self.buckets for n in self.lengths]
        return [(b,) for b in self.buckets]

    def key(self, tensors: Sequence) -> tuple[int, ...] | None:
        """The bucket of a call; None for a length above the largest bucket (run it eagerly)."""
        rows = bucket_for(int(tensors[0].shape[0]), self.buckets)
        if not self.lengths:
            return (rows,)
        length = self.length(tensors)
        return (rows, bucket_for(length, self.lengths, "length")) if length <= self.lengths[-1] else None

    def length(self, tensors: Sequence) -> int:
        sizes = {int(t.shape[a]) for t, axes in zip(tensors, self.dynamic_in, strict=True) for a in axes}
        if len(sizes) != 1:
            raise InputError(f"the inputs' dynamic dimensions differ: {sorted(sizes)} (one length expected)")
        return sizes.pop()

    def step(self, key: tuple[int, ...]) -> Step:
        s = self.steps.get(key)
        if s is None:
            s = self.steps[key] = self._make_step(key)
        return s

    def run(self, tensors: Sequence, key: tuple[int, ...] | None = None) -> list:
        """Run ``tensors`` in their bucket (``key``, when the caller has it from :meth:`key`)."""
        key = self.key(tensors) if key is None else key
        if key is None:
            raise InputError(f"length {self.length(tensors)} exceeds the largest bucket {self.lengths[-1]}")
        rows = int(tensors[0].shape[0])
        length = self.length(tensors) if self.lengths else 0
        step = self.step(key)
        for i, (buf, src) in enumerate(zip(step.inputs, tensors, strict=True)):
            axes = self.dynamic_in[i] if self.lengths else ()
            buf[_valid(buf.dim(), rows, axes, length)].copy_(src, non_blocking=True)
            buf[rows:].zero_()
            for a in axes:  # the padding tokens of the valid rows
                tail = [slice(0, rows)] + [slice(None)] * (buf.dim() - 1)
                tail[a] = slice(length, None)
                buf[tuple(tail)].zero_()
        return [out[_valid(out.dim(), rows, self.dynamic_out[i] if self.lengths else (), length)]
                for i, out in enumerate(step.run())]


def _dynamic_axes(specs) -> list[tuple[int, ...]]:
    """Per spec, the axes of its dynamic (-1) dimensions, counting the batch axis as 0."""
    return [tuple(a + 1 for a, d in enumerate(s.shape) if d == -1) for s in specs]


def _valid(ndim: int, rows: int, axes: Sequence[int], length: int) -> tuple:
    """The index of the first ``rows`` rows and, along ``axes``, the first ``length`` entries."""
    index = [slice(0, rows)] + [slice(None)] * (ndim - 1)
    for a in axes:
        index[a] = slice(0, length)
    return tuple(index)


class CudaRunner:
    """A converted module on one GPU: fp16 autocast where it passes the check, channels_last
    weights for conv models, CUDA graphs per batch bucket where the module captures (and per
    length bucket with ``specialise``, Note [length buckets]), pinned host staging for numpy
    inputs. Calls run on the caller's current stream, one at a time.

    Checked on an H100 for open_nsfw, YAMNet and MiniLM (see the module docstring; the stream
    ordering and captures of Note [graph streams] not yet).
    """

    def __init__(self, module, *, model: str, index: int, inputs, outputs, output_index: list[int],
                 max_batch_size: int, fp16: str = "auto", tolerance: float = FP16_TOLERANCE,
                 graphs: bool = True, length_buckets: Sequence[int] = (),
                 specialise: Callable[[int, int], object] | None = None):
        """``module`` (moved to the GPU, not copied) takes ``inputs`` positionally; config output
        k is module output ``output_index[k]``. A model with dynamic non-batch dimensions runs
        as CUDA graphs when ``length_buckets`` and ``specialise`` are given: ``specialise(batch,
        length)`` returns the module of the graph with those sizes fixed, on the CPU."""
        import torch

        if not torch.cuda.is_available():
            raise ModelError(f"{model}: device cuda:{index} requested but torch.cuda is not available")
        if index >= torch.cuda.device_count():
            raise ModelError(f"{model}: cuda:{index} does not exist ({torch.cuda.device_count()} GPU(s))")
        self.model, self.inputs, self.outputs = model, list(inputs), list(outputs)
        self.output_index = list(output_index)
        self.device = torch.device("cuda", index)
        self._lock = threading.Lock()
        self._pinned: dict = {}  # slot -> pinned buffer (_staging)
        self._out_dtypes = [torch_dtype(s.dtype) for s in self.outputs]
        self._buckets = batch_buckets(max_batch_size) if max_batch_size > 0 else ()

        dynamic = _dynamic_axes(self.inputs)
        self._specialise = specialise if max_batch_size > 0 and any(dynamic) and length_buckets else None
        if self._specialise is not None:
            capturable = graphs
            mode = "per batch x length bucket"
        else:
            example = [torch.from_numpy(a) for a in calibration_inputs(self.inputs, max_batch_size).values()]
            capturable = max_batch_size > 0 and not any(dynamic) and graphs and host_sync_free(module, example)
            mode = "per batch bucket"

        self.channels_last = any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
        self._weights: dict = {}  # shared by the specialised modules (share_tensors)
        self._checked_sync_free = False
        self.module = self._place(module)
        self.fp16 = self._decide_fp16(fp16, tolerance, max_batch_size)
        lengths = tuple(length_buckets) if self._specialise is not None else ()
        self.runner = BucketedRunner(
            self._capture, self._buckets, lengths, dynamic, _dynamic_axes(self.outputs)) if capturable else None
        self._pool = torch.cuda.graph_pool_handle() if capturable else None
        self._capture_stream = torch.cuda.Stream(self.device) if capturable else None
        self._last_call = None  # event after the previous call's work: Note [graph streams]
        log.info("%s on %s: fp16=%s channels_last=%s cuda_graphs=%s", model, self.device, self.fp16,
                 self.channels_last, mode if capturable else "off (dynamic shapes or host syncs)")

    def _place(self, module):
        """``module`` on the device (weights shared with the modules placed before), NHWC
        weights for a conv model."""
        import torch

        missing = share_tensors(module, self._weights)
        module = module.to(self.device)
        if self.channels_last:
            # cuDNN picks NHWC kernels when the weight is channels_last, whatever the input
            module = module.to(memory_format=torch.channels_last)
        pool_tensors(missing, self._weights)
        return module

    def _specialised(self, rows: int, length: int):
        """The module of the graph specialised to ``rows`` x ``length``, on the device."""
        module = self._specialise(rows, length)
        if not self._checked_sync_free:  # the same ops at every size: checked once (a copy: ~3 s)
            if not host_sync_free(module, self._zero_inputs(rows, length, "cpu")):
                raise ModelError(f"{self.model}: the graph specialised to {rows} x {length} still reads "
                                 "sizes on the host")
            self._checked_sync_free = True
        return self._place(module)

    def _zero_inputs(self, rows: int, length: int | None, device) -> list:
        """Zero inputs of a bucket: ``rows`` rows, ``length`` in the dynamic dimensions."""
        import torch

        return [torch.zeros((rows,) + tuple(length if d == -1 else d for d in s.shape), dtype=torch_dtype(s.dtype),
                            device=device) for s in self.inputs]

    # -- forward -----------------------------------------------------------------------------
    def forward(self, tensors: Sequence, module=None) -> list:
        """One eager pass on device tensors (of ``module``, else the model's own module);
        outputs in config order and config dtypes."""
        outs = run_module(self.module if module is None else module, tensors, self.output_index,
                          fp16=self.fp16, device_type="cuda")
        return [o.to(dt) for o, dt in zip(outs, self._out_dtypes)]

    def _decide_fp16(self, mode: str, tolerance: float, max_batch_size: int) -> bool:
        if mode != "auto":
            return mode == "true"
        import torch

        feed = [torch.from_numpy(a).to(self.device)
                for a in calibration_inputs(self.inputs, max_batch_size).values()]
        ok, errors = fp16_check(self.module, feed, self.output_index, device_type="cuda", tolerance=tolerance)
        log.info("%s: fp16 %s (relative error %s, tolerance %g)", self.model, "on" if ok else "off",
                 ", ".join(f"{s.name}={e:.2e}" for s, e in zip(self.outputs, errors)), tolerance)
        return ok

    # -- CUDA graphs ---------------------------------------------------------------------------
    def _capture(self, key: tuple[int, ...]) -> Step:
        import torch

        rows, length = key[0], (key[1] if len(key) > 1 else None)
        module = self.module if length is None else self._specialised(rows, length)
        static_in = self._zero_inputs(rows, length, self.device)
        side = self._capture_stream
        graph = torch.cuda.CUDAGraph()
        with _CAPTURE_LOCK:
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up passes allocate cuDNN workspaces outside the capture
                for _ in range(2):
                    self.forward(static_in, module)
            torch.cuda.current_stream(self.device).wait_stream(side)
            try:
                with torch.cuda.graph(graph, pool=self._pool, stream=side, capture_error_mode="thread_local"):
                    static_out = self.forward(static_in, module)
            except RuntimeError as e:
                raise ModelError(f"{self.model}: CUDA graph capture failed for bucket {key}: {e}") from None

        def replay() -> list:
            graph.replay()
            return static_out

        return Step(static_in, replay)

    def _run(self, tensors: Sequence, copy_out: bool) -> list:
        """Run device or pinned host tensors (graph buckets copy them into their buffers; the
        eager path moves them). Graph outputs are static buffers: copied when they leave (by
        the caller for ``copy_out=False``, on the same stream, before :meth:`_done`)."""
        import torch

        key = self.runner.key(tensors) if self.runner is not None else None
        if key is not None:
            current = torch.cuda.current_stream(self.device)
            if self._last_call is not None:  # the previous call may be on another stream
                current.wait_event(self._last_call)
            try:
                out = self.runner.run(tensors, key)
                return [o.clone() for o in out] if copy_out else out
            except ModelError as e:  # a capture failed: this model runs eagerly from now on
                log.warning("%s; running eagerly without CUDA graphs", e)
                self.runner = None
        return self.forward([t.to(self.device, non_blocking=True) for t in tensors])

    def _done(self) -> None:
        """Mark the end of a call's work on the current stream (Note [graph streams])."""
        import torch

        if self.runner is not None:
            self._last_call = torch.cuda.Event()
            self._last_call.record(torch.cuda.current_stream(self.device))

    def run_device(self, tensors: Sequence) -> list:
        """Device tensors in, device tensors out (no host round trip)."""
        import torch

        with self._lock, torch.cuda.device(self.device):
            out = self._run(tensors, copy_out=True)
            self._done()
            # the eager path's outputs come from inference mode, where a caller's in-place op
            # fails; the graph path's are clones already: both give ordinary tensors
            return [o.clone() if o.is_inference() else o for o in out]

    def run_host(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """numpy in, numpy out, through pinned staging buffers (asynchronous H2D/D2H copies)."""
        import torch

        with self._lock, torch.cuda.device(self.device):
            staged = []
            for i, a in enumerate(arrays):
                buf = self._staging(("in", i), a.shape, torch_dtype(a.dtype))
                buf.numpy()[...] = a
                staged.append(buf)
            outs = self._run(staged, copy_out=False)
            host = []
            for i, o in enumerate(outs):
                buf = self._staging(("out", i), tuple(o.shape), o.dtype)
                buf.copy_(o, non_blocking=True)
                host.append(buf)
            self._done()
            torch.cuda.current_stream(self.device).synchronize()  # the staging is reused next call
            return [b.numpy().copy() for b in host]

    def _staging(self, slot, shape: tuple[int, ...], dtype):
        """A contiguous pinned host tensor of ``shape``: a view of one buffer per slot, grown to
        the next power of two of elements when too small (pinning memory is slow: calls of any
        batch size and length reuse it)."""
        import torch

        n = math.prod(shape)
        buf = self._pinned.get(slot)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = self._pinned[slot] = torch.empty(1 << max(n - 1, 0).bit_length(), dtype=dtype, pin_memory=True)
        return buf[:n].view(shape)

    def warmup(self) -> None:
        """Capture every bucket's graph now rather than on first use (with length buckets, also
        specialise and convert the graph per bucket: about 2 s each on a CPU core)."""
        import torch

        if self.runner is None:
            return
        with self._lock, torch.cuda.device(self.device):
            for key in self.runner.keys():
                try:
                    self.runner.step(key)
                except ModelError as e:
                    log.warning("%s; running eagerly without CUDA graphs", e)
                    self.runner = None
                    return
