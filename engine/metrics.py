"""Prometheus metrics of one :class:`engine.Session`: outcomes, latencies, queues and batches.

Every Session owns a :class:`SessionMetrics` with its own ``CollectorRegistry`` (never
prometheus-client's global default registry): two Sessions in one process count separately and
register the same metric names without colliding. A service exposes a Session's registry with
:meth:`SessionMetrics.serve` (prometheus-client's HTTP exporter on a port of its own) or mounts it
in its own web app (``prometheus_client.make_wsgi_app(session.metrics_registry)``,
``make_asgi_app``, ``generate_latest``). :meth:`SessionMetrics.snapshot` is the in-process read.

Metrics (label order as listed; the snapshot keys labelled values by these tuples):

``engine_requests_total{method, outcome}``
    Calls of the public API (submit, moderate, moderate_async, moderate_many, embed, run);
    outcome ``ok`` or the exception's type name. A ``moderate_many`` call is ``ok`` when it
    returned: its items' failures are in ``engine_items_total``.
``engine_items_total{modality, outcome}``
    Moderation items by what they held (``image``, ``video+audio+text``, …; ``unknown`` when the
    item failed before its modalities were known) and outcome (``ok`` or the error's type name:
    OverloadedError, DeadlineExceededError, CancelledError, CorruptMediaError, …).
``engine_item_seconds{modality, outcome}``
    Submission to outcome, every item (outcome ``ok`` | ``error``).
``engine_stage_seconds{stage, model}``
    Per item and stage: ``decode_video``, ``decode_image``, ``decode_audio``, ``preprocess``,
    ``audio_frontend``, ``tokenize``, ``inference`` (an item's model call, batch queue wait
    included; ``model`` names the model), ``policy`` (pooling and scoring over one model's
    outputs). Stages without a model have ``model=""``. Failed stages are observed too.
``engine_queue_depth``
    Items waiting for an item worker (read at collection time).
``engine_items_running``
    Items on an item worker.
``engine_scheduler_queue_depth{model}``
    Requests waiting in a model's batcher (models whose scheduler has started).
``engine_batch_size{model}``
    Rows per backend call: batches formed by the schedulers and a lone item's direct calls.
``engine_backend_inference_seconds{model}``
    Time inside ``backend.infer`` per call (failed calls included).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

#: Latency buckets, seconds: 1 ms (a text item's policy stage) to 30 s (a long video's decode).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
#: Batch-size buckets: powers of two up to 1024 rows, one layout for every model so that series
#: aggregate (the shipped models' max_batch_size is 32..256).
BATCH_BUCKETS = tuple(float(2 ** i) for i in range(11))


def outcome_name(future: Future) -> str:
    """``ok`` or the type name of a done future's exception (``CancelledError`` if cancelled)."""
    if future.cancelled():
        return "CancelledError"
    error = future.exception(0)
    return "ok" if error is None else type(error).__name__


class _StageTimer:
    """Times one stage into a histogram child and, optionally, an item's ``timings`` dict (the
    Verdict's per-stage seconds accumulate over chunks, hence ``+=``)."""

    __slots__ = ("_histogram", "_timings", "_key", "_started")

    def __init__(self, histogram, timings: dict[str, float] | None, key: str | None):
        self._histogram, self._timings, self._key = histogram, timings, key

    def __enter__(self) -> "_StageTimer":
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._started
        self._histogram.observe(seconds)
        if self._timings is not None:
            self._timings[self._key] = self._timings.get(self._key, 0.0) + seconds


class _QueueCollector:
    """Scheduler queue depths, read when the registry is collected (no bookkeeping per request)."""

    def __init__(self):
        self._queued: dict[str, Callable[[], int]] = {}

    def watch(self, model: str, queued: Callable[[], int]) -> None:
        self._queued[model] = queued

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("engine_scheduler_queue_depth",
                                   "Requests waiting in a model's batcher", labels=["model"])
        for model, queued in sorted(self._queued.items()):
            family.add_metric([model], float(queued()))
        yield family


