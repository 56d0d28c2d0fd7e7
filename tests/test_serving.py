"""Concurrent serving (engine.serving, Session.submit / moderate_async / close).

The ItemServer tests drive plain callables held at a gate, so the queue is in a known state when
a test looks at it; the Session tests run the real models under 64 concurrent threads and
asyncio tasks and compare every verdict with the same item through plain ``moderate``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path

import numpy as np
import pytest

from engine import errors
from engine.batching import BatchingPolicy, Scheduler
from engine.serving import ItemServer, checkpoint

from media_factory import clip

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
WAIT = 120.0  # seconds a test waits for any one outcome before calling it a hang (64 queued
# items on a loaded 2-core machine took over 30 s)


def outcome(future: Future):
    """("ok", result) or ("error", exception) of a done future; exactly one of them."""
    assert future.done()
    error = future.exception(0)
    return ("error", error) if error is not None else ("ok", future.result(0))


class Gate:
    """A callable item that blocks until opened; ``started`` is set once a worker runs it."""

    def __init__(self):
        self.started, self.opened = threading.Event(), threading.Event()

    def __call__(self):
        self.started.set()
        assert self.opened.wait(WAIT)
        return "gate"


def occupied(server: ItemServer) -> Gate:
    """Hold the server's only worker inside an item, so that later items stay queued."""
    gate = Gate()
    server.submit(gate)
    assert gate.started.wait(WAIT)
    return gate


# ------------------------------------------------------------------ ItemServer


def test_results_errors_and_bugs_each_give_one_outcome():
    def fail():
        raise errors.CorruptMediaError("bad bytes")

    def bug():
        raise KeyError("oops")

    server = ItemServer(workers=2)
    futures = [server.submit(lambda: 42), server.submit(fail), server.submit(bug)]
    server.close()
    assert outcome(futures[0]) == ("ok", 42)
    assert isinstance(outcome(futures[1])[1], errors.CorruptMediaError)
    kind, error = outcome(futures[2])
    assert isinstance(error, errors.InternalError) and "KeyError" in str(error)


def test_full_admission_queue_overloads_at_once_or_waits_for_room():
    server = ItemServer(workers=1, max_queued=2)
    gate = occupied(server)
    queued = [server.submit(lambda i=i: i) for i in range(2)]
    started = time.monotonic()
    refused = server.submit(lambda: "never")
    assert refused.done() and isinstance(refused.exception(0), errors.OverloadedError)
    waited = server.submit(lambda: "never", deadline=0.2, block=True)  # still full at its deadline
    assert isinstance(waited.exception(WAIT), errors.OverloadedError)
    assert time.monotonic() - started >= 0.19
    admitted: list[Future] = []
    blocked = threading.Thread(target=lambda: admitted.append(server.submit(lambda: "late", block=True)))
    blocked.start()
    time.sleep(0.05)
    assert not admitted  # no room yet
    gate.opened.set()  # the worker takes a queued item: room for the blocked submitter
    blocked.join(WAIT)
    assert [f.result(WAIT) for f in queued + admitted] == [0, 1, "late"]
    server.close()


def test_deadline_fails_a_queued_item_at_its_deadline_and_it_never_runs():
    server = ItemServer(workers=1)
    gate = occupied(server)
    ran = threading.Event()
    started = time.monotonic()
    future = server.submit(ran.set, deadline=0.1)
    with pytest.raises(errors.DeadlineExceededError, match="queued"):
        future.result(WAIT)
    assert 0.09 <= time.monotonic() - started < 5  # failed while the worker was still busy
    assert not gate.opened.is_set()
    gate.opened.set()
    server.close()
    assert not ran.is_set() and server.pending() == 0
    assert isinstance(server.submit(lambda: 1, deadline=0).exception(0), errors.DeadlineExceededError)
    assert isinstance(server.submit(lambda: 1, priority="high").exception(0), errors.InputError)


def test_deadline_fails_a_running_item_which_stops_at_its_next_stage():
    stages: list[int] = []

    def long_item():
        for i in range(1000):
            checkpoint()  # raises once the item is abandoned
            stages.append(i)
            time.sleep(0.01)
        return "finished"

    server = ItemServer(workers=1)
    future = server.submit(long_item, deadline=0.15)
    with pytest.raises(errors.DeadlineExceededError, match="running"):
        future.result(WAIT)
    server.close()  # returns once the worker left the item
    done = len(stages)
    assert 3 <= done < 100
    time.sleep(0.05)
    assert len(stages) == done


