"""Concurrent serving of moderation items: admission queue, item workers, deadlines, close.

:meth:`engine.Session.submit` hands an item to an :class:`ItemServer`; one of its worker threads
runs it through the Session's pipeline (decode, preprocess, model calls, pooling, policy
scoring). Stages of different items overlap: PyAV decoding, the native preprocessing kernels
and ONNX Runtime all release the GIL, so while one worker decodes a video another item's frames
are in the model, and model calls of concurrent items meet in the per-model batchers
(:mod:`engine.batching`).

Every submitted item gets exactly one outcome through its :class:`concurrent.futures.Future`:
the Verdict, its typed error (unexpected exceptions as InternalError), OverloadedError (the
admission queue was full), DeadlineExceededError (the item's deadline passed: it is failed at
that moment, queued or running), CancelledError (cancelled before it started, or abandoned by
:meth:`ItemServer.abandon` while running), or ModelError once the server is closed.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

import numpy as np

from engine.errors import (DeadlineExceededError, EngineError, InputError, InternalError, ModelError,
                           OverloadedError)

log = logging.getLogger(__name__)

#: Items the admission queue holds by default (waiting, not yet running).
DEFAULT_MAX_QUEUED = 1024


class _Item:
    """One submitted item and the state of its outcome (guarded by the server's lock)."""

    __slots__ = ("run", "future", "priority", "seq", "submitted", "deadline", "started",
                 "resolved", "abandoned")

    def __init__(self, run: Callable[[], Any], future: Future, priority: int, seq: int,
                 deadline: float | None):
        self.run, self.future, self.priority, self.seq = run, future, priority, seq
        self.submitted = time.monotonic()
        self.deadline = deadline
        self.started = False  # a worker took it
        self.resolved = False  # its outcome is decided (the future is or is about to be set)
        self.abandoned = False  # stop at the next stage boundary: nobody wants the result

    def __lt__(self, other: "_Item") -> bool:  # heap order: priority, then arrival
        return (self.priority, self.seq) < (other.priority, other.seq)


# The item the current worker thread is running (for stage checks deep inside the pipeline).
_current: contextvars.ContextVar[_Item | None] = contextvars.ContextVar("engine_item", default=None)


def checkpoint() -> float | None:
    """Called between an item's stages: raises CancelledError if the item was abandoned (its
    outcome is already decided: deadline passed or caller gone), else returns the seconds left
    before its deadline (None: no deadline, or not called from an item)."""
    item = _current.get()
    if item is None:
        return None
    if item.abandoned:
        raise CancelledError("item abandoned")
    return None if item.deadline is None else item.deadline - time.monotonic()


def inside_item() -> bool:
    """True on a worker thread while it runs an item (a nested synchronous call runs inline)."""
    return _current.get() is not None


class ItemServer:
    """Runs submitted callables on ``workers`` threads, highest priority (lowest number) first.

    Parameters
    ----------
    workers:
        Item threads. Each runs one item at a time; the stages that do the heavy work release
        the GIL, so more workers than cores keep the cores busy while items wait on models.
    max_queued:
        Items that may wait for a worker; one more fails at once with OverloadedError (or, with
        ``block=True``, waits for room until its deadline).
    name:
        Prefix of the worker thread names.
    """

    def __init__(self, workers: int, max_queued: int = DEFAULT_MAX_QUEUED, name: str = "item"):
        if workers < 1 or max_queued < 1:
            raise ValueError("workers and max_queued must be >= 1")
        self.workers, self.max_queued = workers, max_queued
        # One lock, three wait queues, so that each change wakes only whom it concerns.
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle workers wait here for items
        self._room = threading.Condition(lock)  # blocked submitters wait for queue room
        self._watch = threading.Condition(lock)  # the deadline watcher waits for changes
        self._queue: list[_Item] = []  # heap; cancelled items leave it lazily
        self._waiting = 0  # queued items still to run (the admission bound counts these)
        self._queue_dropped = False  # close(drain=False) failed the queued items
        self._running: set[_Item] = set()
        self._deadlines: list[tuple[float, int, _Item]] = []  # heap of items with a deadline
        self._seq = itertools.count()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"{name}-{i}")
                         for i in range(workers)]
        self._threads.append(threading.Thread(target=self._watch_deadlines, daemon=True,
                                              name=f"{name}-deadlines"))
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ callers
    def submit(self, run: Callable[[], Any], *, deadline: float | None = None, priority: int = 1,
               block: bool = False) -> Future:
        """Queue ``run`` (called on a worker; its return value is the result); never raises for
        the item: every failure, this call's own included, is the future's outcome.

        ``deadline``: seconds from now; when it passes the item fails with DeadlineExceededError
        (queued: it never runs; running: it stops at its next stage). ``block``: when the queue
        is full, wait for room (until the deadline) instead of failing with OverloadedError.
        """
        future: Future = Future()
        try:
            if not isinstance(priority, (int, np.integer)) or isinstance(priority, bool):
                raise InputError(f"priority must be an integer, got {priority!r}")
            if deadline is not None and deadline <= 0:
                raise DeadlineExceededError("the item's deadline passed before submit")
            at = None if deadline is None else time.monotonic() + deadline
            item = _Item(run, future, int(priority), next(self._seq), at)
            with self._cond:
                self._admit_locked(item, block)
        except EngineError as e:
            future.set_exception(e)
            return future
        future.add_done_callback(lambda f: self._forget_cancelled() if f.cancelled() else None)
        return future

    def abandon(self, future: Future) -> bool:
        """Cancel the item of ``future``: a queued item never runs, a running one stops at its
        next stage with CancelledError. False if its outcome was already decided."""
        if future.cancel():
            return True
        with self._cond:
            item = next((i for i in self._running if i.future is future), None)
            if item is None or item.resolved:
                return False
            item.resolved = item.abandoned = True
        future.set_exception(CancelledError("cancelled while running"))
        return True

    def busy(self) -> bool:
        """More than one item running: a model call may find company in a batch (a queued
        item cannot: its rows come only once a worker takes it)."""
        with self._cond:
            return len(self._running) > 1

    def on_own_thread(self) -> bool:
        """True on one of this server's threads (a worker running an item or its callbacks)."""
        return threading.current_thread() in self._threads

    @property
    def closed(self) -> bool:
        """New items are refused (close() was called; queued ones may still be finishing)."""
        with self._cond:
            return self._closed

    def queued(self) -> int:
        """Items waiting for a worker."""
        with self._cond:
            return self._waiting

    def running(self) -> int:
        """Items on a worker."""
        with self._cond:
            return len(self._running)

    def pending(self) -> int:
        """Items queued or running."""
        with self._cond:
            return self._waiting + len(self._running)

    def close(self, drain: bool = True) -> None:
        """Refuse new items (ModelError), run the queued ones (``drain``) or fail them with
        ModelError, let running ones finish, then stop the threads. Idempotent."""
        failed: list[_Item] = []
        with self._cond:
            self._closed = True
            if not drain:
                while self._queue:
                    item = heapq.heappop(self._queue)
                    if self._start_locked(item):
                        item.resolved = True
                        failed.append(item)
                self._waiting = 0
                self._queue_dropped = True  # a cancelled item's late callback finds nothing to uncount
            for cond in (self._cond, self._room, self._watch):
                cond.notify_all()
        for item in failed:
            item.future.set_exception(ModelError("session closed before the item ran"))
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    # ------------------------------------------------------------------ queue
    def _admit_locked(self, item: _Item, block: bool) -> None:
        while True:
            if self._closed:
                raise ModelError("session closed")
            if self._waiting < self.max_queued:
                break
            left = None if item.deadline is None else item.deadline - time.monotonic()
            if not block or (left is not None and left <= 0):
                raise OverloadedError(f"admission queue is full ({self.max_queued} items)"
                                      + (" until the item's deadline" if block else ""))
            self._room.wait(left)
        heapq.heappush(self._queue, item)
        self._waiting += 1
        if item.deadline is not None:
            heapq.heappush(self._deadlines, (item.deadline, item.seq, item))
            self._watch.notify()
        self._cond.notify()  # one idle worker

    @staticmethod
    def _start_locked(item: _Item) -> bool:
        """Move a queued item's future to RUNNING; False if its outcome is decided already
        (expired) or the caller cancelled it. A cancelled item is then marked resolved: the
        worker that pops it from the heap and the deadline watcher both meet it, and
        ``set_running_or_notify_cancel`` raises RuntimeError on a second call (it killed
        whichever thread came second, and with a worker every later item stayed pending)."""
        if item.resolved:
            return False
        if not item.future.set_running_or_notify_cancel():
            item.resolved = True
            return False
        return True

    def _forget_cancelled(self) -> None:
        # A cancelled item stays in the heap until popped, but no longer counts as waiting.
        with self._cond:
            if self._queue_dropped:  # close(drain=False) uncounted every queued item at once
                return
            self._waiting -= 1
            self._room.notify()

    def _take(self) -> _Item | None:
        """The next item to run, moved to RUNNING; None once closed and drained."""
        with self._cond:
            while True:
                while self._queue:
                    item = heapq.heappop(self._queue)
                    if not self._start_locked(item):
                        continue  # expired (counted already) or cancelled (counted by its callback)
                    self._waiting -= 1
                    item.started = True
                    self._running.add(item)
                    self._room.notify()
                    return item
                if self._closed:
                    return None
                self._cond.wait()

    # ------------------------------------------------------------------ workers
    def _work(self) -> None:
        while (item := self._take()) is not None:
            token = _current.set(item)
            try:
                result, error = item.run(), None
            except CancelledError as e:
                if item.abandoned:  # stopped at a checkpoint: its outcome is already set
                    result, error = None, None
                else:
                    result, error = None, InternalError(f"CancelledError: {e}")
            except EngineError as e:
                result, error = None, e
            except Exception as e:  # noqa: BLE001 - one item's bug must not sink the worker
                log.exception("unexpected failure of an item")
                result, error = None, InternalError(f"{type(e).__name__}: {e}")
                error.__cause__ = e
            finally:
                _current.reset(token)
                item.run = None  # the deadline heap may hold the item a while: not its media
            with self._cond:
                self._running.discard(item)
                mine = not item.resolved
                item.resolved = True
                if self._closed:
                    self._watch.notify()  # it stops once nothing is pending
            if mine:  # outside the lock: callbacks may submit
                if error is not None:
                    item.future.set_exception(error)
                else:
                    item.future.set_result(result)

    def _watch_deadlines(self) -> None:
        """Fail each item at its deadline, queued or running (no polling: sleeps until the
        earliest deadline or until a new one is added)."""
        with self._cond:
            while True:
                now = time.monotonic()
                expired = []
                while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][2].resolved):
                    _, _, item = heapq.heappop(self._deadlines)
                    if item.resolved:
                        continue
                    if not item.started:
                        if not self._start_locked(item):
                            continue  # cancelled meanwhile: its callback counted it
                        self._waiting -= 1
                        self._room.notify()
                    item.resolved = item.abandoned = True
                    expired.append(item)
                if expired:
                    self._cond.release()
                    try:  # outside the lock: callbacks may submit
                        for item in expired:
                            item.future.set_exception(DeadlineExceededError(
                                f"item missed its deadline after "
                                f"{now - item.submitted:.3f} s ({'running' if item.started else 'queued'})"))
                    finally:
                        self._cond.acquire()
                    continue
                if self._closed and not self._waiting and not self._running:
                    return
                self._watch.wait(self._deadlines[0][0] - now if self._deadlines else None)
