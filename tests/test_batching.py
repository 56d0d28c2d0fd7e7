"""Dynamic batching (engine.batching): policy from config.pbtxt, the per-model scheduler.

Most tests drive a fake backend whose outputs are a known function of its inputs (y = 2x,
s = row sum) and that records every batch it runs; a gate lets a test hold the worker inside a
batch so that work piles up in the queue in a known state. One test runs the real MiniLM.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from engine.backends import BaseBackend, TensorSpec, load_backend
from engine.batching import DEFAULT_MAX_QUEUE_SIZE, BatchingPolicy, QueuePolicy, Scheduler
from engine.errors import (ConfigError, DeadlineExceededError, InputError, InternalError,
                           ModelError, OverloadedError)
from engine.repo.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[1] / "model_repo"
F32 = np.dtype(np.float32)
WAIT = 10.0  # seconds a test waits for any one outcome before calling it a hang


class Doubler(BaseBackend):
    """y = 2x and s = sum(x) per row; records batch sizes, first-column values and overlap."""

    name = "fake"

    def __init__(self, max_batch_size=8, sleep=0.0, width=3):
        super().__init__("doubler", max_batch_size, [TensorSpec("x", F32, (width,))],
                         [TensorSpec("y", F32, (width,)), TensorSpec("s", F32, (1,))])
        self.sleep = sleep
        self.sizes: list[int] = []
        self.seen: list[float] = []  # x[:, 0] of every row run, in run order
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a batch has started (and waits at the gate)
        self.active = self.most_active = 0
        self._lock = threading.Lock()

    def infer(self, inputs):
        x = inputs["x"]
        with self._lock:
            self.sizes.append(len(x))
            self.seen.extend(np.asarray(x)[:, 0].tolist())
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.entered.set()
        try:
            self.gate.wait()
            time.sleep(self.sleep)
            if np.isnan(np.asarray(x, F32)).any():
                raise ValueError("NaN in batch")  # a backend bug that fails the whole batch
            return super().infer(inputs)
        finally:
            with self._lock:
                self.active -= 1

    def _run(self, inputs):
        x = inputs["x"]
        return {"y": x * 2, "s": x.sum(axis=1, keepdims=True)}


def policy(max_batch_size=8, **kw) -> BatchingPolicy:
    return BatchingPolicy("doubler", max_batch_size, dynamic=True, **kw)


def rows(first: float, n: int, width: int = 3) -> np.ndarray:
    """n rows whose first column counts up from ``first`` (so runs can be traced per row)."""
    x = np.random.default_rng(abs(int(first))).standard_normal((n, width)).astype(F32)
    x[:, 0] = first + np.arange(n)
    return x


def hold(backend: Doubler, scheduler: Scheduler, n: int = 1):
    """Start a batch of ``n`` rows (marked -1, 0, ...) that blocks at the gate, so later requests
    stay queued."""
    backend.gate.clear()
    backend.entered.clear()
    f = scheduler.submit({"x": rows(-1, n)})
    assert backend.entered.wait(WAIT)
    return f


def check_doubled(x: np.ndarray, out: dict) -> None:
    np.testing.assert_array_equal(out["y"], x * 2)
    np.testing.assert_allclose(out["s"][:, 0], x.sum(axis=1), rtol=1e-6)


def call_concurrently(fn, items: list) -> list:
    """fn(item) for every item, one thread each, all released at once; results in order."""
    barrier = threading.Barrier(len(items))

    def call(item):
        barrier.wait()
        return fn(item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(call, items, timeout=60))


def record_batch_sizes(backend) -> list[int]:
    """Wrap ``backend.infer`` so that each call appends its row count to the returned list."""
    sizes: list[int] = []
    infer = backend.infer

    def recording_infer(inputs):
        sizes.append(len(next(iter(inputs.values()))))
        return infer(inputs)

    backend.infer = recording_infer
    return sizes


# ------------------------------------------------------------------ policy


def test_policy_from_shipped_configs():
    for name in ("open_nsfw", "yamnet", "minilm"):
        cfg = load_config(REPO / name)
        p = BatchingPolicy.from_config(cfg)
        assert p.dynamic and p.max_batch_size == cfg.max_batch_size
        assert p.preferred_batch_sizes and p.target_batch_size <= p.max_batch_size
        assert 0 < p.max_queue_delay_s <= 0.005
        assert p.instance_count == 1 and p.queue(1).max_queue_size == DEFAULT_MAX_QUEUE_SIZE
    prof = BatchingPolicy.from_config(load_config(REPO / "profanity"))
    assert prof.dynamic and not prof.preferred_batch_sizes and prof.target_batch_size == 256


def config(dynamic: str, max_batch_size: int = 16, instances: str = "") -> mc.ModelConfig:
    return parse_config(f'name: "m" backend: "onnxruntime" max_batch_size: {max_batch_size} '
                        f"{dynamic} {instances}")


def test_policy_reads_every_field():
    p = BatchingPolicy.from_config(config(
        "dynamic_batching { preferred_batch_size: [8, 4, 8] max_queue_delay_microseconds: 2500 "
        "priority_levels: 3 default_priority_level: 2 "
        "default_queue_policy { max_queue_size: 5 default_timeout_microseconds: 100000 } "
        "priority_queue_policy { key: 3 value { timeout_action: DELAY "
        "default_timeout_microseconds: 1000 } } }",
        instances="instance_group [ { count: 2 }, { count: 0 } ]"))
    assert p.preferred_batch_sizes == (4, 8) and p.max_queue_delay_s == pytest.approx(0.0025)
    assert (p.priority_levels, p.default_priority, p.instance_count) == (3, 2, 3)
    assert p.queue(1) == p.queue(2) == QueuePolicy(5, 0.1, False)
    assert p.queue(3) == QueuePolicy(DEFAULT_MAX_QUEUE_SIZE, 0.001, True)
    plain = BatchingPolicy.from_config(config(""))
    assert not plain.dynamic and plain.priority_levels == 1 and plain.instance_count == 1


@pytest.mark.parametrize("dynamic,max_batch_size,field", [
    ("dynamic_batching { preferred_batch_size: [32] }", 16, "dynamic_batching.preferred_batch_size"),
    ("dynamic_batching { preferred_batch_size: [0] }", 16, "dynamic_batching.preferred_batch_size"),
    ("dynamic_batching { }", 0, "dynamic_batching"),
    ("dynamic_batching { priority_levels: 2 }", 16, "dynamic_batching.default_priority_level"),
    ("dynamic_batching { priority_levels: 2 default_priority_level: 3 }", 16,
     "dynamic_batching.default_priority_level"),
    ("dynamic_batching { priority_levels: 2 default_priority_level: 1 "
     "priority_queue_policy { key: 5 value { } } }", 16, "dynamic_batching.priority_queue_policy"),
    ("instance_group [ { count: 1 }, { count: -2 } ]", 16, "instance_group[1].count"),
])
def test_policy_rejects_inconsistent_fields(dynamic, max_batch_size, field):
    with pytest.raises(ConfigError) as ei:
        BatchingPolicy.from_config(config(dynamic, max_batch_size), "m/config.pbtxt")
    assert ei.value.field == field and ei.value.path == "m/config.pbtxt"


def test_batch_size_choice():
    p = policy(16, preferred_batch_sizes=(4, 8))
    assert p.batch_size_for(20, set()) == 8  # enough work: the largest preferred size
    assert p.batch_size_for(5, {1, 2, 3, 4, 5}) == 4  # due, a preferred size on a boundary
    assert p.batch_size_for(5, {2, 5}) == 5  # no boundary at 4: do not split just for it
    assert p.batch_size_for(3, {3}) == 3
    assert policy(16).batch_size_for(40, set()) == 16


# ------------------------------------------------------------------ scheduler, fake backend


def test_concurrent_callers_get_their_own_rows():
    backend = Doubler(max_batch_size=8, sleep=0.002)
    inputs = [rows(1000 * i, random.Random(i).randint(1, 11)) for i in range(64)]
    with Scheduler(backend, policy(8, preferred_batch_sizes=(4, 8), max_queue_delay_s=0.003)) as s:
        outs = call_concurrently(lambda x: s.infer({"x": x}), inputs)
    for x, out in zip(inputs, outs):
        check_doubled(x, out)
    assert max(backend.sizes) <= 8 and max(backend.sizes) > 1  # batches formed, none too big
    assert sorted(backend.seen) == sorted(v for x in inputs for v in x[:, 0])  # each row once
    assert len(backend.sizes) < len(inputs)


def test_preferred_sizes_when_enough_work_is_queued():
    backend = Doubler(max_batch_size=16)
    with Scheduler(backend, policy(16, preferred_batch_sizes=(4, 8), max_queue_delay_s=0.05)) as s:
        first = hold(backend, s)
        futures = [s.submit({"x": rows(i, 1)}) for i in range(20)]
        backend.gate.set()
        assert first.result(WAIT)
        for i, f in enumerate(futures):
            check_doubled(rows(i, 1), f.result(WAIT))
    assert backend.sizes == [1, 8, 8, 4]


def test_requests_larger_than_max_batch_size_are_split_and_reassembled():
    backend = Doubler(max_batch_size=4)
    x = rows(0, 11)
    with Scheduler(backend, policy(4)) as s:
        first = hold(backend, s)
        small = s.submit({"x": rows(100, 2)})
        big = s.submit({"x": x})
        backend.gate.set()
        first.result(WAIT)
        check_doubled(x, big.result(WAIT))
        check_doubled(rows(100, 2), small.result(WAIT))
    assert backend.sizes[1:] == [4, 4, 4, 1]  # small + 2 rows of big, then big's other 9 rows
    assert sum(backend.sizes) == 1 + 2 + 11


def test_max_queue_delay_bounds_a_lone_request():
    for delay in (0.0, 0.08):
        backend = Doubler(max_batch_size=8)
        with Scheduler(backend, policy(8, max_queue_delay_s=delay)) as s:
            t = time.monotonic()
            s.infer({"x": rows(0, 1)})
            waited = time.monotonic() - t
        assert delay <= waited < delay + 0.5, (delay, waited)  # it waits for company, not longer


def test_priorities_order_the_queue():
    backend = Doubler(max_batch_size=1)
    with Scheduler(backend, policy(1, priority_levels=2, default_priority=2,
                                   queues=(QueuePolicy(), QueuePolicy()))) as s:
        first = hold(backend, s)
        low = [s.submit({"x": rows(10 + i, 1)}) for i in range(2)]
        high = s.submit({"x": rows(20, 1)}, priority=1)
        bad = s.submit({"x": rows(30, 1)}, priority=3)
        backend.gate.set()
        for f in [first, high, *low]:
            f.result(WAIT)
        with pytest.raises(InputError, match="priority 3"):
            bad.result(WAIT)
    assert backend.seen == [-1.0, 20.0, 10.0, 11.0]


def test_full_queue_rejects_at_once_or_waits_for_room_until_the_deadline():
    backend = Doubler(max_batch_size=1)
    with Scheduler(backend, policy(1, queues=(QueuePolicy(max_queue_size=2),))) as s:
        first = hold(backend, s)
        queued = [s.submit({"x": rows(i, 1)}) for i in range(2)]
        t = time.monotonic()
        rejected = s.submit({"x": rows(50, 1)})
        assert rejected.done() and time.monotonic() - t < 0.05
        with pytest.raises(OverloadedError, match="full"):
            rejected.result()
        t = time.monotonic()
        waited = s.submit({"x": rows(60, 1)}, block=True, timeout=0.1)
        assert 0.1 <= time.monotonic() - t < 1.0
        with pytest.raises(OverloadedError, match="deadline"):
            waited.result()
        threading.Timer(0.1, backend.gate.set).start()  # room appears while the caller waits
        admitted = s.submit({"x": rows(70, 1)}, block=True, timeout=WAIT)
        for f in [first, *queued, admitted]:
            f.result(WAIT)
    assert 50.0 not in backend.seen and 60.0 not in backend.seen and 70.0 in backend.seen


def test_caller_deadline_fails_the_request_and_it_never_runs():
    backend = Doubler(max_batch_size=4)
    with Scheduler(backend, policy(4, instance_count=2, max_queue_delay_s=1.0)) as s:
        first = hold(backend, s, n=4)  # one instance held; the other waits out the delay
        late = s.submit({"x": rows(10, 2)}, timeout=0.05)
        t = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="deadline"):
            late.result(WAIT)
        assert time.monotonic() - t < 0.5  # the idle instance woke up for the deadline
        expired = s.submit({"x": rows(30, 1)}, timeout=0)
        with pytest.raises(DeadlineExceededError):
            expired.result(WAIT)
        backend.gate.set()
        first.result(WAIT)
    assert 10.0 not in backend.seen and 30.0 not in backend.seen


def test_queue_policy_timeout_rejects_or_delays():
    backend = Doubler(max_batch_size=1)
    reject = QueuePolicy(timeout_s=0.05)
    delay = QueuePolicy(timeout_s=0.05, delay_on_timeout=True)
    with Scheduler(backend, policy(1, priority_levels=3, queues=(reject, delay, QueuePolicy()))) as s:
        first = hold(backend, s)
        rejected = s.submit({"x": rows(10, 1)}, priority=1)
        delayed = s.submit({"x": rows(20, 1)}, priority=2)
        time.sleep(0.1)  # both time out while the only instance is busy
        fresh = s.submit({"x": rows(30, 1)}, priority=3)  # lowest priority, but never times out
        backend.gate.set()
        for f in (first, delayed, fresh):
            f.result(WAIT)
        with pytest.raises(DeadlineExceededError, match="queue policy"):
            rejected.result(WAIT)
    assert backend.seen == [-1.0, 30.0, 20.0]  # the timed-out request went behind every other


def test_cancelled_requests_never_run():
    backend = Doubler(max_batch_size=4)
    with Scheduler(backend, policy(4)) as s:
        first = hold(backend, s)
        cancelled = s.submit({"x": rows(10, 2)})
        kept = s.submit({"x": rows(20, 2)})
        assert cancelled.cancel() and s.queued() == 1
        backend.gate.set()
        check_doubled(rows(20, 2), kept.result(WAIT))
        assert not first.cancel() and not kept.cancel()  # running or done: too late
    with pytest.raises(CancelledError):
        cancelled.result()
    assert 10.0 not in backend.seen and 11.0 not in backend.seen


def test_close_drains_or_fails_everything_pending():
    backend = Doubler(max_batch_size=2)
    s = Scheduler(backend, policy(2, max_queue_delay_s=5.0))
    first = hold(backend, s, n=2)  # a full batch goes at once; the 1-row requests would wait 5 s
    drained = [s.submit({"x": rows(10 * i, 1)}) for i in range(5)]
    threading.Timer(0.05, backend.gate.set).start()
    t = time.monotonic()
    s.close()
    assert time.monotonic() - t < 1.0  # closing made every queued row due at once
    assert s.queued() == 0 and backend.sizes == [2, 2, 2, 1]
    check_doubled(rows(-1, 2), first.result(0))
    for i, f in enumerate(drained):
        check_doubled(rows(10 * i, 1), f.result(0))
    with pytest.raises(ModelError, match="closed"):
        s.submit({"x": rows(0, 1)}).result(0)

    backend = Doubler(max_batch_size=2)
    s = Scheduler(backend, policy(2))
    first = hold(backend, s)
    failed = [s.submit({"x": rows(10 * i, 1)}) for i in range(5)]
    threading.Timer(0.05, backend.gate.set).start()
    s.close(drain=False)
    first.result(0)
    for f in failed:
        with pytest.raises(ModelError, match="closed before the request ran"):
            f.result(0)
    assert backend.seen == [-1.0]


def test_two_instances_run_two_batches_at_once():
    backend = Doubler(max_batch_size=2, sleep=0.3)
    with Scheduler(backend, policy(2, instance_count=2)) as s:
        t = time.monotonic()
        futures = [s.submit({"x": rows(10 * i, 2)}) for i in range(2)]
        for f in futures:
            f.result(WAIT)
        took = time.monotonic() - t
    assert backend.most_active == 2 and took < 0.55  # two 0.3 s batches overlapped
    one = Doubler(max_batch_size=2, sleep=0.3)
    with Scheduler(one, policy(2)) as s:
        for f in [s.submit({"x": rows(10 * i, 2)}) for i in range(2)]:
            f.result(WAIT)
    assert one.most_active == 1


def test_a_bad_request_fails_alone():
    backend = Doubler(max_batch_size=8)
    with Scheduler(backend, policy(8, max_queue_delay_s=0.02)) as s:
        first = hold(backend, s)
        good = [s.submit({"x": rows(10 * i, 2)}) for i in range(3)]
        wrong_shape = s.submit({"x": np.zeros((2, 4), F32)})
        wrong_dtype = s.submit({"x": np.array([["a", "b", "c"]], dtype=object)})
        wrong_name = s.submit({"z": rows(0, 1)})
        empty = s.submit({"x": rows(0, 0)})
        backend.gate.set()
        for i, f in enumerate(good):
            check_doubled(rows(10 * i, 2), f.result(WAIT))
        for f, match in [(wrong_shape, "shape"), (wrong_dtype, "dtype"), (wrong_name, "unknown"),
                         (empty, "at least one row")]:
            with pytest.raises(InputError, match=match):
                f.result(0)
        first.result(WAIT)


def test_a_failing_batch_fails_exactly_its_requests():
    backend = Doubler(max_batch_size=2)
    with Scheduler(backend, policy(2)) as s:
        first = hold(backend, s)
        poisoned = rows(10, 3)
        poisoned[2, 1] = np.nan  # the backend raises on the batch holding this row
        split = s.submit({"x": poisoned})  # rows 0-1: one batch, row 2: with the next request
        neighbour = s.submit({"x": rows(20, 1)})
        after = s.submit({"x": rows(30, 2)})
        backend.gate.set()
        first.result(WAIT)
        for f in (split, neighbour):
            with pytest.raises(InternalError, match="ValueError: NaN in batch") as ei:
                f.result(WAIT)
            assert isinstance(ei.value.__cause__, ValueError)
        check_doubled(rows(30, 2), after.result(WAIT))
    assert backend.sizes == [1, 2, 2, 2]


class TextLength(BaseBackend):
    """Text in (an object array, like the profanity model), its length out."""

    name = "fake"

    def __init__(self, dynamic_dim=False):
        super().__init__("textlen", 4, [TensorSpec("TEXT", np.dtype(object), (1,)),
                                        TensorSpec("k", F32, (-1,) if dynamic_dim else (2,))],
                         [TensorSpec("LEN", F32, (1,))])
        self.shapes = []

    def _run(self, inputs):
        self.shapes.append(inputs["k"].shape)
        lengths = np.array([[len(t)] for t in inputs["TEXT"][:, 0]], F32)
        return {"LEN": lengths + inputs["k"].sum(axis=1, keepdims=True)}


def test_text_requests_and_unequal_shapes_batch_separately():
    backend = TextLength(dynamic_dim=True)
    texts = [["a", "bb", "ccc"], ["dddd"], ["eeeee", "ffffff"], ["g"]]
    widths = [2, 2, 5, 5]  # only requests with equal trailing shapes can share a batch
    with Scheduler(backend, BatchingPolicy("textlen", 4, dynamic=True, max_queue_delay_s=0.05)) as s:
        futures = [s.submit({"TEXT": np.array(t, dtype=object), "k": np.ones((len(t), w), F32)})
                   for t, w in zip(texts, widths)]
        outs = [f.result(WAIT)["LEN"][:, 0].tolist() for f in futures]
    assert outs == [[1 + 2, 2 + 2, 3 + 2], [4 + 2], [5 + 5, 6 + 5], [1 + 5]]
    assert sorted(backend.shapes) == [(3, 5), (4, 2)]


def test_models_without_dynamic_batching_run_each_request_alone():
    backend = Doubler(max_batch_size=4, sleep=0.01)
    sizes = [3, 1, 6, 2]
    with Scheduler(backend) as s:  # the default policy: unbatched, one instance
        futures = [s.submit({"x": rows(100 * i, n)}) for i, n in enumerate(sizes)]
        for i, (f, n) in enumerate(zip(futures, sizes)):
            check_doubled(rows(100 * i, n), f.result(WAIT))
    assert backend.sizes == sizes  # whole requests (the backend itself splits the 6)


# ------------------------------------------------------------------ a real model


def run_concurrently(backend, cfg, requests: list[dict]) -> tuple[list[dict], list[dict], list[int]]:
    """(unbatched outputs, outputs through the scheduler with one thread per request, batch sizes)."""
    reference = [backend.infer(r) for r in requests]  # one backend call per request
    sizes = record_batch_sizes(backend)
    with Scheduler.from_config(backend, cfg) as s:
        outs = call_concurrently(s.infer, requests)
    assert max(sizes) > 1 and max(sizes) <= cfg.max_batch_size  # batches formed, none too big
    assert sum(sizes) == sum(len(next(iter(r.values()))) for r in requests)  # every row once
    return reference, outs, sizes


@pytest.mark.models
def test_minilm_under_64_concurrent_callers(model_entry):
    entry = model_entry("minilm")
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(64):
        ids = rng.integers(1000, 5000, (int(rng.integers(1, 6)), 12)).astype(np.int64)
        requests.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                         "token_type_ids": np.zeros_like(ids)})
    reference, outs, _ = run_concurrently(load_backend(entry, threads=1), entry.config, requests)
    for ref, out in zip(reference, outs):
        # batch composition changes ONNX Runtime's blocking, not the math: float32 rounding only
        np.testing.assert_allclose(out["token_embeddings"], ref["token_embeddings"],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.models
def test_profanity_texts_under_64_concurrent_callers(model_entry):
    entry = model_entry("profanity")
    words = ["you", "are", "a", "damn", "nice", "stupid", "idiot", "friend", "the", "weather"]
    rng = random.Random(0)
    requests = [{"TEXT": np.array([" ".join(rng.choices(words, k=rng.randint(1, 8)))
                                   for _ in range(rng.randint(1, 6))], dtype=object)}
                for _ in range(64)]
    reference, outs, _ = run_concurrently(load_backend(entry), entry.config, requests)
    for ref, out in zip(reference, outs):
        np.testing.assert_allclose(out["PROB"], ref["PROB"], rtol=1e-6)


@pytest.mark.models
def test_session_run_goes_through_the_models_scheduler(model_repo):
    from engine import Session

    texts = [np.array([f"text number {i}", "you idiot"][: 1 + i % 2], dtype=object) for i in range(16)]
    with Session(model_repo.path) as session:
        scheduler = session.scheduler("profanity")
        assert scheduler.policy.dynamic and session.scheduler("profanity") is scheduler
        reference = [session.backend("profanity").infer({"TEXT": t})["PROB"] for t in texts]
        sizes = record_batch_sizes(session.backend("profanity"))
        outs = call_concurrently(lambda t: session.run("profanity", {"TEXT": t}), texts)
        for ref, out in zip(reference, outs):
            np.testing.assert_allclose(out["PROB"], ref, rtol=1e-6)
        assert max(sizes) > 1 and sum(sizes) == sum(len(t) for t in texts)
    assert scheduler.queued() == 0
    with pytest.raises(ModelError, match="closed"):
        scheduler.infer({"TEXT": texts[0]})