def test_cancel_a_queued_item_or_abandon_a_running_one():
    server = ItemServer(workers=1)
    gate = occupied(server)
    ran = threading.Event()
    queued = server.submit(ran.set)
    assert queued.cancel() and server.pending() == 1  # only the gate is left

    progress = threading.Event()

    def running_item():
        while True:
            checkpoint()
            progress.set()
            time.sleep(0.01)

    running = server.submit(running_item)
    gate.opened.set()
    assert progress.wait(WAIT)
    assert running.cancel() is False  # concurrent.futures cannot cancel a running future
    assert server.abandon(running)
    with pytest.raises(CancelledError):
        running.result(WAIT)
    assert server.abandon(running) is False  # its outcome is decided
    server.close()
    assert not ran.is_set() and server.pending() == 0


@pytest.fixture
def thread_deaths(monkeypatch) -> list:
    """The uncaught exceptions of threads (threading.excepthook's arguments) during a test."""
    died: list = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    return died


@pytest.mark.parametrize("first", ["deadline", "worker"])
def test_cancelled_queued_item_with_a_deadline_leaves_worker_and_watcher_alive(first, thread_deaths):
    # The worker popping the cancelled item from the heap and the deadline watcher both meet it;
    # whichever came second used to call set_running_or_notify_cancel() again and die of its
    # RuntimeError (a dead worker left every later item pending).
    server = ItemServer(workers=1)
    gate = occupied(server)
    ran = threading.Event()
    cancelled = server.submit(ran.set, deadline=0.1)
    assert cancelled.cancel()
    if first == "deadline":
        time.sleep(0.3)  # the watcher notifies the cancellation at the deadline
        gate.opened.set()
    else:
        gate.opened.set()
        assert server.submit(lambda: "next").result(WAIT) == "next"  # the worker popped it
        time.sleep(0.3)  # then its deadline passes
    assert server.submit(lambda: "later").result(WAIT) == "later"
    assert all(t.is_alive() for t in server._threads)
    gate2 = occupied(server)
    expiring = server.submit(lambda: "never", deadline=0.1)  # the watcher still fails items
    assert isinstance(expiring.exception(WAIT), errors.DeadlineExceededError)
    gate2.opened.set()
    server.close()
    assert not ran.is_set() and server.pending() == 0 and cancelled.cancelled()
    assert not thread_deaths, [a.exc_value for a in thread_deaths]


@pytest.mark.parametrize("first", ["deadline", "close"])
def test_close_without_drain_after_a_cancelled_item_with_a_deadline(first, thread_deaths):
    server = ItemServer(workers=1)
    gate = occupied(server)
    cancelled = server.submit(lambda: "never", deadline=0.1)
    queued = server.submit(lambda: "queued")
    assert cancelled.cancel()
    if first == "deadline":
        time.sleep(0.3)
    closer = threading.Thread(target=server.close, args=(False,))
    closer.start()
    give_up = time.monotonic() + WAIT
    while not server.closed and time.monotonic() < give_up:
        time.sleep(0.001)
    time.sleep(0.3)  # past the deadline in both orders
    gate.opened.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert isinstance(queued.exception(0), errors.ModelError)
    assert not any(t.is_alive() for t in server._threads)
    assert not thread_deaths, [a.exc_value for a in thread_deaths]  # the watcher ended, it did not die


def test_a_cancel_whose_callback_runs_after_close_without_drain_neither_hangs_nor_counts_below_zero(monkeypatch):
    server = ItemServer(workers=1, max_queued=4, name="t")
    gate = occupied(server)
    queued = server.submit(lambda: "never")
    late, forget = [], server._forget_cancelled
    monkeypatch.setattr(server, "_forget_cancelled", lambda: late.append(1))
    assert queued.cancel() and late == [1]  # the callback is held back, as when it waits for the lock
    closing = threading.Thread(target=server.close, kwargs={"drain": False}, daemon=True)  # a hang must not hold pytest
    closing.start()
    while not server.closed:
        time.sleep(0.001)
    forget()  # the callback's turn comes after close(drain=False) dropped the queue
    assert server.queued() == 0
    gate.opened.set()
    closing.join(10)
    assert not closing.is_alive() and server.queued() == 0  # at -1 the deadline watcher never stopped: close hung


