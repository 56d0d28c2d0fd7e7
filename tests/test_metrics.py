"""Session metrics (engine.metrics): counts, histograms, gauges, registries, the HTTP exporter.

The queue and registry tests hold the item worker inside a gated item (the Session's item
function replaced), so the queue is in a known state when a test reads the gauges; the
``models`` tests run real items and model calls and compare the metrics with what was submitted.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import prometheus_client
import pytest

import engine
from engine import errors
from engine.metrics import SessionMetrics

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
WAIT = 120.0  # seconds before a wait is called a hang (a loaded 2-core CI machine)


def gated(session: engine.Session) -> threading.Event:
    """Replace the session's item function by one that blocks until the returned event is set,
    so that its single worker holds one item and later items stay queued."""
    opened = threading.Event()
    started = threading.Event()

    def item(_item):
        started.set()
        assert opened.wait(WAIT)
        return "done"

    session._moderate_item = item
    session.started = started
    return opened


def settled(futures) -> None:
    """Wait until the Session's own done callbacks (which count the item and the request) have
    run: a future wakes its waiters before it runs its callbacks, in the order they were added,
    so a callback added now runs after the Session's."""
    events = []
    for f in futures:
        e = threading.Event()
        f.add_done_callback(lambda _f, e=e: e.set())
        events.append(e)
    assert all(e.wait(WAIT) for e in events)


# ------------------------------------------------------------------ SessionMetrics alone


def test_snapshot_histograms_count_sum_and_cumulative_buckets():
    m = SessionMetrics(lambda: 7, lambda: 2)
    for rows in (1, 3, 3, 8, 300):
        m.backend_call("profanity", rows, 0.002)
    with m.stage("preprocess", timings=(timings := {}), key="preprocess_s"):
        pass
    with m.stage("preprocess", timings=timings, key="preprocess_s"):
        pass
    snap = m.snapshot()
    batch = snap["engine_batch_size"][("profanity",)]
    assert batch["count"] == 5 and batch["sum"] == 315
    assert batch["buckets"][1.0] == 1 and batch["buckets"][2.0] == 1
    assert batch["buckets"][4.0] == 3 and batch["buckets"][8.0] == 4
    assert batch["buckets"][256.0] == 4 and batch["buckets"][float("inf")] == 5
    assert snap["engine_backend_inference_seconds"][("profanity",)]["count"] == 5
    stage = snap["engine_stage_seconds"][("preprocess", "")]
    assert stage["count"] == 2
    assert stage["sum"] == pytest.approx(timings["preprocess_s"])  # the same two intervals
    assert snap["engine_queue_depth"] == 7 and snap["engine_items_running"] == 2
    assert snap["engine_items_total"] == {}  # labelled, nothing counted yet


def test_request_counter_names_the_exception_and_reraises_it():
    m = SessionMetrics(lambda: 0, lambda: 0)
    with m.request("embed"):
        pass
    with pytest.raises(errors.CorruptMediaError):
        with m.request("embed"):
            raise errors.CorruptMediaError("bad")
    assert m.snapshot()["engine_requests_total"] == {("embed", "ok"): 1.0,
                                                     ("embed", "CorruptMediaError"): 1.0}


# ------------------------------------------------------------------ Session, gated items


def test_queue_depth_gauge_and_typed_outcomes_then_zero_after_close(model_repo_path):
    session = engine.Session(model_repo_path, workers=1, max_queued=3)
    opened = gated(session)
    running = session.submit("first")
    assert session.started.wait(WAIT)
    queued = [session.submit(f"q{i}") for i in range(2)]
    expiring = session.submit("late", deadline=0.05)
    overloaded = session.submit("one too many")  # 3 queued already
    assert isinstance(overloaded.exception(0), errors.OverloadedError)
    snap = session.metrics()
    assert snap["engine_queue_depth"] == 3 and snap["engine_items_running"] == 1
    assert isinstance(expiring.exception(WAIT), errors.DeadlineExceededError)
    assert session.metrics()["engine_queue_depth"] == 2
    opened.set()
    assert running.result(WAIT) == "done"
    session.close(drain=False)  # the queued two may have run already; either way they are done
    snap = session.metrics()
    assert snap["engine_queue_depth"] == 0 and snap["engine_items_running"] == 0
    items = snap["engine_items_total"]
    outcomes = [f.exception(0) for f in queued]
    ok = 1 + sum(e is None for e in outcomes)
    assert items.get(("unknown", "ok")) == ok  # the gate never routes: modality unknown
    assert items.get(("unknown", "ModelError"), 0) == 2 - (ok - 1)
    assert items[("unknown", "OverloadedError")] == 1
    assert items[("unknown", "DeadlineExceededError")] == 1
    assert sum(items.values()) == 5
    assert snap["engine_requests_total"][("submit", "OverloadedError")] == 1
    latency = snap["engine_item_seconds"]
    assert sum(h["count"] for h in latency.values()) == 5
    assert latency[("unknown", "ok")]["count"] == ok


