"""Note [Triton wrapper uploads] (kernels/_runtime.py): geometry tables go to a device once and
stay; per-call tables are queued from pinned memory, so a wrapper call never waits for the
stream. On the CPU the uploads are counted; what a pinned copy costs on a GPU is for the bench."""

from __future__ import annotations

import numpy as np
import pytest
from frames import make_frame
from triton_cases import import_kernels, to_torch

from engine.ops import PreprocessSpec

pytest.importorskip("triton")
torch = pytest.importorskip("torch")
kernels = import_kernels()


@pytest.fixture
def fresh_constants(monkeypatch):
    from collections import OrderedDict

    import engine.kernels._runtime as runtime

    monkeypatch.setattr(runtime, "_CONSTANTS", OrderedDict())
    return runtime


def test_tap_tables_reach_a_device_once_per_geometry(fresh_constants, monkeypatch, device):
    made = []
    real = fresh_constants.device_constant

    def counting(key, dev, make):
        return real(key, dev, lambda: made.append(key) or make())

    import sys

    # the module: the package's attribute of that name is the function
    monkeypatch.setattr(sys.modules["engine.kernels.preprocess"], "device_constant", counting)
    rng = np.random.default_rng()
    spec = PreprocessSpec(size=(8, 8))
    frames = [make_frame("i420", 24, 40, rng) for _ in range(3)]
    for f in frames[:2]:
        kernels.preprocess([to_torch(f, device)], spec, format="i420", width=40, height=24)
    assert len(made) == 1
    kernels.preprocess([to_torch(make_frame("i420", 26, 40, rng), device)], spec, format="i420", width=40, height=26)
    assert len(made) == 2  # another geometry, other tables


def test_the_mel_filterbank_reaches_a_device_once(fresh_constants, device):
    spectrum = torch.rand(3, 257, device=device)
    a = kernels.log_mel_project(spectrum)
    b = kernels.log_mel_project(spectrum)
    assert torch.equal(a, b) and len(fresh_constants._CONSTANTS) == 1


def test_device_constants_are_bounded_least_recently_used_first(fresh_constants, monkeypatch):
    monkeypatch.setattr(fresh_constants, "_MAX_CONSTANTS", 2)
    cpu = torch.device("cpu")
    for key in ("a", "b"):
        fresh_constants.device_constant(key, cpu, lambda: np.zeros(2))
    fresh_constants.device_constant("a", cpu, lambda: np.zeros(2))  # "a" used again: "b" is older
    fresh_constants.device_constant("c", cpu, lambda: np.zeros(2))
    assert [k for k, _ in fresh_constants._CONSTANTS] == ["a", "c"]


def test_per_call_tables_are_queued_from_pinned_memory(monkeypatch):
    from engine.device_staging import upload

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or self)
    upload(np.arange(6), "cuda:0")
    assert calls == ["pin", (("cuda:0",), {"non_blocking": True})]
    calls.clear()
    t = upload(np.arange(6), "cpu")  # on the CPU: shared, no copy
    assert calls == [] and t.tolist() == list(range(6))


def test_launches_are_one_at_a_time_on_the_tensors_device(monkeypatch):
    """kernels._runtime.launch: the Triton interpreter's grid index is process-wide (concurrent
    launches broke each other), and Triton launches on the current device, which a worker
    thread has at 0 whatever the tensors' device."""
    import contextlib
    import threading
    import time

    import engine.kernels._runtime as runtime

    state = {"active": 0, "most": 0, "devices": []}
    lock, current = threading.Lock(), threading.local()

    class Kernel:
        def __getitem__(self, grid):
            def run(*args, **meta):
                with lock:
                    state["active"] += 1
                    state["most"] = max(state["most"], state["active"])
                    state["devices"].append(getattr(current, "device", 0))
                time.sleep(0.02)
                with lock:
                    state["active"] -= 1
            return run

    @contextlib.contextmanager
    def device(d):
        before = getattr(current, "device", 0)
        current.device = torch.device(d).index
        yield
        current.device = before

    monkeypatch.setattr(torch.cuda, "device", device)
    start = threading.Barrier(4)

    def worker():
        start.wait()
        runtime.launch(Kernel(), (1,), torch.device("cuda", 1), "args")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["most"] == 1 and state["devices"] == [1] * 4