def test_priorities_order_the_queue():
    server = ItemServer(workers=1)
    gate = occupied(server)
    order: list[str] = []
    futures = [server.submit(lambda n=n: order.append(n), priority=p)
               for n, p in [("low-1", 2), ("high-1", 1), ("low-2", 2), ("high-2", 1)]]
    gate.opened.set()
    for f in futures:
        f.result(WAIT)
    assert order == ["high-1", "high-2", "low-1", "low-2"]
    server.close()


@pytest.mark.parametrize("drain", [True, False])
def test_close_finishes_or_fails_every_pending_item(drain):
    server = ItemServer(workers=1)
    gate = occupied(server)
    queued = [server.submit(lambda i=i: i) for i in range(20)]
    closer = threading.Thread(target=server.close, args=(drain,))
    closer.start()
    give_up = time.monotonic() + WAIT
    while not server.closed and time.monotonic() < give_up:
        time.sleep(0.001)
    late = server.submit(lambda: "late")
    with pytest.raises(errors.ModelError, match="session closed"):
        late.result(0)
    gate.opened.set()
    closer.join(WAIT)
    assert not closer.is_alive() and server.pending() == 0
    outcomes = [outcome(f) for f in queued]  # each done: outcome() asserts it
    if drain:
        assert outcomes == [("ok", i) for i in range(20)]
    else:
        assert all(k == "error" and isinstance(e, errors.ModelError) for k, e in outcomes)
    server.close()  # idempotent
    assert not any(t.is_alive() for t in server._threads)


def test_scheduler_stats_count_shared_batches():
    class Echo:
        name, model_name, max_batch_size = "fake", "echo", 8
        inputs = outputs = []

        def infer(self, inputs):
            return {"y": inputs["x"] * 2}

    from engine.backends import TensorSpec

    backend = Echo()
    backend.inputs = backend.outputs = [TensorSpec("x", np.dtype(np.float32), (1,))]
    policy = BatchingPolicy("echo", 8, dynamic=True, preferred_batch_sizes=(4,), max_queue_delay_s=1.0)
    with Scheduler(backend, policy) as s:
        futures = [s.submit({"x": np.full((2, 1), i, np.float32)}) for i in range(2)]
        for i, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(WAIT)["y"], np.full((2, 1), 2 * i))
        stats = s.stats()
    assert (stats.batches, stats.requests, stats.rows, stats.largest) == (1, 2, 4, 4)


# ------------------------------------------------------------------ Session, real models


@pytest.fixture(scope="module")
def session(model_repo):
    from engine import Session

    with Session(model_repo.path, workers=4) as s:
        s.warmup()
        yield s


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Mixed items (name -> item) and, for the corrupt one, the same bytes reachable by path."""
    corrupt = tmp_path_factory.mktemp("serving") / "truncated.mp4"
    corrupt.write_bytes((SAMPLES / "clip_tone.mp4").read_bytes()[:3000])
    return {
        "video": {"media": SAMPLES / "clip_tone.mp4", "text": "a caption"},
        "generated": {"video": clip(width=160, height=96, fps=10, duration=3.0, gop=10, audio=True)},
        "image": {"image": SAMPLES / "image.jpg"},
        "png": SAMPLES / "image.png",
        "audio": {"audio": SAMPLES / "speech.m4a"},
        "threat": {"text": ["have a lovely day", "I am going to kill you"]},
        "text": {"text": "you are a damn idiot"},
        "corrupt": {"video": corrupt},
    }


@pytest.fixture(scope="module")
def references(session, items):
    """Each item through plain ``moderate``, alone: its Verdict, or the error it raised."""
    refs = {}
    for name, item in items.items():
        kwargs = dict(item) if isinstance(item, dict) else {"media": item}
        try:
            refs[name] = session.moderate(kwargs.pop("media", None), **kwargs)
        except errors.EngineError as e:
            refs[name] = e
    assert isinstance(refs["corrupt"], errors.MediaError)
    assert all(not isinstance(r, Exception) for n, r in refs.items() if n != "corrupt")
    return refs


def check_same(result, reference) -> None:
    """A concurrent item's outcome equals the one it got alone."""
    if isinstance(reference, Exception):
        assert type(result) is type(reference), result
        return
    assert not isinstance(result, BaseException), result
    assert list(result.policies) == list(reference.policies)
    assert result.sampled_timestamps == reference.sampled_timestamps
    for name, ref in reference.policies.items():
        got = result.policies[name]
        # rows batched with other items' rows change ONNX Runtime's blocking: float32 rounding
        assert got.score == pytest.approx(ref.score, abs=1e-5), name
        assert got.flagged == ref.flagged and got.evidence == ref.evidence, name


