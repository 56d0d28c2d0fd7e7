"""CudaRunner's stream and capture choreography (Note [graph streams] in
engine/backends/torch_cuda.py), on the CPU: torch.cuda's streams, events, graphs and device
context are replaced by fakes that record what the runner asks of them, and the model is a CPU
stand-in. What this cannot show (that the real calls order the real work) needs a GPU."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch

from engine.backends.base import TensorSpec
from engine.backends.torch_cuda import BucketedRunner, CudaRunner


class FakeStream:
    def __init__(self, device=None, name="side"):
        self.device = torch.device(device) if device is not None else torch.device("cuda", 0)
        self.name = name
        self.waited: list = []

    def wait_stream(self, other):
        self.waited.append(("stream", other))

    def wait_event(self, event):
        self.waited.append(("event", event))


class FakeEvent:
    def __init__(self, *args, **kwargs):
        self.stream = None

    def record(self, stream=None):
        self.stream = stream


class FakeCuda:
    """torch.cuda's stream, event and graph calls, recorded; one current stream per thread."""

    def __init__(self, monkeypatch):
        self.local = threading.local()
        self.captures: list[dict] = []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        fake = self

        @contextlib.contextmanager
        def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            fake.captures.append({"stream": stream, "mode": capture_error_mode})
            with fake.lock:
                fake.active += 1
                fake.max_active = max(fake.max_active, fake.active)
            time.sleep(0.05)  # long enough for a second thread's capture to overlap
            try:
                yield
            finally:
                with fake.lock:
                    fake.active -= 1

        class FakeGraph:
            def replay(self):
                pass

        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None, **kw: FakeStream(device))
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: fake.current(device))
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
        monkeypatch.setattr(torch.cuda, "Event", FakeEvent)

    def current(self, device=None):
        s = getattr(self.local, "stream", None)
        if s is None:
            s = self.local.stream = FakeStream(device, "default")
        return s

    def use(self, stream):
        self.local.stream = stream


def runner(index: int = 0) -> CudaRunner:
    """A CudaRunner on cuda:``index`` with graphs, without its constructor (which needs a GPU):
    a CPU stand-in for the module, its inputs and its forward pass."""
    r = object.__new__(CudaRunner)
    r.model, r.device, r.fp16 = "m", torch.device("cuda", index), False
    r.inputs = [TensorSpec("x", np.dtype(np.float32), (3,))]
    r.outputs = [TensorSpec("y", np.dtype(np.float32), (3,))]
    r.output_index, r._out_dtypes = [0], [torch.float32]
    r._lock, r._pinned, r._pool, r._specialise, r.module = threading.Lock(), {}, None, None, None
    r._capture_stream, r._last_call = torch.cuda.Stream(r.device), None
    r._zero_inputs = lambda rows, length, device: [torch.zeros(rows, 3)]
    r.forward = lambda tensors, module=None: [t * 2 for t in tensors]
    r.runner = BucketedRunner(r._capture, (1, 2, 4))
    return r


def test_captures_on_the_runners_own_stream_and_device(monkeypatch):
    # torch.cuda.graph without stream= would take a process-wide stream made on whichever
    # device was current at the process's first capture (pytorch#87894: an empty graph)
    fake = FakeCuda(monkeypatch)
    r = runner(index=1)
    out = r.run_device([torch.ones(2, 3)])
    (capture,) = fake.captures
    assert capture["stream"] is r._capture_stream and capture["stream"].device == torch.device("cuda", 1)
    assert capture["mode"] == "thread_local"
    assert out[0].shape == (2, 3)  # the bucket of 2 rows (the fake graph replays nothing)


def test_a_call_on_another_stream_waits_for_the_previous_call(monkeypatch):
    # the graphs' static buffers and memory pool are shared by every call, whatever its stream
    fake = FakeCuda(monkeypatch)
    r = runner()
    a, b = FakeStream(r.device, "A"), FakeStream(r.device, "B")
    fake.use(a)
    r.run_device([torch.ones(2, 3)])
    assert not [w for w in a.waited if w[0] == "event"]  # the first call waits for nothing
    fake.use(b)
    r.run_device([torch.ones(4, 3)])  # another bucket: the pool is shared too
    events = [e for kind, e in b.waited if kind == "event"]
    assert len(events) == 1 and events[0].stream is a


def test_two_models_never_capture_at_once(monkeypatch):
    # only one capture may be underway in a process; graph.__enter__ synchronises the device
    fake = FakeCuda(monkeypatch)
    runners = [runner(), runner()]
    threads = [threading.Thread(target=r.run_device, args=([torch.ones(2, 3)],)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.captures) == 2 and fake.max_active == 1


@pytest.mark.parametrize("calls", [1, 3])
def test_eager_models_record_no_events_and_give_ordinary_tensors(monkeypatch, calls):
    # without graphs there are no shared buffers to order
    fake = FakeCuda(monkeypatch)
    r = runner()
    r.runner = None

    def forward(tensors, module=None):
        with torch.inference_mode():  # as run_module runs the model
            return [t + 1 for t in tensors]

    r.forward = forward
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: self)
    for _ in range(calls):
        (out,) = r.run_device([torch.ones(2, 3)])
        out.add_(1)  # a caller's in-place op: refused on an inference tensor
        assert torch.equal(out, torch.full((2, 3), 3.0))
    assert r._last_call is None and fake.current().waited == []
