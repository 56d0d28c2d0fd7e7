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
  captured graph replay, on the CPU (tests) an eager forward over the same buffers.

:class:`CudaRunner` puts them together on a GPU. Ran once on an NVIDIA H100 (2026-11-26:
its ``gpu`` tests pass for open_nsfw and YAMNet; MiniLM was not carried to that machine); CI has
no GPU, its tests carry the ``gpu`` marker.

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

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from engine.backends.tensorrt.tensors import torch_dtype
from engine.errors import InputError, ModelError

log = logging.getLogger(__name__)

FP16_TOLERANCE = 1e-2
FP16_CHOICES = ("auto", "true", "false")
_PINNED_CACHE = 16  # staging buffers kept per backend (shapes vary for dynamic models)


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


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``rows`` rows."""
    for b in buckets:
        if rows <= b:
            return b
    raise InputError(f"batch of {rows} rows exceeds the largest bucket {max(buckets)}")


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


@dataclass
class Step:
    """One bucket: fixed input buffers and the call that fills (and returns) the outputs."""

    inputs: list  # torch tensors [bucket, ...]
    run: Callable[[], list]


class BucketedRunner:
    """Runs batches through per-bucket fixed buffers: copy rows in, zero the padding rows, run,
    return views of the first n output rows (valid until the next call: callers copy them and
    serialise calls).

    Padding is sound for models whose rows are independent (inference-mode batch norm, no
    cross-row ops): the same assumption Triton's dynamic batcher makes.
    """

    def __init__(self, make_step: Callable[[int], Step], buckets: Sequence[int]):
        self.buckets = tuple(buckets)
        self._make_step = make_step
        self.steps: dict[int, Step] = {}

    def step(self, bucket: int) -> Step:
        s = self.steps.get(bucket)
        if s is None:
            s = self.steps[bucket] = self._make_step(bucket)
        return s

    def run(self, tensors: Sequence) -> list:
        rows = int(tensors[0].shape[0])
        step = self.step(bucket_for(rows, self.buckets))
        for buf, src in zip(step.inputs, tensors, strict=True):
            buf[:rows].copy_(src, non_blocking=True)
            buf[rows:].zero_()
        return [out[:rows] for out in step.run()]


class CudaRunner:
    """A converted module on one GPU: fp16 autocast where it passes the check, channels_last
    weights for conv models, CUDA graphs per batch bucket where the module captures, pinned
    host staging for numpy inputs. Calls run on the caller's current stream, one at a time.

    Checked on an H100 for open_nsfw and YAMNet only (see the module docstring).
    """

    def __init__(self, module, *, model: str, index: int, inputs, outputs, output_index: list[int],
                 max_batch_size: int, fp16: str = "auto", tolerance: float = FP16_TOLERANCE,
                 graphs: bool = True):
        """``module`` (moved to the GPU, not copied) takes ``inputs`` positionally; config output
        k is module output ``output_index[k]``."""
        import torch

        from engine.backends.onnx_to_torch import host_sync_free

        if not torch.cuda.is_available():
            raise ModelError(f"{model}: device cuda:{index} requested but torch.cuda is not available")
        if index >= torch.cuda.device_count():
            raise ModelError(f"{model}: cuda:{index} does not exist ({torch.cuda.device_count()} GPU(s))")
        self.model, self.inputs, self.outputs = model, list(inputs), list(outputs)
        self.output_index = list(output_index)
        self.device = torch.device("cuda", index)
        self._lock = threading.Lock()
        self._pinned: OrderedDict = OrderedDict()
        self._out_dtypes = [torch_dtype(s.dtype) for s in self.outputs]
        self._buckets = batch_buckets(max_batch_size) if max_batch_size > 0 else ()

        static = max_batch_size > 0 and all(d != -1 for s in self.inputs for d in s.shape)
        example = [torch.from_numpy(a) for a in calibration_inputs(self.inputs, max_batch_size).values()]
        capturable = static and graphs and host_sync_free(module, example)

        self.channels_last = any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
        module = module.to(self.device)
        if self.channels_last:
            # cuDNN picks NHWC kernels when the weight is channels_last, whatever the input
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.fp16 = self._decide_fp16(fp16, tolerance, max_batch_size)
        self.runner = BucketedRunner(self._capture, self._buckets) if capturable else None
        self._pool = torch.cuda.graph_pool_handle() if capturable else None
        log.info("%s on %s: fp16=%s channels_last=%s cuda_graphs=%s", model, self.device, self.fp16,
                 self.channels_last, "per bucket" if capturable else "off (dynamic shapes or host syncs)")

    # -- forward -----------------------------------------------------------------------------
    def forward(self, tensors: Sequence) -> list:
        """One eager pass on device tensors; outputs in config order and config dtypes."""
        outs = run_module(self.module, tensors, self.output_index, fp16=self.fp16, device_type="cuda")
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
    def _capture(self, bucket: int) -> Step:
        import torch

        static_in = [torch.zeros((bucket,) + s.shape, dtype=torch_dtype(s.dtype), device=self.device)
                     for s in self.inputs]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up passes allocate cuDNN workspaces outside the capture
            for _ in range(2):
                self.forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self.forward(static_in)
        except RuntimeError as e:
            raise ModelError(f"{self.model}: CUDA graph capture failed for batch {bucket}: {e}") from None

        def replay() -> list:
            graph.replay()
            return static_out

        return Step(static_in, replay)

    def _run(self, tensors: Sequence, copy_out: bool) -> list:
        """Run device or pinned host tensors (graph buckets copy them into their buffers; the
        eager path moves them). Graph outputs are static buffers: copied when they leave."""
        if self.runner is not None:
            try:
                out = self.runner.run(tensors)
                return [o.clone() for o in out] if copy_out else out
            except ModelError as e:  # a capture failed: this model runs eagerly from now on
                log.warning("%s; running eagerly without CUDA graphs", e)
                self.runner = None
        return self.forward([t.to(self.device, non_blocking=True) for t in tensors])

    def run_device(self, tensors: Sequence) -> list:
        """Device tensors in, device tensors out (no host round trip)."""
        import torch

        with self._lock, torch.cuda.device(self.device):
            return self._run(tensors, copy_out=True)

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
            torch.cuda.current_stream(self.device).synchronize()  # the staging is reused next call
            return [b.numpy().copy() for b in host]

    def _staging(self, slot, shape: tuple[int, ...], dtype):
        """A pinned host view of ``shape``. Buffers hold a whole bucket of rows (so varying batch
        sizes reuse a few allocations: pinning memory is slow) and are kept least recently
        used first, at most _PINNED_CACHE (dynamic dims give each length its own buffer)."""
        import torch

        rows = shape[0] if self._buckets else None
        full = ((bucket_for(rows, self._buckets),) + tuple(shape[1:])) if rows is not None else tuple(shape)
        key = (slot, full, dtype)
        buf = self._pinned.pop(key, None)
        if buf is None:
            buf = torch.empty(full, dtype=dtype, pin_memory=True)
        self._pinned[key] = buf  # most recently used last
        while len(self._pinned) > _PINNED_CACHE:
            self._pinned.popitem(last=False)
        return buf[:rows] if rows is not None else buf

    def warmup(self) -> None:
        """Capture every bucket's graph now rather than on first use."""
        import torch

        if self.runner is None:
            return
        with self._lock, torch.cuda.device(self.device):
            for b in self.runner.buckets:
                try:
                    self.runner.step(b)
                except ModelError as e:
                    log.warning("%s; running eagerly without CUDA graphs", e)
                    self.runner = None
                    return