def batch_stats(session) -> dict:
    return {m: session.scheduler(m).stats() for m in ("open_nsfw", "yamnet", "minilm", "profanity")}


def shared_batches(before: dict, after: dict) -> dict:
    """Per model: request parts minus batches run between the two snapshots (> 0: batches held
    rows of several items)."""
    return {m: (after[m].requests - before[m].requests) - (after[m].batches - before[m].batches)
            for m in after}


def mixed(items: dict, n: int = 64) -> list[str]:
    names = sorted(items)
    return [names[i % len(names)] for i in range(n)]


@pytest.mark.models
def test_64_threads_submitting_mixed_items(session, items, references):
    names = mixed(items)
    before = batch_stats(session)
    barrier = threading.Barrier(len(names))
    futures: dict[int, Future] = {}

    def client(k: int) -> None:
        barrier.wait()
        futures[k] = session.submit(items[names[k]])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(futures) == len(names)
    for k, name in enumerate(names):
        futures[k].exception(WAIT)  # wait for it
        kind, value = outcome(futures[k])
        check_same(value, references[name])
    failed = [names[k] for k, f in futures.items() if f.exception(0) is not None]
    assert set(failed) == {"corrupt"}  # the corrupt item fails alone
    shared = shared_batches(before, batch_stats(session))
    assert max(shared.values()) > 0, shared  # rows of concurrent items met in one batch


@pytest.mark.models
def test_64_asyncio_tasks_with_a_deadline_and_a_cancellation(session, items, references):
    names = mixed(items)

    async def main():
        tasks = []
        for name in names:
            item = items[name]
            kwargs = dict(item) if isinstance(item, dict) else {"media_input": item}
            if "media" in kwargs:
                kwargs["media_input"] = kwargs.pop("media")
            tasks.append(asyncio.ensure_future(session.moderate_async(**kwargs)))
        expired = asyncio.ensure_future(session.moderate_async(
            SAMPLES / "clip_tone.mp4", deadline=0.001))
        cancelled = asyncio.ensure_future(session.moderate_async(SAMPLES / "clip_tone.mp4"))
        await asyncio.sleep(0)  # let it submit
        cancelled.cancel()
        results = await asyncio.gather(*tasks, expired, cancelled, return_exceptions=True)
        return results[:-2], results[-2], results[-1]

    results, expired, cancelled = asyncio.run(main())
    for name, result in zip(names, results):
        check_same(result, references[name])
    assert isinstance(expired, errors.DeadlineExceededError)
    assert isinstance(cancelled, asyncio.CancelledError)


@pytest.mark.models
def test_moderate_many_keeps_order_and_per_item_errors(session, items, references):
    names = mixed(items, 24)
    outcomes = session.moderate_many([items[n] for n in names])
    assert len(outcomes) == len(names)
    for name, o in zip(names, outcomes):
        check_same(o.verdict if o.ok else o.error, references[name])


@pytest.mark.models
def test_a_lone_item_does_not_wait_in_the_batchers(session, items, references):
    before = batch_stats(session)
    video = items["video"]
    check_same(session.moderate(video["media"], text=video["text"]), references["video"])
    assert batch_stats(session) == before  # straight to the backends: no max_queue_delay


@pytest.mark.models
def test_session_overload_and_close_leave_nothing_pending(model_repo, items, monkeypatch):
    from engine import Session

    s = Session(model_repo.path, workers=1, max_queued=4)
    gate = Gate()
    real = s._moderate_item
    monkeypatch.setattr(s, "_moderate_item", lambda item: gate() if item == "gate" else real(item))
    held = s.submit("gate")
    assert gate.started.wait(WAIT)
    queued = [s.submit(items[n]) for n in ("text", "image", "audio", "threat")]
    refused = s.submit(items["text"])
    assert isinstance(refused.exception(0), errors.OverloadedError)
    gate.opened.set()
    s.close()  # drains: every queued item runs
    outcomes = [outcome(f) for f in [held] + queued]
    assert [k for k, _ in outcomes] == ["ok"] * 5
    with pytest.raises(errors.ModelError, match="session closed"):
        s.moderate(text="hello")
    assert isinstance(s.submit(items["text"]).exception(0), errors.ModelError)
    with pytest.raises(errors.ModelError, match="session closed"):
        s.run("profanity", {"TEXT": np.array(["hi"], dtype=object)})
    s.close()  # idempotent


