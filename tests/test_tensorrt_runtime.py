"""TensorRTBackend and its CPU logic, driven by the fake ``tensorrt`` module of fake_tensorrt.py.

The fake engine computes ``y = 2 x + 1`` and ``n = sum(ids, axis=1)`` (plus an engine-only
output ``extra``) on the host memory behind the addresses the backend binds, and refuses input
shapes outside the active profile as TensorRT does; so a wrong profile, shape, address, output
size or dtype shows up as a failed call or wrong numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.backends import Backend  # noqa: E402
from engine.backends.base import TensorSpec  # noqa: E402
from engine.backends.tensorrt import cache as trtc  # noqa: E402
from engine.backends.tensorrt import tensors as io  # noqa: E402
from engine.backends.tensorrt.plans import GpuInfo, engine_profiles, get_or_build  # noqa: E402
from engine.backends.tensorrt.profiles import Profile, ShapeRange  # noqa: E402
from engine.backends.tensorrt.memory import is_tensor_input  # noqa: E402
from engine.backends.tensorrt.runtime import TensorRTBackend  # noqa: E402
from engine.errors import InputError, ModelError  # noqa: E402
from engine.repo.config import parse_config, validate_config  # noqa: E402
from engine.repo.repository import ModelEntry  # noqa: E402
from fake_tensorrt import FakeEngine, HostMemory, aligned_tensor, fake_trt  # noqa: E402

TOY_CFG = """
name: "toy" platform: "onnxruntime_onnx" max_batch_size: 32
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "n" data_type: TYPE_INT64 dims: [ 1 ] } ]
parameters: { key: "max_seq_length" value: { string_value: "64" } }
"""
H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
# smallest first: batches up to 8 and sequences up to 16 run under profile 0
PROFILES = [
    Profile((ShapeRange("x", (1, 4), (4, 4), (8, 4)), ShapeRange("ids", (1, 1), (4, 8), (8, 16)))),
    Profile((ShapeRange("x", (1, 4), (16, 4), (32, 4)), ShapeRange("ids", (1, 1), (16, 32), (32, 64)))),
]
IO = [("x", "INPUT", "FLOAT", (-1, 4)), ("ids", "INPUT", "INT64", (-1, -1)),
      ("y", "OUTPUT", "FLOAT", (-1, 4)), ("extra", "OUTPUT", "HALF", (-1, 2)),
      ("n", "OUTPUT", "INT64", (-1, 1))]


def toy_engine(io=IO, profiles=PROFILES):
    def shapes(s):
        b = s["x"][0]
        return {"y": (b, 4), "n": (b, 1), "extra": (b, 2)}

    def compute(i):
        b = i["x"].shape[0]
        return {"y": 2 * i["x"] + 1, "n": i["ids"].sum(axis=1, keepdims=True),
                "extra": np.zeros((b, 2), np.float16)}

    return FakeEngine(io, profiles, shapes, compute)


def toy_entry(tmp_path, cfg_text=TOY_CFG, onnx=b"toy onnx bytes"):
    vdir = tmp_path / "repo" / "toy" / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir.parent / "config.pbtxt").write_text(cfg_text)
    (vdir / "model.onnx").write_bytes(onnx)
    cfg = validate_config(parse_config(cfg_text), "<toy>")
    return ModelEntry("toy", cfg, vdir, {"model.onnx": vdir / "model.onnx"})


def make_backend(entry, trt=None, **kw):
    trt = trt or fake_trt("10.13.0", inputs=("ids", "x"), engine=toy_engine())
    kw.setdefault("profiles", PROFILES)
    return TensorRTBackend(entry, trt=trt, memory=HostMemory(), gpu=H100, **kw), trt


def feed(batch, seq, rng=None):
    rng = rng or np.random.default_rng(batch * 100 + seq)
    return {"x": rng.normal(size=(batch, 4)).astype(np.float32),
            "ids": rng.integers(0, 1000, (batch, seq))}


def expect(f):
    return {"y": 2 * f["x"] + 1, "n": np.asarray(f["ids"]).sum(axis=1, keepdims=True)}


# --------------------------------------------------------------------------- pure logic
def test_numpy_dtype_mapping():
    trt = fake_trt("10.13.0")
    assert io.numpy_dtype(trt, trt.DataType.HALF) == np.float16
    assert io.numpy_dtype(trt, trt.DataType.INT64) == np.int64
    assert io.numpy_dtype(trt, trt.DataType.BOOL) == np.bool_
    with pytest.raises(ModelError, match="no numpy equivalent"):
        io.numpy_dtype(trt, trt.DataType.BF16)
    assert io.torch_dtype(np.dtype(np.float16)) == torch.float16
    assert io.numpy_of_torch(torch.int32) == np.int32
    assert io.numpy_of_torch(torch.bfloat16) is None


def test_read_io_and_check_against_config():
    trt = fake_trt("10.13.0")
    ins, outs = io.read_io(trt, toy_engine())
    assert [(s.name, s.dtype, s.shape) for s in ins] == [("x", np.float32, (-1, 4)), ("ids", np.int64, (-1, -1))]
    assert [s.name for s in outs] == ["y", "extra", "n"]
    cfg_in = [TensorSpec("x", np.dtype(np.float32), (4,)), TensorSpec("ids", np.dtype(np.int64), (-1,))]
    cfg_out = [TensorSpec("y", np.dtype(np.float32), (4,))]
    io.check_io("toy", 32, (cfg_in, cfg_out), (ins, outs))  # an engine-only output is fine
    bad = [
        ((cfg_in, [TensorSpec("y", np.dtype(np.float16), (4,))]), "but float16 in config"),
        ((cfg_in, [TensorSpec("y", np.dtype(np.float32), (5,))]), "contradicts config dims"),
        ((cfg_in, [TensorSpec("z", np.dtype(np.float32), (4,))]), "'z' is not in the ONNX model"),
        ((cfg_in[:1], cfg_out), "not in config.pbtxt"),
        (([TensorSpec("x", np.dtype(np.float32), (4, 1)), cfg_in[1]], cfg_out), "rank 2"),
    ]
    for config, match in bad:
        with pytest.raises(ModelError, match=match):
            io.check_io("toy", 32, config, (ins, outs))


@pytest.mark.parametrize("shapes,want", [
    ({"x": (3, 4), "ids": (3, 16)}, 0),
    ({"x": (8, 4), "ids": (8, 1)}, 0),
    ({"x": (9, 4), "ids": (9, 16)}, 1),  # batch beyond profile 0
    ({"x": (2, 4), "ids": (2, 17)}, 1),  # sequence beyond profile 0
])
def test_choose_profile(shapes, want):
    assert io.choose_profile(PROFILES, shapes) == want


def test_choose_profile_none_fits():
    with pytest.raises(InputError, match="profile 0.*profile 1.*outside"):
        io.choose_profile(PROFILES, {"x": (2, 4), "ids": (2, 65)})


def test_split_size_and_output_shapes():
    assert io.split_size(PROFILES, 32) == 32
    assert io.split_size(PROFILES[:1], 32) == 8
    assert io.split_size(PROFILES, 16) == 16  # never above the config's max_batch_size
    assert io.split_size(PROFILES, 0) == 0
    outs = [TensorSpec("y", np.dtype(np.float32), (-1, 4))]
    assert io.output_shapes("toy", outs, {"y": [3, 4]}) == {"y": (3, 4)}
    with pytest.raises(ModelError, match="data-dependent"):
        io.output_shapes("toy", outs, {"y": [3, -1]})


def test_is_tensor_input():
    assert is_tensor_input(torch.zeros(2)) and not is_tensor_input(np.zeros(2)) and not is_tensor_input([1.0])


def test_engine_profiles_from_config(tmp_path):
    entry = toy_entry(tmp_path)
    (p,) = engine_profiles(entry, opt_batch=16)
    assert p["ids"] == ShapeRange("ids", (1, 1), (16, 32), (32, 64))  # max_seq_length 64
    assert p["x"] == ShapeRange("x", (1, 4), (16, 4), (32, 4))
    (p,) = engine_profiles(entry, opt_batch=100)  # a pipeline batch above max_batch_size is capped
    assert p["x"].opt == (32, 4)


# --------------------------------------------------------------------------- engine cache
def test_get_or_build_stores_then_reuses(tmp_path):
    entry = toy_entry(tmp_path)
    trt = fake_trt("10.13.0", inputs=("ids", "x"))
    first = get_or_build(entry, precision="fp16", profiles=PROFILES, gpu=H100, trt=trt)
    assert first.built and first.path.read_bytes() == b"PLAN"
    assert first.key.onnx_sha256 == trtc.sha256_bytes(b"toy onnx bytes")
    timing = tmp_path / "repo" / ".trt_timing" / "10.13.0_NVIDIA-H100-80GB-HBM3_sm90.cache"
    assert timing.read_bytes() == b"TIMING"
    trt2 = fake_trt("10.13.0", inputs=("ids", "x"))
    again = get_or_build(entry, precision="fp16", profiles=PROFILES, gpu=H100, trt=trt2)
    assert not again.built and again.path == first.path
    trt2._builder.build_serialized_network.assert_not_called()
    # the stored timing cache is handed to the next build of the same TensorRT + GPU
    get_or_build(entry, precision="fp32", profiles=PROFILES, gpu=H100, trt=trt2)
    trt2._config.create_timing_cache.assert_called_once_with(b"TIMING")


def test_foreign_engine_is_rebuilt_not_loaded(tmp_path):
    entry = toy_entry(tmp_path)
    # plans for another GPU and another TensorRT version are in the cache
    for trt_version, gpu in (("10.13.0", GpuInfo("NVIDIA L4", "8.9")), ("10.9.0", H100)):
        key = trtc.key_for(b"toy onnx bytes", trt_version=trt_version, gpu_name=gpu.name,
                           compute_capability=gpu.compute_capability, precision="fp16", profiles=PROFILES)
        trtc.store(entry.version_dir, key, b"FOREIGN")
    backend, trt = make_backend(entry)
    trt._builder.build_serialized_network.assert_called_once()
    assert trt._plans == [b"PLAN"]
    assert backend.plan.built and backend.plan.key.gpu_name == H100.name


def test_refused_cached_plan_is_rebuilt_once(tmp_path):
    entry = toy_entry(tmp_path)
    get_or_build(entry, precision="fp16", profiles=PROFILES, gpu=H100,
                 trt=fake_trt("10.13.0", inputs=("ids", "x"), plan=b"STALE"))
    trt = fake_trt("10.13.0", inputs=("ids", "x"), plan=b"FRESH")
    engine = toy_engine()
    trt._runtime.deserialize_cuda_engine.side_effect = lambda data: (trt._plans.append(data)
                                                                     or (engine if data == b"FRESH" else None))
    backend, _ = make_backend(entry, trt=trt)
    assert trt._plans == [b"STALE", b"FRESH"] and backend.plan.path.read_bytes() == b"FRESH"
    # a freshly built plan that TensorRT refuses is an error, not a loop
    entry2 = toy_entry(tmp_path / "other", onnx=b"other onnx")
    trt3 = fake_trt("10.13.0", inputs=("ids", "x"), engine=None)
    with pytest.raises(ModelError, match="could not deserialize"):
        make_backend(entry2, trt=trt3)
    assert len(trt3._plans) == 1


# --------------------------------------------------------------------------- backend
def test_backend_protocol_and_io_checks(tmp_path):
    entry = toy_entry(tmp_path)
    backend, _ = make_backend(entry)
    assert isinstance(backend, Backend) and backend.name == "tensorrt" and backend.max_batch_size == 32
    bad_io = [r if r[0] != "n" else ("n", "OUTPUT", "INT32", (-1, 1)) for r in IO]
    with pytest.raises(ModelError, match="'n' is int32 in the model but int64"):
        make_backend(entry, trt=fake_trt("10.13.0", inputs=("ids", "x"), engine=toy_engine(io=bad_io)))
    with pytest.raises(ModelError, match="1 optimisation profiles"):
        make_backend(entry, trt=fake_trt("10.13.0", inputs=("ids", "x"), engine=toy_engine(profiles=PROFILES[:1])))


def test_host_path_small_batch_uses_profile_0(tmp_path):
    backend, trt = make_backend(toy_entry(tmp_path))
    f = feed(3, 8)
    out = backend.infer(f)
    assert set(out) == {"y", "n"}  # the engine-only output is not returned
    np.testing.assert_array_equal(out["y"], expect(f)["y"])
    np.testing.assert_array_equal(out["n"], expect(f)["n"])
    assert out["y"].dtype == np.float32 and out["n"].dtype == np.int64
    ctx = backend.context
    assert "set_optimization_profile_async" not in ctx.call_names()  # a new context is on profile 0
    assert [c for c in ctx.calls if c[0] == "set_input_shape"] == [
        ("set_input_shape", "x", (3, 4)), ("set_input_shape", "ids", (3, 8))]
    assert {c[1] for c in ctx.calls if c[0] == "set_tensor_address"} == {"x", "ids", "y", "n", "extra"}
    assert ctx.calls[-1] == ("execute_async_v3", HostMemory.STREAM)
    # each enqueue waits for the one before (the context's scratch memory is shared)
    backend.infer(f)
    assert backend.memory.waits == [None, 1] and backend.memory.events == 2
    assert backend.memory.scopes == 3  # build/load, then each call


def test_host_path_switches_profiles_as_shapes_change(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    ctx = backend.context
    for batch, seq, profile in ((20, 8, 1), (20, 40, 1), (2, 5, 0), (2, 60, 1)):
        ctx.calls.clear()
        f = feed(batch, seq)
        out = backend.infer(f)
        np.testing.assert_array_equal(out["y"], expect(f)["y"])
        np.testing.assert_array_equal(out["n"], expect(f)["n"])
        assert ctx.profile == profile, (batch, seq)
    # profile 1 -> 1 needs no switch call, 0 -> 1 does
    assert ctx.calls[0] == ("set_optimization_profile_async", 1, HostMemory.STREAM)


def test_host_path_splits_batches_beyond_the_profile_max(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    f = feed(70, 10)
    out = backend.infer(f)
    np.testing.assert_array_equal(out["y"], expect(f)["y"])
    np.testing.assert_array_equal(out["n"], expect(f)["n"])
    shapes = [c[2] for c in backend.context.calls if c[0] == "set_input_shape" and c[1] == "x"]
    assert shapes == [(32, 4), (32, 4), (6, 4)]
    # profiles that stop below max_batch_size split at their own max
    small, _ = make_backend(toy_entry(tmp_path / "s"),
                            trt=fake_trt("10.13.0", inputs=("ids", "x"), engine=toy_engine(profiles=PROFILES[:1])),
                            profiles=PROFILES[:1])
    f = feed(20, 4)
    np.testing.assert_array_equal(small.infer(f)["y"], expect(f)["y"])
    assert [c[2][0] for c in small.context.calls if c[0] == "set_input_shape" and c[1] == "x"] == [8, 8, 4]


def test_input_errors(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    with pytest.raises(InputError, match="outside"):
        backend.infer(feed(2, 65))  # longer than any profile
    with pytest.raises(InputError, match="missing"):
        backend.infer({"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputError, match="shape"):
        backend.infer({"x": np.zeros((2, 5), np.float32), "ids": np.zeros((2, 3), np.int64)})
    empty = backend.infer(feed(0, 3))
    assert empty["y"].shape == (0, 4)
    assert "execute_async_v3" not in backend.context.call_names()


def test_tensor_path_uses_tensors_in_place(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    f = feed(5, 7)
    x, ids = aligned_tensor(f["x"]), aligned_tensor(f["ids"])  # as device allocations are
    out = backend.infer({"x": x, "ids": ids})
    assert isinstance(out["y"], torch.Tensor) and out["y"].dtype == torch.float32
    np.testing.assert_array_equal(out["y"].numpy(), expect(f)["y"])
    np.testing.assert_array_equal(out["n"].numpy(), expect(f)["n"])
    bound = {c[1]: c[2] for c in backend.context.calls if c[0] == "set_tensor_address"}
    assert bound["x"] == x.data_ptr() and bound["ids"] == ids.data_ptr()  # no copies
    assert bound["y"] == out["y"].data_ptr()
    # a second call does not overwrite the tensors the first one returned
    y_before = out["y"].clone()
    backend.infer({"x": x * 0, "ids": ids})
    assert torch.equal(out["y"], y_before)


def test_mixed_host_and_tensor_inputs_give_tensors(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    f = feed(3, 5)
    out = backend.infer({"x": torch.from_numpy(f["x"]), "ids": f["ids"]})
    assert isinstance(out["n"], torch.Tensor)
    np.testing.assert_array_equal(out["n"].numpy(), expect(f)["n"])


class DLPackOnly:
    """An array from another library: only the DLPack protocol, no torch type."""

    def __init__(self, tensor):
        self._t = tensor

    def __dlpack__(self, **kw):
        return self._t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_dlpack_inputs_are_shared_not_copied(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    f = feed(4, 3)
    x, ids = aligned_tensor(f["x"]), aligned_tensor(f["ids"])
    out = backend.infer({"x": DLPackOnly(x), "ids": DLPackOnly(ids)})
    np.testing.assert_array_equal(out["y"].numpy(), expect(f)["y"])
    bound = {c[1]: c[2] for c in backend.context.calls if c[0] == "set_tensor_address"}
    assert bound["x"] == x.data_ptr() and bound["ids"] == ids.data_ptr()


def test_tensor_path_casts_splits_and_rejects(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    f = feed(40, 6)
    ids32 = torch.from_numpy(f["ids"].astype(np.int32))  # same kind: cast on the device
    x = torch.from_numpy(f["x"]).t().contiguous().t()  # non-contiguous view of the same values
    out = backend.infer({"x": x, "ids": ids32})
    np.testing.assert_array_equal(out["y"].numpy(), expect(f)["y"])
    np.testing.assert_array_equal(out["n"].numpy(), expect(f)["n"])
    assert [c[2][0] for c in backend.context.calls if c[0] == "set_input_shape" and c[1] == "x"] == [32, 8]
    with pytest.raises(InputError, match="dtype"):
        backend.infer({"x": torch.zeros((2, 4), dtype=torch.float32), "ids": torch.zeros((2, 3))})
    with pytest.raises(InputError, match="torch.bfloat16"):
        backend.infer({"x": torch.zeros((2, 4), dtype=torch.bfloat16), "ids": torch.zeros((2, 3), dtype=torch.int64)})
    with pytest.raises(InputError, match="shape"):
        backend.infer({"x": torch.zeros((2, 3)), "ids": torch.zeros((2, 3), dtype=torch.int64)})
    with pytest.raises(InputError, match="disagree"):
        backend.infer({"x": torch.zeros((2, 4)), "ids": torch.zeros((3, 3), dtype=torch.int64)})
    empty = backend.infer({"x": torch.zeros((0, 4)), "ids": torch.zeros((0, 3), dtype=torch.int64)})
    assert isinstance(empty["n"], torch.Tensor) and tuple(empty["n"].shape) == (0, 1)


def test_unaligned_tensors_are_copied_before_binding(tmp_path):
    """TensorRT takes 256-byte aligned tensor addresses: the slices of a batch split at 8 rows
    (16- and 24-byte rows) and a caller's view one row in do not start on one, so they are bound
    through aligned copies; aligned slices are bound in place."""
    backend, _ = make_backend(toy_entry(tmp_path), profiles=PROFILES[:1],  # split at 8
                              trt=fake_trt("10.13.0", inputs=("ids", "x"), engine=toy_engine(profiles=PROFILES[:1])))
    f = feed(21, 3)
    x, ids = aligned_tensor(f["x"]), aligned_tensor(f["ids"])
    out = backend.infer({"x": x, "ids": ids})
    np.testing.assert_array_equal(out["y"].numpy(), expect(f)["y"])
    np.testing.assert_array_equal(out["n"].numpy(), expect(f)["n"])
    bound = [c[2] for c in backend.context.calls if c[0] == "set_tensor_address" and c[1] == "x"]
    assert len(bound) == 3 and bound[0] == x.data_ptr() and all(a % 256 == 0 for a in bound)
    out = backend.infer({"x": x[1:], "ids": ids[1:]})
    np.testing.assert_array_equal(out["y"].numpy(), expect(f)["y"][1:])


def test_tensorrt_failures_become_model_errors(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path))
    backend.context.fail_execute = True
    with pytest.raises(ModelError, match="execute_async_v3 failed"):
        backend.infer(feed(2, 3))
    backend.context.fail_execute = False
    backend.context.set_tensor_address = lambda name, ptr: (_ for _ in ()).throw(RuntimeError("bad address"))
    with pytest.raises(ModelError, match="inference failed: bad address"):
        backend.infer(feed(2, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_torch_memory_without_cuda_is_a_model_error():
    from engine.backends.tensorrt.memory import TorchMemory

    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        TorchMemory("cuda")


def test_warmup_and_missing_tensorrt(tmp_path, monkeypatch):
    backend, _ = make_backend(toy_entry(tmp_path))
    backend.warmup()
    assert backend.context.call_names()[-1] == "execute_async_v3"
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(ModelError, match="TensorRT is not installed"):
        TensorRTBackend(toy_entry(tmp_path / "m"), memory=HostMemory(), gpu=H100)


def test_sidecar_of_built_engine(tmp_path):
    backend, _ = make_backend(toy_entry(tmp_path), precision="fp32")
    meta = json.loads(backend.plan.path.with_suffix(".json").read_text())
    assert meta["precision"] == "fp32" and meta["gpu_name"] == H100.name and meta["trt_version"] == "10.13.0"
    assert len(meta["profiles"]) == 2


class CudaArray:
    """A device array of another library on the CUDA Array Interface (v3, with its producer's
    ``stream``), optionally with DLPack as well (CuPy has both, Numba and PyCUDA only the first)."""

    def __init__(self, stream, dlpack: bool):
        self.__cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (1 << 20, False),
                                         "version": 3, "stream": stream}
        if dlpack:
            self.__dlpack__ = lambda **kw: None


class FakeDeviceTensor:
    """What torch.as_tensor gives for a CUDA array, on a machine without CUDA; ``log`` (shared)
    records the order of events."""

    is_cuda = True

    def __init__(self, log, device=0):
        self.log, self.device = log, torch.device("cuda", device)

    def to(self, device):
        self.log.append(("copy to", device))
        return FakeDeviceTensor(self.log, device.index)


@pytest.mark.parametrize("stream,dlpack,on,path,log", [
    (0xABC0, True, 0, "dlpack", []),  # DLPack: torch hands the producer its stream
    (0xABC0, False, 0, "cai", [("wait", 0xABC0, "cuda:0")]),  # interface only: torch's stream waits for the producer's
    (1, False, 0, "cai", [("wait", 1, "cuda:0")]),  # the legacy default stream is a handle too
    (None, False, 0, "cai", []),  # no stream named: nothing queued there
    # data on another GPU: the wait is on that GPU's streams, before the copy reads the data
    (0xABC0, False, 1, "cai", [("wait", 0xABC0, "cuda:1"), ("copy to", torch.device("cuda", 0))]),
])
def test_device_arrays_are_ordered_after_their_producers_stream(monkeypatch, stream, dlpack, on, path, log):
    from engine.backends.tensorrt.memory import adopt_tensor

    taken, events = [], []

    def as_tensor(v, device=None):
        assert device is None  # taken where it is: a copy inside as_tensor would not wait
        taken.append("cai")
        return FakeDeviceTensor(events, on)

    monkeypatch.setattr(torch, "from_dlpack", lambda v: taken.append("dlpack") or FakeDeviceTensor(events, on))
    monkeypatch.setattr(torch, "as_tensor", as_tensor)
    monkeypatch.setattr(torch.cuda, "ExternalStream", lambda ptr, device=None: (ptr, str(device)))

    class Current:
        def __init__(self, device):
            self.device = device

        def wait_stream(self, other):
            assert other[1] == str(self.device)  # a stream of the data's device, waited on there
            events.append(("wait", other[0], other[1]))

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Current(device))
    t = adopt_tensor(CudaArray(stream, dlpack), torch.device("cuda", 0))
    assert isinstance(t, FakeDeviceTensor) and t.device == torch.device("cuda", 0)
    assert taken == [path] and events == log
