"""GPU measurement shared by the bench suites: is there a GPU, CUDA-event timing, bandwidth against
device-to-device copies measured in the same run (one of the same bytes, one far beyond the L2),
and the GPU backends and Sessions to time.

The arithmetic (bytes moved, GB/s, fraction of copy, the preprocessing footprint) is plain Python
so that ``tests/test_bench_gpu.py`` checks it on a CPU; everything that touches CUDA imports torch
lazily and runs only after :func:`unavailable` returned None.

Ran on an NVIDIA H100 (2026-11-26, bench/baselines/h100/). The event timing queues a sleep
kernel before each timed call, so the host's enqueueing stays off the clock, with one sample per
interleaved round.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from functools import lru_cache

# ~0.5 ms of GPU spinning at H100 clocks: longer than the host needs to enqueue one timed call
SLEEP_CYCLES = 1_000_000
DEVICE = "cuda:0"
# bytes read + written by the DRAM copy: 512 MiB each way, ten times an H100's 50 MB of L2
DRAM_COPY_BYTES = 1 << 30


def unavailable() -> str | None:
    """Why GPU rows cannot be measured here, or None when a CUDA device is usable."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def skip_note(what: str, reason: str) -> str:
    """The one note a suite records instead of GPU figures (no placeholder numbers)."""
    return f"GPU rows skipped ({what}): {reason}"


