"""Kernels suite: the native ops against the code a user would otherwise write, same run.

The comparisons run on one thread on both sides (engine ``threads=1``, OpenCV and numpy's BLAS
limited to one thread): a kernel using both cores against a one-core baseline gives a ratio that
follows how much of the second core the machine's other work left free, which changes between runs.
The stage throughput (``bench plan``'s per-machine figure) is measured on all cores beside them,
as ``<path>_<N>t``.

* preprocess: I420 frames -> shorter side 256 -> centre crop 224 -> ImageNet NCHW float32;
  ``fused`` (engine.ops.preprocess, one call per batch) vs ``naive`` (PyAV rgb24 + cv2
  INTER_LINEAR + numpy) vs ``opencv`` (cv2 colour + INTER_AREA + blobFromImage) vs ``torch``
  (cv2 colour + torch CPU ``interpolate(antialias=True)``, when torch imports), the paths of
  ``bench/preprocess.py``, at 480p / 720p / 1080p (and 4K in a full run) and several batch sizes.
* pooling: engine.ops.masked_mean vs numpy einsum; engine.ops.segment_pool (mean) vs
  numpy ``add.reduceat``.
* log-mel: engine.ops.log_mel vs a float32 numpy STFT (sliding windows, rfft, the same filterbank);
  plus yamnet_patches, the audio front end stage as the pipeline runs it.
* on a GPU: the engine's CUDA and Triton kernels against torch CUDA ops, items/s and bandwidth as a
  fraction of a same-run device copy (``kernels/gpu/...``, :mod:`bench.gpu_kernels`); without one,
  a single note says the GPU rows were skipped.
"""

from __future__ import annotations

import numpy as np

import contextlib

from bench import gpu_kernels
from bench.results import Figure, ratio_figure
from bench.suites import RunConfig, SuiteResult, Tick
from bench.timing import measure, rates