@pytest.mark.models
def test_submissions_other_models_and_the_event_loop_go_on_while_a_model_loads(model_repo, monkeypatch):
    import engine.session as session_module
    from engine import Session

    real, gate, loading = session_module.load_backend, Gate(), []

    def load(entry, **kw):
        if not loading:  # the first load hangs until the gate opens (a TensorRT build, say)
            loading.append(entry.name)
            gate()
        return real(entry, **kw)

    monkeypatch.setattr(session_module, "load_backend", load)
    s = Session(model_repo.path, workers=2)
    first = s.submit({"text": "hello there"})
    assert gate.started.wait(WAIT)
    other = next(m for m in ("profanity", "minilm") if m != loading[0])
    done = {}

    def meanwhile():
        done["submit"] = s.submit({"text": "another caption"})
        done["backend"] = s.backend(other)
        done["async"] = asyncio.run(asyncio.wait_for(asyncio.sleep(0.01), 5))  # a loop runs freely

    t = threading.Thread(target=meanwhile)
    t.start()
    t.join(WAIT)
    still_loading = not gate.opened.is_set()
    gate.opened.set()
    assert not t.is_alive() and still_loading and set(done) == {"submit", "backend", "async"}
    assert first.result(WAIT) and done["submit"].result(WAIT)
    s.close()


@pytest.mark.models
def test_a_close_beside_a_draining_close_waits_for_it(model_repo, monkeypatch):
    from engine import Session

    s = Session(model_repo.path, workers=1)
    gate = Gate()
    text = {"TEXT": np.array(["hi"], dtype=object)}
    # the item's model call comes after close() has begun: the drain must let it through
    monkeypatch.setattr(s, "_moderate_item", lambda item: (gate(), s.run("profanity", text))[1])
    item = s.submit("anything")
    assert gate.started.wait(WAIT)
    first = threading.Thread(target=s.close)
    first.start()
    time.sleep(0.2)  # the first close is draining
    second = threading.Thread(target=s.close)
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waits for the drain rather than stopping the schedulers under it
    gate.opened.set()
    first.join(WAIT), second.join(WAIT)
    assert not first.is_alive() and not second.is_alive()
    assert outcome(item)[0] == "ok", outcome(item)


@pytest.mark.models
def test_a_close_without_drain_beside_a_draining_close_fails_the_queued_items(model_repo, monkeypatch):
    from engine import Session

    s = Session(model_repo.path, workers=1)
    gate = Gate()
    monkeypatch.setattr(s, "_moderate_item", lambda item: gate() if item == "gate" else "ran")
    running = s.submit("gate")
    assert gate.started.wait(WAIT)
    queued = [s.submit(f"item {k}") for k in range(3)]
    first = threading.Thread(target=s.close, daemon=True)  # drains: would run the queued items
    first.start()
    time.sleep(0.2)
    second = threading.Thread(target=s.close, kwargs={"drain": False}, daemon=True)
    second.start()
    time.sleep(0.2)
    gate.opened.set()  # the running item finishes either way
    first.join(10), second.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert outcome(running) == ("ok", "gate")
    assert all(isinstance(f.exception(0), errors.ModelError) for f in queued)


@pytest.mark.models
def test_an_item_callback_that_closes_the_session_does_not_wait_for_itself(model_repo, monkeypatch):
    from engine import Session

    s = Session(model_repo.path, workers=1)
    gate = Gate()
    monkeypatch.setattr(s, "_moderate_item", lambda item: gate())
    item = s.submit("anything")
    assert gate.started.wait(WAIT)
    item.add_done_callback(lambda f: s.close())  # runs on the item's worker
    first = threading.Thread(target=s.close, daemon=True)  # a hang must not hold pytest
    first.start()
    time.sleep(0.2)  # draining: it waits for that worker
    gate.opened.set()
    first.join(10)
    assert not first.is_alive() and outcome(item) == ("ok", "gate")


@pytest.mark.models
def test_cancelling_moderate_async_stops_the_running_item(model_repo, monkeypatch):
    from engine import Session

    s = Session(model_repo.path, workers=1)
    started, stages = threading.Event(), []

    def slow_item(item):
        started.set()
        for i in range(1000):
            checkpoint()  # where the abandoned item stops
            stages.append(i)
            time.sleep(0.01)
        return "finished"

    monkeypatch.setattr(s, "_moderate_item", slow_item)

    async def main():
        task = asyncio.ensure_future(s.moderate_async(text="anything"))
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s.close()  # returns once the worker left the item
    assert len(stages) < 1000
