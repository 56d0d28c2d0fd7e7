"""The per-model dynamic batcher: concurrent callers' rows share one ``backend.infer`` call.

A request is one caller's dict of input arrays with a leading batch axis of n >= 1 rows (the
frames of one video, the patches of one clip, a list of texts). Requests wait in a bounded
queue per priority level; each model instance (``instance_group`` count) has a worker thread
that takes rows from the queue head, concatenates them into one batch, runs the backend once
and scatters the output rows back to each request's :class:`concurrent.futures.Future`.

Every outcome goes through the future, exactly once: the outputs, or a typed error
(InputError for a malformed request, OverloadedError, DeadlineExceededError, the backend's
error for the batch the request ran in, ModelError after close), or CancelledError when the
caller cancelled it before any of its rows were batched.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from engine.backends.base import Backend, check_inputs
from engine.batching.policy import BatchingPolicy
from engine.errors import (DeadlineExceededError, EngineError, InputError, InternalError,
                           ModelError, OverloadedError)

log = logging.getLogger(__name__)


class _Request:
    """One caller's submission and the bookkeeping of its rows (guarded by the scheduler lock)."""

    __slots__ = ("arrays", "rows", "future", "priority", "seq", "submitted", "deadline",
                 "enqueued", "queue_deadline", "delay_on_timeout", "delayed", "signature",
                 "taken", "done", "parts", "finished")

    def __init__(self, arrays: dict[str, np.ndarray], rows: int, future: Future, priority: int,
                 deadline: float | None, seq: int):
        self.arrays, self.rows, self.future, self.priority = arrays, rows, future, priority
        self.seq = seq
        self.submitted = time.monotonic()
        self.deadline = deadline  # the caller's; passing it always fails the request
        self.enqueued = self.submitted
        self.queue_deadline: float | None = None  # the queue policy's timeout
        self.delay_on_timeout = False
        self.delayed = False  # timed out under a DELAY policy: served after everything else
        # Only rows of equal trailing shapes and dtypes can be concatenated into one batch.
        self.signature = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in arrays.items()))
        self.taken = 0  # rows already put into batches
        self.done = 0  # rows whose outputs came back
        self.parts: list[tuple[int, dict[str, np.ndarray]]] = []  # (first row, outputs)
        self.finished = False  # outcome decided (the future is or is about to be resolved)


_Part = tuple[_Request, int, int]  # request, first row, end row: one slice of a batch


