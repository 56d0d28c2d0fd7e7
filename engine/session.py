"""``engine.Session``: the public entry point that moderates video, images, audio and text."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import media, serving
from .media.loudness import integrated_loudness, is_quiet, raise_gain_db
from .metrics import ItemLabel, SessionMetrics, counted, label_current_item, modality_label
from .backends import Backend, load_backend
from .backends.tensorrt.memory import is_tensor_input
from .batching import BatchingPolicy, Scheduler
from .errors import (CorruptMediaError, EngineError, InputError, MediaError, MediaLimitError,
                     ModelError)
from .ops.audio import CHUNK_SAMPLES, SAMPLE_RATE, yamnet_patches
from .ops.pooling import masked_mean
from .ops.preprocess import PreprocessSpec, preprocess
from .device import resolve_placement
from .device_pipeline import DevicePipeline, HandedOver
from .pipeline import Pipeline, PolicyConfig, load_pipeline
from .policies import resolve_classes, score_texts, score_timed
from .repo import ModelRepository
from .text import Tokenizer, normalise_text
from .disguises import UNMASK_MIN, mask_fits
from .text_units import TextUnits, batches_of_like_length
from .verdict import Outcome, PolicyResult, Verdict

MODALITIES = ("video", "image", "audio", "text")
TEXT_BATCH = 64  # texts embedded per model call at most (batches_of_like_length)
MAX_UNMASKED = 4096  # masked words whose readings a Session remembers (_unmask)
MASKED_PER_ITEM = 8  # new masked words an item may look up (_unmasker)

log = logging.getLogger(__name__)


class _Routed(NamedTuple):
    """What :meth:`Session._route` found to judge in one item."""

    video: Any
    image: Any
    audio: Any
    skipped_audio: str | None  # the codec of a video's sound track that cannot be decoded
    cover: Any                 # the video or sound file holding a cover picture (album art, thumbnail)
    subtitled: Any             # the video, when it has text subtitles and there are text policies
    audio_tracks: int          # sound tracks of ``audio`` (1 when it was not probed)


def _with_evidence(r: PolicyResult, **changes: Any) -> PolicyResult:
    """``r`` with its evidence's fields changed."""
    return dataclasses.replace(r, evidence=dataclasses.replace(r.evidence, **changes))


def _from_unit(r: PolicyResult, units: TextUnits, won: list) -> PolicyResult:
    """A text policy's result with its evidence naming the segment and reading that gave it."""
    u = won[r.evidence.index]
    return _with_evidence(r, span=u.span, excerpt=units.excerpt(u), read_as=u.read_as)


def _is_samples(x: Any) -> bool:
    """Sound given as samples (engine.media.audio_from_array): an ``(n,)`` or ``(n, channels)``
    array at 16 kHz, or ``(array, sample_rate)``. Pictures are ``(H, W, 3 or 4)`` arrays."""
    if isinstance(x, tuple):
        return len(x) == 2 and isinstance(x[0], np.ndarray)
    return isinstance(x, np.ndarray) and (x.ndim == 1 or (x.ndim == 2 and x.shape[1] <= 8 < x.shape[0]))


def _keep_stronger(scores: dict[str, PolicyResult], more: dict[str, PolicyResult]) -> None:
    """Merge ``more`` into ``scores``, each policy keeping the result with the higher score."""
    for name, r in more.items():
        if name not in scores or r.score > scores[name].score:
            scores[name] = r