class SessionMetrics:
    """The metrics of one Session, in a registry of their own (see the module docstring).

    ``items_waiting`` / ``items_running``: callables giving the item server's current counts.
    """

    def __init__(self, items_waiting: Callable[[], int], items_running: Callable[[], int]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("engine_requests", "Public API calls by outcome",
                                ["method", "outcome"], registry=r)
        self.items = Counter("engine_items", "Moderation items by modality and outcome",
                             ["modality", "outcome"], registry=r)
        self.item_seconds = Histogram("engine_item_seconds", "Item latency, submission to outcome",
                                      ["modality", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("engine_stage_seconds", "Item latency per stage",
                                       ["stage", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("engine_batch_size", "Rows per backend call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.backend_seconds = Histogram("engine_backend_inference_seconds",
                                         "Time inside backend.infer per call", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        Gauge("engine_queue_depth", "Items waiting for an item worker",
              registry=r).set_function(items_waiting)
        Gauge("engine_items_running", "Items on an item worker",
              registry=r).set_function(items_running)
        self._schedulers = _QueueCollector()
        r.register(self._schedulers)
        self._exporters: list[MetricsExporter] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ hooks
    def stage(self, stage: str, model: str = "", timings: dict[str, float] | None = None,
              key: str | None = None) -> _StageTimer:
        """``with metrics.stage("preprocess", timings=t, key="preprocess_s"):`` times the block."""
        return _StageTimer(self.stage_seconds.labels(stage, model), timings, key)

    @contextmanager
    def request(self, method: str) -> Iterator[None]:
        """Counts one API call by how the block ends (an exception's type name, or ok)."""
        outcome = "ok"
        try:
            yield
        except BaseException as e:
            outcome = type(e).__name__
            raise
        finally:
            self.requests.labels(method, outcome).inc()

    def track_item(self, future: Future, item: "ItemLabel") -> None:
        """Counts the item of ``future`` and its end-to-end latency when its outcome is set
        (at once when it already is: an item refused at submission)."""
        def done(f: Future) -> None:
            seconds = time.perf_counter() - item.submitted
            outcome = outcome_name(f)
            self.items.labels(item.modality, outcome).inc()
            self.item_seconds.labels(item.modality, "ok" if outcome == "ok" else "error").observe(seconds)

        future.add_done_callback(done)

    def track_request(self, future: Future, method: str) -> None:
        """Counts an API call whose outcome is a future (``submit``)."""
        future.add_done_callback(lambda f: self.requests.labels(method, outcome_name(f)).inc())

    def backend_call(self, model: str, rows: int, seconds: float) -> None:
        """One ``backend.infer`` call of ``rows`` rows that took ``seconds``."""
        self.batch_size.labels(model).observe(rows)
        self.backend_seconds.labels(model).observe(seconds)

    def watch_scheduler(self, model: str, queued: Callable[[], int]) -> None:
        """Report ``queued()`` as the scheduler queue depth of ``model`` from now on."""
        self._schedulers.watch(model, queued)

    # ------------------------------------------------------------------ reads
    def snapshot(self) -> dict[str, Any]:
        """Current values: unlabelled metrics map name → value, labelled ones name → {label
        values tuple → value}; a histogram's value is ``{"count", "sum", "buckets": {upper
        bound: cumulative count}}`` (upper bounds as floats, ``inf`` last). Counters are named
        with their ``_total`` suffix, as exported."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            if family.type == "histogram":
                out[family.name] = _histogram_values(family)
                continue
            suffix = "_total" if family.type == "counter" else ""
            values = {tuple(s.labels.values()): s.value for s in family.samples
                      if s.name == family.name + suffix}
            unlabelled = list(values) == [()]  # labelled metrics without values yet: {}
            out[family.name + suffix] = values[()] if unlabelled else values
        return out

    def serve(self, port: int = 0, addr: str = "127.0.0.1") -> "MetricsExporter":
        """Start prometheus-client's HTTP exporter of this registry (``port`` 0: any free one)."""
        server, thread = start_http_server(port, addr, registry=self.registry)
        exporter = MetricsExporter(server, thread)
        with self._lock:
            self._exporters.append(exporter)
        return exporter

    def close(self) -> None:
        """Stop the exporters (the values stay readable through :meth:`snapshot`)."""
        with self._lock:
            exporters, self._exporters = self._exporters, []
        for e in exporters:
            e.close()


class ItemLabel:
    """What an item's metrics are labelled with; the pipeline fills in ``modality`` once it has
    routed the item (:func:`label_current_item`, inside :meth:`run`)."""

    __slots__ = ("modality", "submitted")

    def __init__(self):
        self.modality = "unknown"
        self.submitted = time.perf_counter()

    def run(self, fn: Callable[..., Any], *args) -> Any:
        """``fn(*args)`` with this label as the current item's (a context variable, so the
        item function keeps its signature)."""
        token = _current_label.set(self)
        try:
            return fn(*args)
        finally:
            _current_label.reset(token)


_current_label: contextvars.ContextVar[ItemLabel | None] = contextvars.ContextVar(
    "engine_item_label", default=None)


def label_current_item(modality: str) -> None:
    """Set the modality label of the item this thread runs (no-op outside an item: embed)."""
    label = _current_label.get()
    if label is not None:
        label.modality = modality


class MetricsExporter:
    """A running HTTP exporter: ``url`` serves the text format; :meth:`close` stops it."""

    def __init__(self, server, thread: threading.Thread):
        self._server, self._thread = server, thread
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def counted(method: str):
    """Decorator of a Session API method (plain or ``async``): counts its calls in
    ``engine_requests_total`` by outcome (reads the Session's ``_metrics``)."""
    def wrap(fn):
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def call_async(self, *args, **kwargs):
                with self._metrics.request(method):
                    return await fn(self, *args, **kwargs)
            return call_async

        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            with self._metrics.request(method):
                return fn(self, *args, **kwargs)
        return call
    return wrap


def modality_label(video: Any, image: Any, audio: Any, text: Any) -> str:
    """``video+audio+text`` style label of the parts an item has (``none`` if it has none)."""
    parts = [name for name, x in (("video", video), ("image", image), ("audio", audio), ("text", text))
             if x is not None and (name != "text" or x)]
    return "+".join(parts) or "none"


def _histogram_values(family) -> dict[tuple[str, ...], dict[str, Any]]:
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = out.setdefault(tuple(labels.values()), {"count": 0.0, "sum": 0.0, "buckets": {}})
        if s.name.endswith("_bucket"):
            entry["buckets"][float(s.labels["le"])] = s.value
        elif s.name.endswith("_count"):
            entry["count"] = s.value
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
    return out