# ---------------------------------------------------------------------------------- arithmetic
def copy_bytes(traffic: int) -> int:
    """Bytes a device copy of ``traffic // 2`` bytes moves (it reads them and writes them): the
    same traffic as the op, within one byte."""
    return 2 * (traffic // 2)


def bandwidth(seconds: list[float], traffic: float) -> list[float]:
    """GB/s samples (1e9 bytes) of ``traffic`` bytes moved per call."""
    return [traffic / s / 1e9 for s in seconds]


def offset(resized: int, out: int) -> int:
    """Centre-crop offset of ``out`` samples in ``resized`` (csrc Note [resize geometry]):
    torchvision's round half even; negative when the resized side is padded."""
    return int(round((resized - out) / 2.0)) if resized >= out else -((out - resized) // 2)


def resized_geometry(spec, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((resized_h, offset_y), (resized_w, offset_x)) for ``stretch`` / ``shorter``; None for
    ``letterbox`` (which reads the whole frame)."""
    to = spec.resize_to if spec.resize_to is not None else spec.size
    if spec.resize == "stretch":
        rh, rw = to
    elif spec.resize == "shorter":
        s = to[0]
        rh, rw = (s, s * w // h) if h <= w else (s * h // w, s)
    else:
        return None
    return (rh, offset(rh, spec.size[0])), (rw, offset(rw, spec.size[1]))


def source_span(filt: str, size: int, resized: int, out: int, off: int) -> int:
    """Source samples along one axis that the taps of outputs ``off .. off + out - 1`` reach:
    the first output's lowest tap to the last output's highest, with the kernels' tap bounds
    (tests/test_bench_gpu.py checks it against the nonzero span of tests/kernels/reference.py's
    resampling matrices)."""
    scale = size / resized
    first, last = max(off, 0), min(off + out, resized) - 1
    c0, c1 = scale * (first + 0.5), scale * (last + 0.5)  # centres in source coordinates
    if filt == "antialias":
        support = max(scale, 1.0)
        lo, hi = int(c0 - support + 0.5), int(c1 + support + 0.5)
    else:  # half-pixel bilinear: two taps from floor(centre - 0.5)
        lo, hi = int(max(c0 - 0.5, 0.0)), int(max(c1 - 0.5, 0.0)) + 2
    return min(hi, size) - max(lo, 0)


def footprint_bytes(spec, h: int, w: int, batch: int) -> int:
    """Bytes of an I420 batch the preprocessing must read: the luma rectangle its taps reach, and
    the chroma planes' quarter of it. A crop reads less than the frame (1080p -> shorter 256 ->
    crop 224 reads ~945 of 1080 rows and ~950 of 1920 columns)."""
    geo = resized_geometry(spec, h, w)
    if geo is None:
        ny, nx = h, w
    else:
        (rh, oy), (rw, ox) = geo
        ny = source_span(spec.filter, h, rh, spec.size[0], oy)
        nx = source_span(spec.filter, w, rw, spec.size[1], ox)
    return int(batch * ny * nx * 1.5)  # Y + U + V (4:2:0)


def preprocess_traffic(spec, h: int, w: int, batch: int) -> int:
    """Bytes read plus bytes written by one preprocessing call."""
    item = 2 if spec.dtype == "float16" else 4
    c, oh, ow = 3, *spec.size
    return footprint_bytes(spec, h, w, batch) + batch * c * oh * ow * item


# ---------------------------------------------------------------------------------- timing
def measure_events(paths: Mapping[str, Callable[[], object]], *, repeats: int, calls: int,
                   warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each path on the GPU, ``repeats`` samples each, rounds interleaved as
    :func:`bench.timing.measure` does.

    A sample is the mean, over ``calls`` calls, of the time between a CUDA event recorded just
    before the call and one just after. A ``torch.cuda._sleep`` kernel queued ahead of each call
    keeps the GPU busy while the host enqueues it, so launch overhead stays off the clock (a path
    whose host work outlasts the sleep - a pageable copy, a synchronising call - is timed with it,
    as its caller would wait for it). ``warmup`` untimed calls per path first (Triton compiles on
    its first call, CUDA graphs are captured, the allocator caches its blocks).
    """
    import torch

    if repeats < 1 or calls < 1:
        raise ValueError("repeats and calls must be >= 1")
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths.items())
    for r in range(repeats):
        # each round starts one path later, so no path always follows the same one (a path right
        # after a long one finds the clocks, the L2 and the allocator in that path's state)
        for name, fn in order[r % len(order):] + order[:r % len(order)]:
            pairs = []
            for _ in range(calls):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(SLEEP_CYCLES)
                start.record()
                fn()
                end.record()
                pairs.append((start, end))
            torch.cuda.synchronize()  # every event completed: elapsed_time is defined
            samples[name].append(sum(s.elapsed_time(e) for s, e in pairs) / 1e3 / calls)  # ms -> s
    return samples


def copy_path(traffic: int) -> tuple[Callable[[], object], int]:
    """(a device-to-device copy moving ``traffic`` bytes, the bytes it moves)."""
    import torch

    n = max(traffic // 2, 1)
    src = torch.empty(n, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * n


def dram_copy_path() -> tuple[Callable[[], object], int]:
    """(a device-to-device copy of :data:`DRAM_COPY_BYTES`, the bytes it moves): the card's
    sustained copy bandwidth, out of reach of the L2 and of the fixed cost of a call, which a
    copy of a small case's bytes carries (the same-size copy of :func:`copy_path` keeps both,
    as the kernel it is compared with does). Its buffers are made once per device and size."""
    return _dram_copy(DEVICE, DRAM_COPY_BYTES)


@lru_cache(maxsize=1)
def _dram_copy(device: str, nbytes: int) -> tuple[Callable[[], object], int]:
    return copy_path(nbytes)


def synchronized(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` followed by a device synchronisation, for paths timed by wall clock
    (:func:`bench.timing.measure`) whose work is queued asynchronously."""
    import torch

    def call():
        result = fn()
        torch.cuda.synchronize()
        return result

    return call


# ---------------------------------------------------------------------------------- what runs
def kernel_modules() -> tuple[dict, list[str]]:
    """({"cuda": engine.ops.cuda, "triton": engine.kernels} as far as each imports, notes on
    the missing ones)."""
    import engine.ops.cuda as cuda_ops

    found, notes = {}, []
    if cuda_ops.available():
        found["cuda"] = cuda_ops
    else:
        notes.append("GPU rows of kernel_impl='cuda' skipped: engine._C_cuda is not built")
    try:
        import engine.kernels as triton_ops  # exists through an install's package mapping only
    except ImportError as e:
        notes.append(f"GPU rows of kernel_impl='triton' skipped: engine.kernels does not import ({e})")
    else:
        found["triton"] = triton_ops
    return found, notes


def model_backend(entry, notes: list[str]) -> dict:
    """{"torch-cuda": the torch backend on the GPU} for an ONNX model (empty, with a note, when it
    fails to load: a finding to report, not a crashed run)."""
    from engine.backends import load_backend

    if entry.config.backend == "sklearn":
        return {}  # a CPU model in every Session
    try:
        return {"torch-cuda": load_backend(entry, device=DEVICE, backend="torch")}
    except Exception as e:  # noqa: BLE001
        notes.append(f"{entry.name}: torch CUDA backend failed to load ({type(e).__name__}: {e})")
        return {}


def device_feed(feed: Mapping[str, object]) -> dict:
    """The numpy batch as CUDA tensors (what the device pipeline hands the backend)."""
    import torch

    return {k: torch.from_numpy(v).to(DEVICE) for k, v in feed.items()}


def sessions(repo_path, notes: list[str]) -> dict:
    """{"session-gpu-<impl>": Session(device="cuda:0", kernel_impl=impl), warmed up} for each
    kernel implementation that loads, and "session-gpu-cuda-nvdec" (NVDEC decoding) where
    PyNvVideoCodec imports."""
    from engine import Session

    from engine.device import nvdec_import_error

    found = {}
    variants = [("cuda", "cpu"), ("triton", "cpu")]
    reason = nvdec_import_error()
    if reason is None:  # NVDEC decoding too (not the Session default yet: engine/media/nvdec.py)
        variants.append(("cuda", "nvdec"))
    else:
        notes.append(f"no NVDEC Session row: PyNvVideoCodec {reason}")
    for impl, decoder in variants:
        s = None
        try:
            s = Session(repo_path, device=DEVICE, kernel_impl=impl, video_decoder=decoder)
            s.warmup()
        except Exception as e:  # noqa: BLE001 - e.g. engine.kernels missing for "triton"
            if s is not None:
                s.close()
            notes.append(f"Session(device={DEVICE!r}, kernel_impl={impl!r}, video_decoder={decoder!r}) "
                         f"failed ({type(e).__name__}: {e})")
            continue
        found[f"session-gpu-{impl}" + ("-nvdec" if decoder == "nvdec" else "")] = s
    return found