def test_two_sessions_count_in_their_own_registries(model_repo_path):
    a = engine.Session(model_repo_path, workers=1)
    b = engine.Session(model_repo_path, workers=1)
    for session, n in ((a, 3), (b, 1)):
        gated(session).set()
        for f in [session.submit(i) for i in range(n)]:
            f.result(WAIT)
    a.close(), b.close()
    assert a.metrics_registry is not b.metrics_registry
    assert a.metrics()["engine_items_total"] == {("unknown", "ok"): 3.0}
    assert b.metrics()["engine_items_total"] == {("unknown", "ok"): 1.0}
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert "engine_items" not in global_names


def test_exporter_serves_the_text_format_until_closed(model_repo_path):
    session = engine.Session(model_repo_path, workers=1)
    gated(session).set()
    settled([session.submit("x")])
    exporter = session.serve_metrics(0)
    with urllib.request.urlopen(exporter.url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    assert 'engine_items_total{modality="unknown",outcome="ok"} 1.0' in body
    assert 'engine_requests_total{method="submit",outcome="ok"} 1.0' in body
    for name in ("engine_item_seconds_bucket", "engine_queue_depth", "engine_items_running",
                 "# TYPE engine_stage_seconds histogram", "# TYPE engine_batch_size histogram",
                 "# TYPE engine_backend_inference_seconds histogram",
                 "# TYPE engine_scheduler_queue_depth gauge"):
        assert name in body
    session.close()  # stops the exporter too
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=5)


# ------------------------------------------------------------------ Session, real models


@pytest.mark.models
def test_counts_and_stage_histograms_match_the_submitted_items(model_repo):
    texts = ["have a nice day", "you absolute idiot", "the weather is fine"]
    with engine.Session(model_repo.path, workers=2) as session:
        futures = [session.submit({"text": t}) for t in texts]
        futures.append(session.submit({"image": SAMPLES / "image.jpg", "text": "caption"}))
        futures.append(session.submit(SAMPLES / "missing.mp4"))
        futures.append(session.submit({"bogus": 1}))
        settled(futures)
        snap_open = session.metrics()
    n_classifiers = len(session._policies("text_classifier"))
    items = snap_open["engine_items_total"]
    assert items == {("text", "ok"): 3.0, ("image+text", "ok"): 1.0,
                     ("unknown", "MediaNotFoundError"): 1.0, ("unknown", "InputError"): 1.0}
    assert snap_open["engine_requests_total"] == {
        ("submit", "ok"): 4.0, ("submit", "MediaNotFoundError"): 1.0, ("submit", "InputError"): 1.0}
    assert sum(h["count"] for h in snap_open["engine_item_seconds"].values()) == 6
    stages = snap_open["engine_stage_seconds"]
    assert stages[("decode_image", "")]["count"] == 1
    assert stages[("preprocess", "")]["count"] == 1
    assert stages[("inference", "open_nsfw")]["count"] == 1
    assert stages[("policy", "open_nsfw")]["count"] == 1
    assert stages[("inference", "profanity")]["count"] == 4 * n_classifiers
    assert stages[("policy", "profanity")]["count"] == 4 * n_classifiers
    # every text row sent to profanity is in exactly one backend call, batched or not
    batch = snap_open["engine_batch_size"][("profanity",)]
    assert batch["sum"] == 4 * n_classifiers
    assert snap_open["engine_backend_inference_seconds"][("profanity",)]["count"] == batch["count"]
    assert snap_open["engine_queue_depth"] == 0


@pytest.mark.models
@pytest.mark.parametrize("callers", [32])
def test_concurrent_callers_form_batches_larger_than_one(model_repo, callers):
    with engine.Session(model_repo.path) as session:
        name = session.backend("profanity").inputs[0].name
        session.run("profanity", {name: np.array(["warm up"], dtype=object)})
        rounds = 4
        barrier = threading.Barrier(callers)

        def call(i):
            barrier.wait(WAIT)
            for r in range(rounds):
                session.run("profanity", {name: np.array([f"text {i} {r}"], dtype=object)})

        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(call, range(callers)))
        batch = session.metrics()["engine_batch_size"][("profanity",)]
        stats = session.scheduler("profanity").stats()
    assert batch["sum"] == callers * rounds + 1  # every row once
    assert batch["count"] == stats.batches
    assert batch["count"] < callers * rounds  # some call carried several requests' rows
    assert batch["buckets"][1.0] < batch["count"]  # i.e. batches of more than one row