@dataclass(frozen=True)
class BatchStats:
    """What a scheduler has run so far: backend calls, the request parts and rows in them, the
    most rows in one call. ``requests > batches`` means some batch held rows of several requests."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest: int = 0


class Scheduler:
    """Dynamic batcher of one model.

    Parameters
    ----------
    backend:
        The model's backend, shared by every instance (ONNX Runtime and scikit-learn runs are
        thread-safe), or one backend per instance (``policy.instance_count`` of them).
    policy:
        How batches are formed (:meth:`BatchingPolicy.from_config`); default: unbatched, one
        instance.

    on_batch:
        Called on the worker after every backend call with (rows, seconds): the metrics hook
        (:mod:`engine.metrics`); failed batches included.

    Use :meth:`from_config` to build one from a model's config.pbtxt. ``close()`` (or leaving a
    ``with`` block) runs or fails every queued request and stops the workers.
    """

    def __init__(self, backend: Backend | Sequence[Backend], policy: BatchingPolicy | None = None,
                 *, on_batch: Callable[[int, float], None] | None = None):
        backends = list(backend) if isinstance(backend, Sequence) else None
        first = backends[0] if backends else backend
        self.policy = policy or BatchingPolicy(first.model_name, first.max_batch_size)
        if backends is None:
            backends = [backend] * self.policy.instance_count
        if len(backends) != self.policy.instance_count:
            raise ModelError(f"{self.policy.model}: {len(backends)} backends for "
                             f"{self.policy.instance_count} instances")
        if first.max_batch_size != self.policy.max_batch_size:
            raise ModelError(f"{self.policy.model}: backend max_batch_size {first.max_batch_size} "
                             f"!= policy max_batch_size {self.policy.max_batch_size}")
        self.model = self.policy.model
        self._specs = first.inputs
        self._cond = threading.Condition()
        self._queues: list[list[_Request]] = [[] for _ in range(self.policy.priority_levels)]
        self._seq = itertools.count()
        self._closed = False
        self._stats = BatchStats()
        self._on_batch = on_batch
        self._workers = [threading.Thread(target=self._serve, args=(b,), daemon=True,
                                          name=f"batcher-{self.model}-{i}")
                         for i, b in enumerate(backends)]
        for w in self._workers:
            w.start()

    @classmethod
    def from_config(cls, backend: Backend, config, path="<config>") -> "Scheduler":
        """The scheduler ``config`` (a parsed ModelConfig) describes, running ``backend``."""
        return cls(backend, BatchingPolicy.from_config(config, path))

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Scheduler {self.model} {self.policy}>"

    # ------------------------------------------------------------------ callers
    def submit(self, inputs: Mapping[str, object], *, priority: int | None = None,
               timeout: float | None = None, block: bool = False) -> Future:
        """Queue one request; returns the future of its outputs (never raises for the request).

        ``priority``: 1 (highest) .. ``policy.priority_levels``; None = the config's default.
        ``timeout``: seconds from now by which the request's first rows must start running, else
        DeadlineExceededError. ``block``: when the queue is full, wait for room until the
        timeout (like ``queue.Queue.put``) instead of failing with OverloadedError at once.
        """
        future: Future = Future()
        try:
            request = self._request(inputs, priority, timeout, future)
            with self._cond:
                self._enqueue_locked(request, block)
        except EngineError as e:
            future.set_exception(e)
            return future
        future.add_done_callback(lambda f: self._forget_cancelled(request) if f.cancelled() else None)
        return future

    def infer(self, inputs: Mapping[str, object], **kwargs) -> dict[str, np.ndarray]:
        """``submit(inputs, **kwargs).result()``: outputs, or the request's error raised."""
        return self.submit(inputs, **kwargs).result()

    def queued(self) -> int:
        """Requests waiting (partly batched ones included)."""
        with self._cond:
            return sum(len(q) for q in self._queues)

    def stats(self) -> BatchStats:
        """Batches run so far (failed ones included)."""
        with self._cond:
            return self._stats

    def close(self, drain: bool = True) -> None:
        """Stop taking requests; run the queued ones (``drain``) or fail them with ModelError,
        then stop the workers. Nothing queued is dropped without an outcome."""
        failed: list[_Request] = []
        with self._cond:
            self._closed = True
            if not drain:
                for queue in self._queues:
                    for r in list(queue):
                        if r.taken == 0:  # requests already running finish their remaining rows
                            queue.remove(r)
                            if self._claim_locked(r):
                                failed.append(r)
            self._cond.notify_all()
        for r in failed:
            r.future.set_exception(ModelError(f"{self.model}: scheduler closed before the request ran"))
        for w in self._workers:
            if w is not threading.current_thread():
                w.join()

    # ------------------------------------------------------------------ queue
    def _request(self, inputs, priority, timeout, future) -> _Request:
        batched = self.policy.max_batch_size > 0
        arrays, rows = check_inputs(self.model, self._specs, inputs, self.policy.max_batch_size)
        if batched and rows == 0:
            raise InputError(f"{self.model}: a request needs at least one row")
        if priority is None:
            priority = self.policy.default_priority
        elif not (isinstance(priority, (int, np.integer)) and 1 <= priority <= self.policy.priority_levels):
            raise InputError(f"{self.model}: priority {priority!r} is outside "
                             f"1..{self.policy.priority_levels}")
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError(f"{self.model}: the request's deadline passed before submit")
        deadline = None if timeout is None else time.monotonic() + timeout
        # A model without a batch axis takes one request per call: count it as one row.
        return _Request(arrays, rows if batched else 1, future, int(priority), deadline, next(self._seq))

    def _enqueue_locked(self, request: _Request, block: bool) -> None:
        queue = self._queues[request.priority - 1]
        queue_policy = self.policy.queue(request.priority)
        while True:
            if self._closed:
                raise ModelError(f"{self.model}: scheduler is closed")
            if len(queue) < queue_policy.max_queue_size:
                break
            left = None if request.deadline is None else request.deadline - time.monotonic()
            if not block or (left is not None and left <= 0):
                raise OverloadedError(
                    f"{self.model}: queue of priority {request.priority} is full "
                    f"({queue_policy.max_queue_size} requests)"
                    + (" until the request's deadline" if block else ""))
            self._cond.wait(left)
        request.enqueued = time.monotonic()
        if queue_policy.timeout_s is not None:
            request.queue_deadline = request.enqueued + queue_policy.timeout_s
            request.delay_on_timeout = queue_policy.delay_on_timeout
        queue.append(request)
        self._cond.notify_all()

    def _forget_cancelled(self, request: _Request) -> None:
        with self._cond:
            queue = self._queues[request.priority - 1]
            if request in queue:
                queue.remove(request)
                self._cond.notify_all()  # room for a blocked submitter

    def _remove_locked(self, request: _Request) -> None:
        self._queues[request.priority - 1].remove(request)
        self._cond.notify_all()

    @staticmethod
    def _claim_locked(request: _Request) -> bool:
        """Move a request's future to RUNNING (then callers can no longer cancel it); False if
        the caller cancelled it first. Every outcome but cancellation starts with this."""
        if request.taken or request.finished:
            return True
        return request.future.set_running_or_notify_cancel()

    # ------------------------------------------------------------------ workers
    def _serve(self, backend: Backend) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(backend, batch)

    def _next_batch(self) -> list[_Part] | None:
        """Block until a batch is due; None once closed and nothing is left."""
        while True:
            with self._cond:
                now = time.monotonic()
                expired = self._expire_locked(now)
                if not expired:
                    batch, wake_at = self._take_locked(now)
                    if batch:
                        return batch
                    if batch is None:
                        if self._closed and not any(self._queues):
                            return None
                        self._cond.wait(None if wake_at is None else max(wake_at - now, 0.0))
                    continue
            for request, error in expired:  # outside the lock: callbacks may call submit
                request.future.set_exception(error)

    def _expire_locked(self, now: float) -> list[tuple[_Request, EngineError]]:
        """Requests whose deadline passed before any of their rows ran."""
        expired = []
        for queue in self._queues:
            for r in list(queue):
                if r.taken:
                    continue
                if r.deadline is not None and now >= r.deadline:
                    why = "its deadline"
                elif r.queue_deadline is not None and not r.delayed and now >= r.queue_deadline:
                    if r.delay_on_timeout:
                        r.delayed = True
                        continue
                    why = "the queue policy's timeout"
                else:
                    continue
                self._remove_locked(r)
                if self._claim_locked(r):
                    r.finished = True
                    expired.append((r, DeadlineExceededError(
                        f"{self.model}: request of {r.rows} row(s) waited "
                        f"{(now - r.submitted) * 1e3:.1f} ms in the queue, past {why}")))
        return expired

    def _take_locked(self, now: float) -> tuple[list[_Part] | None, float | None]:
        """(the batch to run now, None) or (None, when to look again: None = when notified).
        An empty batch means every request picked was cancelled: look again at once."""
        waiting = [r for q in self._queues for r in q]
        if not waiting:
            return None, None
        waiting.sort(key=lambda r: (r.delayed, r.priority, r.seq))
        head = waiting[0]
        if not self.policy.dynamic:
            self._remove_locked(head)
            return ([(head, 0, head.rows)] if self._claim_locked(head) else []), None
        group = [r for r in waiting if r.signature == head.signature]
        pending = sum(r.rows - r.taken for r in group)
        due = min(r.enqueued for r in group) + self.policy.max_queue_delay_s
        if pending < self.policy.target_batch_size and now < due and not self._closed:
            return None, min([due] + _deadlines(waiting))
        boundaries = set(itertools.accumulate(r.rows - r.taken for r in group))
        size = self.policy.batch_size_for(pending, boundaries)
        batch: list[_Part] = []
        filled = 0
        for r in group:
            if filled == size:
                break
            if not self._claim_locked(r):  # cancelled: its rows are never run
                self._remove_locked(r)
                continue
            n = min(r.rows - r.taken, size - filled)
            batch.append((r, r.taken, r.taken + n))
            r.taken += n
            filled += n
            if r.taken == r.rows:
                self._remove_locked(r)
        return batch, None

    def _run(self, backend: Backend, batch: list[_Part]) -> None:
        rows = sum(end - start for _, start, end in batch)
        error: EngineError | None = None
        outputs: dict[str, np.ndarray] = {}
        started = time.perf_counter()
        try:
            outputs = backend.infer(_gather(batch))
            if not _whole_request(batch):
                bad = {k: v.shape for k, v in outputs.items() if np.ndim(v) == 0 or len(v) != rows}
                if bad:
                    raise InternalError(f"{self.model}: outputs {bad} do not have {rows} rows")
        except EngineError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a backend bug fails this batch, not the worker
            log.exception("%s: batch of %d rows failed", self.model, rows)
            error = InternalError(f"{type(e).__name__}: {e}")
            error.__cause__ = e
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - started)
        resolved = self._scatter(batch, outputs, error)
        for r, err in resolved:  # outside the lock: callbacks may call submit
            if err is not None:
                r.future.set_exception(err)
            else:
                r.future.set_result(_assemble(r))

    def _scatter(self, batch: list[_Part], outputs: dict[str, np.ndarray],
                 error: EngineError | None) -> list[tuple[_Request, EngineError | None]]:
        """Record each part's output rows; the requests now complete (or failed) with their error."""
        whole = _whole_request(batch)
        resolved = []
        offset = 0
        with self._cond:
            batch_rows = sum(end - start for _, start, end in batch)
            st = self._stats
            self._stats = BatchStats(st.batches + 1, st.requests + len(batch),
                                     st.rows + batch_rows, max(st.largest, batch_rows))
            for r, start, end in batch:
                n = end - start
                if r.finished:  # another part of it already failed
                    offset += n
                    continue
                if error is not None:
                    r.finished = True
                    if r in self._queues[r.priority - 1]:  # rows not yet batched are dropped
                        self._remove_locked(r)
                    resolved.append((r, error))
                    continue
                rows = outputs if whole else {k: v[offset:offset + n] for k, v in outputs.items()}
                r.parts.append((start, rows))
                r.done += n
                offset += n
                if r.done == r.rows:
                    r.finished = True
                    resolved.append((r, None))
        return resolved


def _deadlines(requests: list[_Request]) -> list[float]:
    """The times at which a waiting request expires (or is delayed): a worker must look then."""
    out = []
    for r in requests:
        if r.taken == 0:
            if r.deadline is not None:
                out.append(r.deadline)
            if r.queue_deadline is not None and not r.delayed:
                out.append(r.queue_deadline)
    return out


def _whole_request(batch: list[_Part]) -> bool:
    """One request's rows, all of them: its inputs go to the backend and back untouched (the
    only case for a model without a batch axis, whose outputs have no rows to slice)."""
    return len(batch) == 1 and batch[0][1] == 0 and batch[0][2] == batch[0][0].rows


def _gather(batch: list[_Part]) -> dict[str, np.ndarray]:
    if _whole_request(batch):
        return batch[0][0].arrays
    names = batch[0][0].arrays.keys()
    # object (text) arrays concatenate like numeric ones
    return {k: np.concatenate([r.arrays[k][start:end] for r, start, end in batch], axis=0)
            for k in names}


def _assemble(request: _Request) -> dict[str, np.ndarray]:
    if len(request.parts) == 1:
        return request.parts[0][1]
    parts = [rows for _, rows in sorted(request.parts, key=lambda p: p[0])]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