class Session:
    """Moderates media with the models and policies of one model repository.

    Parameters
    ----------
    repo:
        Model repository in Triton layout with a ``pipeline.toml`` (default ``./model_repo``).
    device:
        ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``. Each model runs on the backend the
        pipeline names for it (``backend`` in its section; ``auto``: ONNX Runtime on the CPU,
        TensorRT or torch on CUDA). On CUDA the vision and audio stages after decoding run on the
        GPU (:mod:`engine.device_pipeline`).
    threads:
        Intra-op threads per model and for the native kernels (None: library default).
    kernel_impl:
        The device pipeline's kernels: ``"cuda"`` (:mod:`engine.ops.cuda`) or ``"triton"``
        (:mod:`engine.kernels`); None on CUDA picks ``"cuda"`` when ``engine._C_cuda`` is built
        (the faster one on an H100 in ``bench/baselines/h100``). On the CPU, None is the plain
        CPU pipeline and ``"triton"`` runs the device pipeline on CPU tensors under the Triton
        interpreter (needs ``TRITON_INTERPRET=1``; slow, for tests). See :mod:`engine.device`.
    video_decoder:
        Who decodes video for the device pipeline: ``"cpu"`` (the default: for the 1 fps
        sampling it was the faster one on an H100), ``"auto"`` (NVDEC on a GPU when
        PyNvVideoCodec imports, else the CPU) or ``"nvdec"`` (DeviceUnavailableError when
        PyNvVideoCodec does not import). NVDEC hands NV12 planes on the device to the fused
        kernel; streams it cannot take (codec, 10-bit, 4:4:4, rotation) are decoded on the CPU,
        logged. See :mod:`engine.media.nvdec`.
    workers:
        Item threads of :meth:`submit`, i.e. items in flight at once (None: 8 per CPU core, at
        most 64). Items spend most of their time in model calls, and the per-model batchers can
        only merge the calls of items that are in flight together: on the 2-core development
        machine 16 workers with dynamic batching gave 1.3x the items/s of 2 workers at 16 and 64
        concurrent callers (bench load suite), with the same latency for a lone caller.
    max_queued:
        Submitted items that may wait for a worker before :meth:`submit` fails with
        OverloadedError.

    A Session is thread-safe: models load once, lazily, under a lock, and every call keeps its
    state on the stack, so a service can share one Session between request threads.
    """

    def __init__(self, repo: str | os.PathLike = "model_repo", device: str = "cpu",
                 threads: int | None = None, kernel_impl: str | None = None, *, workers: int | None = None,
                 max_queued: int = serving.DEFAULT_MAX_QUEUED, video_decoder: str = "cpu"):
        placement = resolve_placement(device, kernel_impl, video_decoder)  # typed errors before any loading
        self.repo = ModelRepository(repo)
        self.pipeline: Pipeline = load_pipeline(repo)
        self.device = placement.device
        self.kernel_impl = placement.kernel_impl
        self.video_decoder = placement.video_decoder
        self.threads = threads
        self.limits = self.pipeline.limits
        self._backends: dict[str, Backend] = {}
        self._schedulers: dict[str, Scheduler] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # per model: held while it loads
        self._closed_and_drained = threading.Event()
        self._draining: serving.ItemServer | None = None  # the server the first close() drains
        self._tokenizer: Tokenizer | None = None
        self._exemplars: dict[str, np.ndarray] = {}
        self._unmasked: dict[str, str | None] = {}  # masked word -> its reading (_unmask)
        self._class_ids: dict[str, np.ndarray] = {}
        self._audio_classes: list[str] | None = None
        self._ready = False
        self._workers = workers or min(64, 8 * (os.cpu_count() or 1))
        self._max_queued = max_queued
        self._server: serving.ItemServer | None = None  # started by the first submission
        self._closed = False  # no new items
        self._stopped = False  # closed and drained: no model calls either
        v = self.pipeline.vision
        self._spec = PreprocessSpec(**v.preprocess) if v else None
        self._device = DevicePipeline(placement, self.pipeline, self.backend) \
            if placement.device_pipeline else None
        self._metrics = SessionMetrics(lambda: self._server_count(serving.ItemServer.queued),
                                       lambda: self._server_count(serving.ItemServer.running))

    # ------------------------------------------------------------------ models
    def backend(self, model: str) -> Backend:
        """The loaded backend of ``model`` (loaded and verified against the lock on first use).

        A load takes seconds (minutes for a TensorRT build), so it holds only that model's own
        lock: submissions, other models and the event loop of :meth:`moderate_async` go on."""
        with self._lock:
            b = self._backends.get(model)
            if b is not None:
                return b
            loading = self._loading.setdefault(model, threading.Lock())
        with loading:  # one load per model; a second caller waits for the first one's
            with self._lock:
                b = self._backends.get(model)
            if b is None:
                b = load_backend(self.repo.model(model), device=self.device, threads=self.threads,
                                 backend=self.pipeline.backend_for(model))
                with self._lock:
                    self._backends[model] = b
            return b

    def scheduler(self, model: str) -> Scheduler:
        """The request scheduler of ``model`` (:mod:`engine.batching`, from its config.pbtxt),
        started on first use, stopped by :meth:`close`."""
        backend = self.backend(model)
        with self._lock:
            if self._stopped:
                raise ModelError("session closed")
            s = self._schedulers.get(model)
            if s is None:
                path = self.repo.path / model / "config.pbtxt"
                s = Scheduler(backend, BatchingPolicy.from_config(self.repo.config(model), path),
                              on_batch=lambda rows, seconds: self._metrics.backend_call(model, rows, seconds))
                self._schedulers[model] = s
                self._metrics.watch_scheduler(model, s.queued)
            return s

    @counted("run")
    def run(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one model of the repository on named inputs; batches are split as needed.

        A model with ``dynamic_batching`` in its config.pbtxt runs through its scheduler, so
        concurrent calls share batches (and may fail with OverloadedError/DeadlineExceededError).
        """
        s = self.scheduler(model)
        return s.infer(inputs) if s.policy.dynamic else self._backend_infer(model, dict(inputs))

    def _backend_infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``backend.infer`` outside the scheduler, counted like a batch (rows, seconds)."""
        backend = self.backend(model)
        rows = _rows(inputs) if backend.max_batch_size > 0 else 1
        started = time.perf_counter()
        try:
            return backend.infer(inputs)
        finally:
            self._metrics.backend_call(model, rows, time.perf_counter() - started)

    def close(self, drain: bool = True) -> None:
        """Finish every submitted item (``drain``; else fail the queued ones with ModelError and
        finish the running ones), then stop the model schedulers. Idempotent; afterwards new
        submissions and model calls fail with ModelError "session closed". A close while
        another is under way (a shutdown hook beside the ``with`` exit) waits for that one."""
        with self._lock:
            first, self._closed = not self._closed, True
            server, self._server = self._server, None
            if first:
                self._draining = server
            draining = self._draining
        if not first:
            # wait for the first close, unless this is one of the threads it waits for (an
            # item's callback closing the Session): that would wait for itself
            if draining is None or not draining.on_own_thread():
                if draining is not None and not drain:  # stop now: fail what is still queued
                    draining.close(drain=False)
                self._closed_and_drained.wait()
            return
        try:
            if server is not None:
                server.close(drain)  # items still need the schedulers: stop those after
            with self._lock:
                self._stopped = True
                schedulers, self._schedulers = list(self._schedulers.values()), {}
            for s in schedulers:
                s.close()
            self._metrics.close()
        finally:
            self._closed_and_drained.set()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def warmup(self) -> None:
        """Load every model the pipeline uses and run each once, so the first request is fast."""
        p = self.pipeline
        for cfg in (p.vision, p.audio, p.text_embedding, p.text_classifier):
            if cfg is not None:
                self.backend(cfg.model).warmup()
        self._policy_setup()

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict[str, Any]:
        """A snapshot of this Session's metrics (:meth:`engine.metrics.SessionMetrics.snapshot`)."""
        return self._metrics.snapshot()

    @property
    def metrics_registry(self):
        """This Session's prometheus-client ``CollectorRegistry`` (to mount in a service's own
        web app: ``prometheus_client.make_wsgi_app(session.metrics_registry)``)."""
        return self._metrics.registry

    def serve_metrics(self, port: int = 0, addr: str = "127.0.0.1"):
        """Serve this Session's metrics in the Prometheus text format over HTTP (port 0: any free
        port); returns the :class:`engine.metrics.MetricsExporter` (``url``, ``port``,
        ``close()``). :meth:`close` stops it."""
        return self._metrics.serve(port, addr)

    def _server_count(self, count: Callable[[serving.ItemServer], int]) -> int:
        server = self._server
        return 0 if server is None else count(server)

    # ------------------------------------------------------------------ public API
    def submit(self, item: Any, *, deadline: float | None = None,
               priority: int | None = None) -> Future:
        """Queue one item; returns the future of its :class:`Verdict` (never raises for the item).

        ``item`` is a mapping of :meth:`moderate`'s keywords (``{"video": path, "text":
        caption}``; ``"media"`` for the content-detected input) or a bare media input.
        ``deadline``: seconds from now; when it passes the item fails with
        DeadlineExceededError, queued or running. ``priority``: lower numbers are taken first
        (default 1). The future holds exactly one outcome: the Verdict, the item's typed error,
        OverloadedError (the admission queue is full: at once), CancelledError
        (``future.cancel()`` before a worker took it), or ModelError once the Session is closed.
        File objects must stay open until the future is done. Done callbacks run on an item
        worker: waiting there for another item can starve the workers.
        """
        future = self._submit(item, deadline=deadline, priority=priority, block=False)
        self._metrics.track_request(future, "submit")
        return future

    @counted("moderate_async")
    async def moderate_async(self, media_input: Any = None, *, video: Any = None,
                             image: Any = None, audio: Any = None,
                             text: str | Sequence[str] | None = None,
                             deadline: float | None = None, priority: int | None = None) -> Verdict:
        """:meth:`moderate` for asyncio: awaits :meth:`submit`'s future without blocking the loop.

        Cancelling the awaiting task cancels the item: a queued item never runs, a running one
        stops at its next stage.
        """
        item = {"media": media_input, "video": video, "image": image, "audio": audio, "text": text}
        future = self._submit(item, deadline=deadline, priority=priority, block=False)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            server = self._server
            if server is not None:
                server.abandon(future)  # wrap_future cancels a queued item; this a running one
            raise

    @counted("moderate")
    def moderate(self, media_input: Any = None, *, video: Any = None, image: Any = None,
                 audio: Any = None, text: str | Sequence[str] | None = None) -> Verdict:
        """Moderate one item and return its per-policy :class:`Verdict`.

        ``media_input`` is a path, bytes or binary file whose modality (video with or without
        audio, audio only, still image) is detected from its content; ``video``/``image``/
        ``audio`` name the modality explicitly; ``image`` also takes an HWC uint8 RGB or RGBA array.
        ``text`` is one string or a list (captions, titles, transcripts). Runs as a
        submitted item (:meth:`submit`); when the admission queue is full it waits for room.
        """
        item = {"media": media_input, "video": video, "image": image, "audio": audio, "text": text}
        return self._submit(item, block=True).result()

    def _submit(self, item: Any, *, deadline: float | None = None, priority: int | None = None,
                block: bool) -> Future:
        label = ItemLabel()
        try:
            server = self._item_server()
            item = self._hand_over(item)
        except EngineError as e:  # closed, a bad device image: the outcome goes through the future
            future: Future = Future()
            future.set_exception(e)
        else:
            future = server.submit(lambda: label.run(self._moderate_item, item), deadline=deadline,
                                   priority=1 if priority is None else priority, block=block)
        self._metrics.track_item(future, label)
        return future

    def _hand_over(self, item: Any) -> Any:
        """``item`` with a device image taken on the submitting thread, whose streams order the
        image's pending writes (:meth:`engine.device_pipeline.DevicePipeline.hand_over`)."""
        image = item.get("image") if isinstance(item, Mapping) else None
        if self._device is None or not is_tensor_input(image):
            return item
        if self._device.device.type == "cuda" and getattr(image, "is_cuda", None) is False:
            return item  # a CPU torch tensor for a GPU Session: uploaded on the worker, as host arrays are
        try:
            return {**item, "image": self._device.hand_over(item["image"])}
        except EngineError:
            raise
        except Exception as e:  # noqa: BLE001 - the caller's array failed its export (DLPack, CAI)
            raise InputError(f"the device image cannot be taken: {type(e).__name__}: {e}") from e

    def _item_server(self) -> serving.ItemServer:
        with self._lock:
            if self._closed:
                raise ModelError("session closed")
            if self._server is None:
                self._server = serving.ItemServer(self._workers, self._max_queued, "moderate")
            return self._server

    def _moderate_item(self, item: Any) -> Verdict:
        """Run one submitted item (on an item worker)."""
        if not isinstance(item, Mapping):
            return self._moderate(item)
        unknown = set(item) - {"media", *MODALITIES}
        if unknown:
            raise InputError(f"unknown item keys {sorted(unknown)}")
        kwargs = dict(item)
        return self._moderate(kwargs.pop("media", None), **kwargs)

    def _moderate(self, media_input: Any = None, *, video: Any = None, image: Any = None,
                  audio: Any = None, text: str | Sequence[str] | None = None) -> Verdict:
        """The item pipeline: route, decode, preprocess, model calls, pooling, scoring."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        scores: dict[str, PolicyResult] = {}
        sampled: tuple[float, ...] = ()
        strategy = None
        media: dict[str, Any] = {}
        video, image, audio, skipped_audio, cover, subtitled, audio_tracks = self._route(
            media_input, video, image, audio)
        label_current_item(modality_label(video, image, audio, text))
        if video is None and image is None and audio is None and not text:
            raise InputError("nothing to moderate: pass a media input, video, image, audio or text")
        self._check_examined(video, image, audio, text)
        self._policy_setup()

        if video is not None:
            decoded = self._decode_video(video, timings)
            sampled, strategy, media = tuple(decoded.timestamps), decoded.strategy, decoded.picture_facts()
            if decoded.shots:
                media["shot_starts"] = decoded.shots
            if skipped_audio:
                media["audio_skipped"] = skipped_audio
            scores.update(self._scores_over_pages(decoded.pages or [("", decoded.frames)], sampled, timings))
        if image is not None:  # given with a video: each policy keeps the stronger
            views = [(page, [frame]) for page, frame in self._decode_image_views(image)]
            _keep_stronger(scores, self._scores_over_pages(views, (0.0,), timings))
        if cover is not None:  # the moving pictures and the stored one: the stronger
            cover_scores, media["cover_art"] = self._cover_scores(cover, timings)
            _keep_stronger(scores, cover_scores)
        if audio is not None and audio_tracks > 1:
            track_scores, media["audio_tracks"] = self._scores_over_tracks(audio, audio_tracks, timings)
            scores.update(track_scores)
        elif audio is not None:
            scores.update(self._sound_scores(audio, timings))
        if text:
            scores.update(self._text_scores(self._given_texts(text), timings))
        if subtitled is not None:
            caption_scores, media["subtitles"] = self._caption_scores(subtitled, timings)
            _keep_stronger(scores, caption_scores)  # the item's texts and its captions

        timings["total_s"] = time.perf_counter() - started
        ordered = {p.name: scores[p.name] for p in self.pipeline.policies if p.name in scores}
        return Verdict(ordered, sampled, strategy, timings, media)

    @counted("moderate_many")
    def moderate_many(self, items: Iterable[Any],
                      progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Moderate many items; one outcome per item, in order.

        Each item is a media input (path, bytes, file) or a mapping of :meth:`moderate`'s
        keyword arguments. An item that fails yields an outcome holding its typed error; the
        other items are unaffected. Items run concurrently on the item workers (at most two
        per worker are submitted ahead, so a long iterable is consumed as it goes);
        ``progress`` sees the outcomes in order.
        """
        if isinstance(items, (str, bytes, bytearray, memoryview, os.PathLike, Mapping)) \
                or not isinstance(items, Iterable):
            raise InputError(f"moderate_many takes an iterable of items, got {type(items).__name__} "
                             "(for one item, call moderate)")
        outcomes: list[Outcome] = []
        ahead: deque[tuple[str, Future]] = deque()

        def settle_oldest() -> None:
            name, future = ahead.popleft()
            try:
                outcome = Outcome(name, verdict=future.result())
            except EngineError as e:  # unexpected failures arrive as InternalError
                outcome = Outcome(name, error=e)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)

        for i, item in enumerate(items):
            ahead.append((_describe(item, i), self._submit(item, block=True)))
            if len(ahead) >= 2 * self._workers:
                settle_oldest()
        while ahead:
            settle_oldest()
        return outcomes

    @counted("embed")
    def embed(self, media_input: Any = None, *, video: Any = None, image: Any = None,
              audio: Any = None, text: str | Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Pooled embeddings per modality.

        ``text`` gives one L2-normalised MiniLM embedding per text, shape [texts, 384].
        ``vision`` (video or image) is the mean over the sampled frames of the vision model's
        embedding output (open_nsfw: the 1024-d pooled ResNet features), shape [D]; ``audio``
        likewise over the audio windows (YAMNet: 1024-d). Pooled by the native masked-mean kernel.
        """
        out: dict[str, np.ndarray] = {}
        video, image, audio, *_ = self._route(media_input, video, image, audio)
        timings: dict[str, float] = {}
        frames = None
        if video is not None:
            frames = self._decode_video(video, timings).frames
        elif image is not None:
            frames = [self._decode_image(image)]
        if frames is not None:
            v = self.pipeline.vision
            out["vision"] = self._device.vision_embedding(frames, timings) if self._device else \
                _mean_over_steps(self._vision_outputs(frames, timings)[v.embedding])
        if audio is not None:
            wave = self._decode_audio(audio, timings)
            a = self.pipeline.audio
            out["audio"] = self._device.audio_embedding(wave, timings) if self._device else \
                _mean_over_steps(self._audio_outputs(wave, timings)[0][a.embedding])
        if text:
            out["text"] = self._embed_texts(self._texts(text))
        if not out:
            raise InputError("nothing to embed")
        return out

    # ------------------------------------------------------------------ stages
    def _route(self, media_input: Any, video: Any, image: Any, audio: Any) -> "_Routed":
        """What to judge of one item, each input readable more than once (:class:`_Routed`).

        A bare ``media_input`` goes where its content says (one probe). A video's own sound
        track becomes the audio input unless audio was given; the probe that classified the
        input already knows whether it has one. A track that cannot be decoded leaves the
        pictures to be judged alone, and the verdict says so (``media["audio_skipped"]``). The
        cover picture of a video or sound file (album art, a thumbnail: players and file browsers
        show it) is judged by the vision policies when the pipeline has some
        (``media["cover_art"]``).
        """
        video, image, audio = (None if x is None else self._readable(x) for x in (video, image, audio))
        info = None
        if media_input is not None:
            media_input = self._readable(media_input)
            if _is_samples(media_input):
                audio = media_input
            elif isinstance(media_input, np.ndarray):
                image = media_input
            else:
                info = media.probe(media_input, self.limits)
                if info.kind == "video":
                    video = media_input
                elif info.kind == "image":
                    image = media_input
                else:
                    audio = media_input
        def probed(source: Any) -> media.MediaInfo:
            return info if source is media_input and info is not None else media.probe(source, self.limits)

        skipped = None
        video_info = audio_info = None
        if video is not None:
            video_info = probed(video)
            if audio is None and video_info.has_audio:
                audio = video
            elif audio is None:
                skipped = video_info.audio_codec
        if audio is not None and not _is_samples(audio):
            audio_info = video_info if audio is video else probed(audio)
        cover = None
        if self._policies("vision"):  # the picture stored with a video or a sound file
            cover = next((s for s, i in ((video, video_info), (audio, audio_info)) if i is not None and i.cover),
                         None)
        subtitled = video if video_info is not None and video_info.subtitles \
            and self._policies("text_classifier") + self._policies("text_similarity") else None
        tracks = audio_info.audio_tracks if audio_info is not None else 1
        return _Routed(video, image, audio, skipped, cover, subtitled, tracks)

    def _readable(self, source: Any) -> Any:
        """File objects are read once (bounded) so that video and its audio track can share them."""
        if hasattr(source, "read") and not isinstance(source, (bytes, bytearray, memoryview)):
            data = source.read(self.limits.max_bytes + 1)
            if len(data) > self.limits.max_bytes:
                raise MediaLimitError(f"input exceeds max_bytes={self.limits.max_bytes}")
            return bytes(data)
        return source

    def _infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One model call of an item, at a stage boundary (an abandoned item stops here).

        With other items in flight it goes through the model's batcher, where their rows can
        share the batch (with what is left of the item's deadline); a lone item calls the
        backend at once: it would only wait out max_queue_delay for company that is not there.
        """
        left = serving.checkpoint()
        scheduler = self.scheduler(model)
        server = self._server
        with self._metrics.stage("inference", model):
            if scheduler.policy.dynamic and server is not None and server.busy():
                return scheduler.infer(inputs, timeout=left)
            return self._backend_infer(model, inputs)

    def _decode_video(self, source: Any, timings: dict[str, float]):
        s = self.pipeline.vision.sampling if self.pipeline.vision else None
        sampling = media.Sampling(mode=s.mode, value=s.value, max_frames=s.max_frames, shots=s.shots) \
            if s else media.Sampling()
        pages = self._pages()
        with self._metrics.stage("decode_video", timings=timings, key="decode_video_s"):
            decoded = self._device.decode_video(source, sampling, self.limits, pages) if self._device \
                else media.decode_video(source, sampling, self.limits, backgrounds=pages)
        if not decoded.complete:
            # A verdict on part of a video would vouch for frames nobody looked at.
            raise CorruptMediaError(
                f"video is truncated or damaged: {decoded.decode_errors} packets failed, "
                f"frames used up to {max(decoded.timestamps, default=0.0):.2f} s of "
                f"{decoded.duration:.2f} s")
        if not decoded.frames:
            raise CorruptMediaError("no video frame could be decoded")
        return decoded

    def _decode_image(self, source: Any):
        """The picture (a transparent one over the first page of ``[vision] backgrounds``)."""
        return self._decode_image_views(source, first_page_only=True)[0][1]

    def _pages(self) -> tuple[str, ...]:
        """The pages transparent pictures are judged over (Note [transparent pictures])."""
        return self.pipeline.vision.backgrounds if self.pipeline.vision else ("white",)

    def _decode_image_views(self, source: Any, first_page_only: bool = False,
                            cover: bool = False) -> list[tuple[str, Any]]:
        """``[(page, frame), ...]``: a transparent picture over each page of ``[vision]
        backgrounds``, anything else ``[("", frame)]`` (Note [transparent pictures]); ``cover``:
        the picture stored with the media."""
        pages = self._pages()
        with self._metrics.stage("decode_image"):
            if self._device is not None and (is_tensor_input(source) or isinstance(source, HandedOver)):
                # a device array, used in place
                return [("", self._device.image_frame(source, self.limits))]
            return media.decode_image_views(source, self.limits, pages[:1] if first_page_only else pages,
                                            cover=cover)

    def _cover_scores(self, source: Any, timings) -> tuple[dict[str, PolicyResult], str]:
        """Vision policies of the cover picture stored with a sound file or video, and what
        became of it: "judged", or why not; a cover that does not decode leaves the rest to be
        judged."""
        try:
            views = [(page, [frame]) for page, frame in self._decode_image_views(source, cover=True)]
        except MediaError as e:
            return {}, f"not decoded ({type(e).__name__}: {e})"
        return self._scores_over_pages(views, (0.0,), timings), "judged"

    def _caption_scores(self, source: Any, timings) -> tuple[dict[str, PolicyResult], int | str]:
        """Text policies over a video's subtitles (Note [subtitles] in engine/media/subtitles.py),
        the evidence naming the caption (``index``) and its time; and how many captions were
        judged, or why none were (the pictures and sound are judged regardless)."""
        try:
            with self._metrics.stage("decode_subtitles"):
                captions = media.decode_subtitles(source, self.limits)
        except MediaError as e:
            return {}, f"not decoded ({type(e).__name__}: {e})"
        if not captions:
            return {}, 0
        out = {}
        for name, r in self._text_scores([c.text for c in captions], timings).items():
            c = captions[r.evidence.index]
            out[name] = _with_evidence(r, modality="subtitles", timestamps=(c.start,), segment=(c.start, c.end))
        return out, len(captions)

    def _scores_over_pages(self, views: list[tuple[str, list[Any]]], stamps, timings) -> dict[str, PolicyResult]:
        """Vision policies of frames; of transparent ones, each policy's stronger score over the
        pages they were decoded on, its evidence naming the page (Note [transparent pictures])."""
        if len(views) == 1:
            return self._vision_scores(views[0][1], stamps, timings)
        best: dict[str, PolicyResult] = {}
        for page, frames in views:
            _keep_stronger(best, {name: _with_evidence(r, background=page)
                                  for name, r in self._vision_scores(frames, stamps, timings).items()})
        return best

    def _decode_audio(self, source: Any, timings: dict[str, float], track: int = 0,
                      channels: bool = False) -> np.ndarray:
        """Mono samples at 16 kHz; with ``channels``, each channel alone, (channels, samples)."""
        with self._metrics.stage("decode_audio", timings=timings, key="decode_audio_s"):
            if _is_samples(source):  # samples in memory: (n,) at 16 kHz, or (samples, rate)
                samples, rate = source if isinstance(source, tuple) else (source, SAMPLE_RATE)
                if channels:
                    columns = np.asarray(samples).reshape(len(samples), -1).T
                    return np.stack([media.audio_from_array(c, rate, self.limits, SAMPLE_RATE) for c in columns])
                return media.audio_from_array(samples, rate, self.limits, SAMPLE_RATE)
            return media.decode_audio(source, self.limits, track=track, channels=channels)

    def _channel_count(self, source: Any, track: int) -> int:
        """The channels of a sound source as declared (0: unknown), without decoding it."""
        if _is_samples(source):
            samples = source[0] if isinstance(source, tuple) else source
            shape = np.shape(samples)
            return 1 if len(shape) == 1 else int(shape[1])
        return media.audio_channels(source, self.limits, track=track)

    def _sound_scores(self, source: Any, timings, track: int = 0) -> dict[str, PolicyResult]:
        """Audio policies of one sound track: its mono downmix (raised when quiet, Note
        [loudness]) and, when that is quiet or silent, each of its channels alone (Note
        [cancelling channels] in engine/media/loudness.py), each policy keeping the stronger."""
        wave = self._decode_audio(source, timings, track)
        a = self.pipeline.audio
        loudness = None
        if self._policies("audio") and a.raise_quiet and wave.size:
            with self._metrics.stage("loudness", timings=timings, key="loudness_s"):
                loudness = integrated_loudness(wave, SAMPLE_RATE)
        scores = self._audio_scores(wave, timings, loudness)
        if scores and loudness is not None and is_quiet(loudness, a.reference_lufs) \
                and self._channel_count(source, track) != 1:  # a mono track has nothing to cancel
            channels = self._decode_audio(source, timings, track, channels=True)
            for k, channel in enumerate(channels if len(channels) > 1 else ()):
                _keep_stronger(scores, {name: _with_evidence(r, channel=k)
                                        for name, r in self._audio_scores(channel, timings).items()})
        return scores

    def _scores_over_tracks(self, source: Any, tracks: int, timings) -> tuple[dict[str, PolicyResult], int]:
        """Audio policies over every sound track of a source with several (languages,
        commentary: a viewer may switch to any), each policy keeping the stronger, its evidence's
        ``index`` naming the track; and how many tracks decoded. A track that does not decode is
        left out, unless none does."""
        best: dict[str, PolicyResult] = {}
        judged, first_error = 0, None
        for k in range(tracks):
            try:
                track_scores = self._sound_scores(source, timings, track=k)
            except MediaError as e:
                first_error = first_error or e
                continue
            judged += 1
            _keep_stronger(best, {name: _with_evidence(r, index=k) for name, r in track_scores.items()})
        if not judged:
            raise first_error
        return best, judged

    def _vision_outputs(self, frames: Sequence[Any], timings: dict[str, float]) -> np.ndarray:
        v = self.pipeline.vision
        if v is None:
            raise InputError("this pipeline has no vision model")
        backend = self.backend(v.model)
        name_in = v.input or backend.inputs[0].name
        name_out = v.output or backend.outputs[0].name
        outs: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(frames), v.batch_size):
            with self._metrics.stage("preprocess", timings=timings, key="preprocess_s"):
                x = preprocess(frames[i:i + v.batch_size], self._spec, threads=self.threads)
            t = time.perf_counter()
            for name, y in self._infer(v.model, {name_in: x}).items():
                outs.setdefault(name, []).append(y)
            timings["vision_infer_s"] = timings.get("vision_infer_s", 0.0) + time.perf_counter() - t
        result = {name: np.concatenate(ys, axis=0) for name, ys in outs.items()}
        result["scores"] = result[name_out]
        return result

    def _audio_outputs(self, wave: np.ndarray, timings: dict[str, float]):
        a = self.pipeline.audio
        if a is None:
            raise InputError("this pipeline has no audio model")
        backend = self.backend(a.model)
        with self._metrics.stage("audio_frontend", timings=timings, key="audio_frontend_s"):
            patches, starts = yamnet_patches(wave)
        t = time.perf_counter()
        name_in = a.input or backend.inputs[0].name
        name_out = a.output or backend.outputs[0].name
        result = self._infer(a.model, {name_in: patches})
        result["scores"] = result[name_out]
        timings["audio_infer_s"] = time.perf_counter() - t
        return result, starts

    def _vision_scores(self, frames, stamps, timings) -> dict[str, PolicyResult]:
        if not frames:
            return {}
        policies = self._policies("vision")
        if not policies:
            return {}
        if self._device is not None:
            return self._device.vision_scores(frames, stamps, policies, self._class_ids, timings)
        outputs = self._vision_outputs(frames, timings)["scores"]
        times = [(t, t) for t in stamps]
        model = self.pipeline.vision.model
        with self._metrics.stage("policy", model):
            return {p.name: score_timed(p, outputs, self._class_ids[p.name], times, "vision", model)
                    for p in policies}

    def _audio_scores(self, wave: np.ndarray, timings, loudness: float | None = None) -> dict[str, PolicyResult]:
        """Audio policies of a waveform as given and, when it is quiet, raised to the reference
        loudness (Note [loudness] in engine/media/loudness.py), each keeping the stronger.
        ``loudness``: the waveform's, when measured already."""
        scores = self._audio_scores_as_given(wave, timings)
        a = self.pipeline.audio
        if scores and a.raise_quiet:
            if loudness is None:
                with self._metrics.stage("loudness", timings=timings, key="loudness_s"):
                    loudness = integrated_loudness(wave, SAMPLE_RATE)
            gain = raise_gain_db(loudness, a.reference_lufs)
            if gain is not None:
                raised = self._audio_scores_as_given(wave * np.float32(10.0 ** (gain / 20.0)), timings)
                _keep_stronger(scores, {name: _with_evidence(r, gain_db=round(gain, 2))
                                        for name, r in raised.items()})
        return scores

    def _audio_scores_as_given(self, wave: np.ndarray, timings) -> dict[str, PolicyResult]:
        policies = self._policies("audio")
        if not policies or wave.size == 0:
            return {}
        if self._device is not None:
            return self._device.audio_scores(wave, policies, self._class_ids, self._audio_classes, timings)
        outputs, starts = self._audio_outputs(wave, timings)
        logits = outputs["scores"]
        times = [(float(s), float(s) + CHUNK_SAMPLES / SAMPLE_RATE) for s in starts]  # one chunk each
        model = self.pipeline.audio.model
        with self._metrics.stage("policy", model):
            return {p.name: score_timed(p, logits, self._class_ids[p.name], times, "audio", model,
                                        self._audio_classes)
                    for p in policies}

    def _given_texts(self, text: str | Sequence[str]) -> list[str]:
        """The item's texts as given, checked."""
        try:
            texts = [text] if isinstance(text, str) else list(text)
        except TypeError:  # not iterable
            texts = [text]
        if not all(isinstance(t, str) for t in texts):
            raise InputError("text must be a string or a list of strings")
        for t in texts:
            self.limits.check_text(len(t))
        return texts

    def _texts(self, text: str | Sequence[str]) -> list[str]:
        """The texts as the models read them (Note [text normalisation] in engine.text)."""
        return [normalise_text(t, self.pipeline.text_unicode) for t in self._given_texts(text)]

    def _text_scores(self, texts: list[str], timings) -> dict[str, PolicyResult]:
        """Text policies over the item's texts as given, each judged whole, sentence by sentence
        and as read back (Note [text segments] in engine/text_units.py), its strongest score kept."""
        out: dict[str, PolicyResult] = {}
        t = time.perf_counter()
        units = TextUnits(texts, self.pipeline.text_unicode, self.pipeline.text_read_disguised,
                          self._unmasker())
        classified = self._policies("text_classifier")
        if classified:
            model = self.pipeline.text_classifier.model
            probs = self._classify(units.texts)  # once for every classifier policy
            with self._metrics.stage("policy", model):
                per_text, won, _ = units.strongest(probs)
                for p in classified:
                    out[p.name] = _from_unit(score_texts(p, per_text, model), units, won)
        similarity = self._policies("text_similarity")
        if similarity:
            emb = self._embed_texts(units.texts)
            model = self.pipeline.text_embedding.model
            with self._metrics.stage("policy", model):
                for p in similarity:
                    sims = emb @ self._exemplars[p.name].T  # cosine: both sides are L2-normalised
                    per_text, won, at = units.strongest(sims.max(axis=1))
                    details = [p.exemplars[j] for j in sims.argmax(axis=1)[at]]
                    out[p.name] = _from_unit(score_texts(p, per_text, model, details), units, won)
        timings["text_s"] = time.perf_counter() - t
        return out

    def _classify(self, texts: list[str]) -> np.ndarray:
        """The text classifier's score of each text, shape [len(texts)]."""
        model = self.pipeline.text_classifier.model
        name_in = self.backend(model).inputs[0].name
        probs = self._infer(model, {name_in: np.array(texts, dtype=object)})
        return np.asarray(next(iter(probs.values()))).reshape(-1)

    def _unmasker(self) -> Callable[[str], str | None] | None:
        """An item's reader of masked words (Note [disguised words] in engine/disguises.py): the
        word a lowercase masked word ("f**k") is read as, or None. Each new pattern costs one
        classifier call over its fits (up to ~1,000 words), so an item looks up at most
        MASKED_PER_ITEM new ones and leaves the rest as written; looked-up patterns are kept."""
        if self.pipeline.text_classifier is None:
            return None
        left = MASKED_PER_ITEM

        def unmask(pattern: str) -> str | None:
            nonlocal left
            if pattern in self._unmasked:
                return self._unmasked[pattern]
            if left == 0:
                return None
            left -= 1
            return self._unmask(pattern)

        return unmask

    def _unmask(self, pattern: str) -> str | None:
        """Of the words that fit a lowercase masked word, the one the text classifier scores
        highest alone, if at least UNMASK_MIN; remembered (bounded)."""
        fits = mask_fits(pattern)
        found = None
        if fits:
            scores = self._classify(list(fits))
            best = int(np.argmax(scores))
            found = fits[best] if scores[best] >= UNMASK_MIN else None
        if len(self._unmasked) < MAX_UNMASKED:  # bounded: texts are untrusted
            self._unmasked[pattern] = found
        return found

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        e = self.pipeline.text_embedding
        if e is None:
            raise InputError("this pipeline has no text embedding model")
        backend = self.backend(e.model)
        with self._lock:  # item workers embed texts concurrently: build the tokenizer once
            if self._tokenizer is None:
                self._tokenizer = Tokenizer.from_file(self.repo.model(e.model).files["tokenizer.json"])
        names = {s.name for s in backend.inputs}
        group = min(backend.max_batch_size, TEXT_BATCH) if backend.max_batch_size > 0 else TEXT_BATCH
        out = None
        for rows in batches_of_like_length(texts, group):
            with self._metrics.stage("tokenize"):
                # padded to the backend's length bucket, if it has buckets: concurrent callers batch
                enc = self._tokenizer.encode([texts[i] for i in rows],
                                             pad_to=getattr(backend, "length_buckets", ()))
            tokens = self._infer(e.model, {k: v for k, v in enc.items() if k in names})[e.output]
            emb = masked_mean(tokens, enc["attention_mask"], normalize=e.normalize)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), emb.dtype)
            out[rows] = emb
        return out if out is not None else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ policies
    def _policies(self, source: str) -> list[PolicyConfig]:
        return [p for p in self.pipeline.policies if p.source == source]

    def _check_examined(self, video: Any, image: Any, audio: Any, text: Any) -> None:
        """InputError for an input no policy of the pipeline looks at: an empty verdict would
        read as "passed" (a repository without text models, bench/repo_subset.py, given text)."""
        sources = {p.source for p in self.pipeline.policies}
        examined = {"video": bool(sources & {"vision", "audio"}), "image": "vision" in sources,
                    "audio": "audio" in sources, "text": bool(sources & {"text_classifier", "text_similarity"})}
        given = {"video": video is not None, "image": image is not None, "audio": audio is not None,
                 "text": bool(text)}
        unexamined = [k for k in MODALITIES if given[k] and not examined[k]]
        if unexamined:
            raise InputError(f"no policy of the pipeline in {self.pipeline.path} examines "
                             f"{' or '.join(unexamined)}")

    def _policy_setup(self) -> None:
        """Resolve class names and embed exemplar phrases once (first call, under the lock)."""
        if self._ready:
            return
        p = self.pipeline
        class_ids, exemplars = {}, {}
        if p.audio is not None and self._policies("audio"):
            self._audio_classes = _read_class_map(
                Path(self.repo.model(p.audio.model).version_dir) / p.audio.class_map)
        for pol in p.policies:
            if pol.source == "vision":
                outs = self.backend(p.vision.model).outputs
                spec = next((o for o in outs if o.name == p.vision.output), outs[0])
                n = spec.shape[-1]
                class_ids[pol.name] = resolve_classes(pol, None, n, p.path)
            elif pol.source == "audio":
                class_ids[pol.name] = resolve_classes(pol, self._audio_classes,
                                                      len(self._audio_classes), p.path)
            elif pol.source == "text_similarity":
                exemplars[pol.name] = self._embed_texts(self._texts(list(pol.exemplars)))
        with self._lock:
            self._class_ids, self._exemplars, self._ready = class_ids, exemplars, True


def _rows(inputs: Mapping[str, Any]) -> int:
    """The batch axis length of a model call's inputs, for the batch-size histogram (a malformed
    call counts as 1 row: the backend rejects it with its own error)."""
    try:
        return len(next(iter(inputs.values())))
    except (StopIteration, TypeError):
        return 1


def _mean_over_steps(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)[None]  # [1, steps, D]
    return masked_mean(x, np.ones(x.shape[:2], dtype=np.float32))[0]


def _read_class_map(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


def _describe(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, Mapping):
        for key in ("media", "video", "image", "audio"):
            if isinstance(item.get(key), (str, os.PathLike)):
                return os.fspath(item[key])
        if set(item) == {"text"}:
            return "text"
    if isinstance(item, io.IOBase) and getattr(item, "name", None):
        return str(item.name)
    return f"item[{index}]"