SUITE = "kernels"
RESOLUTIONS = {"480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
AUDIO_SECONDS = 10.0
SAMPLE_RATE = 16000


def _resolutions(cfg: RunConfig) -> list[str]:
    return ["480p", "720p", "1080p"] if cfg.quick else list(RESOLUTIONS)


def _batches(cfg: RunConfig) -> list[int]:
    return [1, 8] if cfg.quick else [1, 8, 32]


def _gpu_resolutions(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    return {r: RESOLUTIONS[r] for r in _resolutions(cfg)}


def steps(cfg: RunConfig) -> int:
    cpu = len(_resolutions(cfg)) * len(_batches(cfg)) + 2  # + pooling + audio
    return cpu + gpu_kernels.steps(cfg, _gpu_resolutions(cfg))


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def one_thread_libraries():
    """OpenCV, numpy's BLAS and torch on one thread (restored afterwards); the engine takes
    ``threads``. Libraries that are not installed (a bare GPU image) are left out."""
    try:
        import cv2
    except ModuleNotFoundError:
        cv2 = None
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:
        threadpool_limits = None

    torch = _torch()
    before = cv2.getNumThreads() if cv2 else None, torch.get_num_threads() if torch else None
    if cv2:
        cv2.setNumThreads(1)
    if torch:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext():
            yield
    finally:
        if cv2:
            cv2.setNumThreads(before[0])
        if torch:
            torch.set_num_threads(before[1])


def all_cores(name: str, cfg: RunConfig) -> str:
    return f"{name}_{cfg.threads}t"


def _throughput(name: str, unit: str, seconds: list[float], items: float, params: dict, **kw) -> Figure:
    return Figure(name=name, suite=SUITE, unit=unit, better="higher", samples=rates(seconds, items),
                  params=params, **kw)


def preprocess_part(cfg: RunConfig, tick: Tick, out: SuiteResult) -> None:
    import av
    import cv2

    from bench import preprocess as pp
    from engine.ops import preprocess

    spec = pp.preprocess_spec()
    for res in _resolutions(cfg):
        h, w = RESOLUTIONS[res]
        frames, i420s = pp.make_frames(max(_batches(cfg)), "synthetic", h, w)
        vframes = [av.VideoFrame.from_ndarray(b, format="yuv420p") for b in i420s]
        for batch in _batches(cfg):
            buf = np.empty(spec.output_shape(batch), np.float32)
            fr, i4, vf = frames[:batch], i420s[:batch], vframes[:batch]
            paths = {
                "fused": lambda fr=fr, buf=buf: preprocess(fr, spec, out=buf, threads=1),
                "naive": lambda vf=vf: pp.run_naive(vf),
                "opencv": lambda i4=i4: pp.run_opencv(i4),
                all_cores("fused", cfg): lambda fr=fr, buf=buf: preprocess(fr, spec, out=buf, threads=cfg.threads),
            }
            if _torch():
                paths["torch"] = lambda i4=i4: pp.run_torch(i4)
            seconds = measure(paths, repeats=cfg.repeats, min_time=cfg.min_time)
            params = {"resolution": res, "height": h, "width": w, "batch": batch,
                      "output": "224x224 NCHW float32", "clamp": spec.clamp}
            base = f"{SUITE}/preprocess/{res}/b{batch}"
            stage = {"stage": "preprocess", "items_per_call": batch}
            figs = {p: _throughput(f"{base}/{p}", "frames/s", s, batch,
                                   {**params, "path": p, "threads": cfg.threads if p.endswith("t") else 1},
                                   **(stage if p == all_cores("fused", cfg) else {}))
                    for p, s in seconds.items()}
            out.figures += figs.values()
            out.figures.append(ratio_figure(f"{base}/fused÷naive", SUITE, figs["fused"], figs["naive"], params))
            out.figures.append(ratio_figure(f"{base}/fused÷opencv", SUITE, figs["fused"], figs["opencv"], params))
            if "torch" in figs:
                out.figures.append(ratio_figure(f"{base}/fused÷torch", SUITE, figs["fused"], figs["torch"], params))
            tick(f"preprocess {res} batch {batch}")


def numpy_masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.einsum("btd,bt->bd", x, mask) / np.maximum(mask.sum(1), 1e-9)[:, None]


def numpy_segment_mean(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    sums = np.add.reduceat(x, offsets[:-1], axis=0)  # segments are non-empty here
    return sums / np.diff(offsets)[:, None]


def pooling_part(cfg: RunConfig, tick: Tick, out: SuiteResult) -> None:
    from engine.ops import masked_mean, segment_pool

    rng = np.random.default_rng(0)
    b, t, d = 32, 128, 384  # MiniLM: a batch of 32 texts, 128 tokens, 384 dims
    x = rng.standard_normal((b, t, d), dtype=np.float32)
    mask = (np.arange(t)[None, :] < rng.integers(8, t, b)[:, None]).astype(np.float32)
    n_seg, seg_len = 64, 30      # 64 videos of 30 frame embeddings of 2048 dims (ResNet-50)
    frames = rng.standard_normal((n_seg * seg_len, 2048), dtype=np.float32)
    offsets = np.arange(0, n_seg * seg_len + 1, seg_len)
    groups = {
        "masked_mean": ({"engine": lambda: masked_mean(x, mask, threads=1),
                         "numpy": lambda: numpy_masked_mean(x, mask)}, b, f"[{b},{t},{d}]"),
        "segment_mean": ({"engine": lambda: segment_pool(frames, offsets, "mean", threads=1),
                          "numpy": lambda: numpy_segment_mean(frames, offsets)}, n_seg,
                         f"{n_seg} segments x {seg_len} rows x 2048"),
    }
    for op, (paths, rows, shape) in groups.items():
        seconds = measure(paths, repeats=cfg.repeats, min_time=cfg.min_time)
        params = {"op": op, "shape": shape, "threads": 1}
        figs = {p: _throughput(f"{SUITE}/pooling/{op}/{p}", "rows/s", s, rows, {**params, "path": p})
                for p, s in seconds.items()}
        out.figures += figs.values()
        out.figures.append(ratio_figure(f"{SUITE}/pooling/{op}/engine÷numpy", SUITE, figs["engine"],
                                        figs["numpy"], params))
    tick("pooling")


def numpy_log_mel(w: np.ndarray, fb: np.ndarray, window: np.ndarray, n_fft: int = 512, hop: int = 160):
    frames = np.lib.stride_tricks.sliding_window_view(w, n_fft)[::hop]
    return np.log(np.abs(np.fft.rfft(frames * window, axis=1)).astype(np.float32) @ fb + 1e-6)


def padded_hann(win: int = 400, n_fft: int = 512) -> np.ndarray:
    """torch hann_window(win, periodic=True) zero-padded centred in n_fft (torch.stft's layout)."""
    out = np.zeros(n_fft, np.float32)
    left = (n_fft - win) // 2
    out[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    return out


def audio_part(cfg: RunConfig, tick: Tick, out: SuiteResult) -> None:
    from engine.ops import log_mel, mel_filterbank, yamnet_patches

    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(int(AUDIO_SECONDS * SAMPLE_RATE))).astype(np.float32)
    fb, window = mel_filterbank(), padded_hann()
    paths = {"engine": lambda: log_mel(wave, threads=1),
             "numpy": lambda: numpy_log_mel(wave, fb, window),
             "patches": lambda: yamnet_patches(wave, threads=cfg.threads)}
    seconds = measure(paths, repeats=cfg.repeats, min_time=cfg.min_time)
    params = {"audio_seconds": AUDIO_SECONDS, "sample_rate": SAMPLE_RATE, "threads": 1}
    eng = _throughput(f"{SUITE}/log_mel/engine", "audio-s/s", seconds["engine"], AUDIO_SECONDS, params)
    npy = _throughput(f"{SUITE}/log_mel/numpy", "audio-s/s", seconds["numpy"], AUDIO_SECONDS, params)
    patches = _throughput(f"{SUITE}/yamnet_patches/{all_cores('engine', cfg)}", "audio-s/s", seconds["patches"],
                          AUDIO_SECONDS, {**params, "threads": cfg.threads}, stage="audio_frontend",
                          items_per_call=AUDIO_SECONDS)
    out.figures += [eng, npy, patches, ratio_figure(f"{SUITE}/log_mel/engine÷numpy", SUITE, eng, npy, params)]
    tick("log-mel")


def run(cfg: RunConfig, tick: Tick) -> SuiteResult:
    out = SuiteResult()
    with one_thread_libraries():
        for part in (preprocess_part, pooling_part, audio_part):
            try:
                part(cfg, tick, out)
            except ModuleNotFoundError as e:  # a bare GPU image: its GPU rows still run below
                out.notes.append(f"{part.__name__} skipped: {e.name} is not installed")
    gpu_kernels.part(cfg, tick, out, _gpu_resolutions(cfg))  # outside: it times the GPU, not CPU libraries
    if cfg.quick:
        out.notes.append("quick: no 4K, batches 1 and 8")
    return out
