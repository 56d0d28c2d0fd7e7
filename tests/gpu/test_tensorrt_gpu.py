"""The real TensorRT calls, for a machine with TensorRT and a CUDA GPU (skipped everywhere else).

**Never run in this project**: no TensorRT installs here, the lent GPU machine included. This
file is what a session with TensorRT runs to check the calls the CPU tests only fake: build,
cache reuse, both precisions, the numpy and the CUDA-tensor paths, profile switching, batch
splitting and ``engine compile``. Reference: ONNX Runtime on the same fp32 graph.
Tolerance 5e-3 normalised max difference for both precisions: fp16 as for the fp16 ONNX graphs
in test_tensorrt_logic.py (measured ~1e-3 there with ONNX Runtime); fp32 the same because
TensorRT allows TF32 (fp16's 10-bit mantissa) in fp32 builds by default on Ampere and later.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trt = pytest.importorskip("tensorrt")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

from test_tensorrt_logic import mlp_ln_softmax  # noqa: E402

from engine.backends.tensorrt.profiles import Profile, ShapeRange  # noqa: E402
from engine.backends.tensorrt.runtime import TensorRTBackend  # noqa: E402
from engine.repo.config import parse_config, validate_config  # noqa: E402
from engine.repo.repository import ModelEntry  # noqa: E402

CFG = """
name: "mlp" platform: "onnxruntime_onnx" max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 24 ] } ]
output [ { name: "probs" data_type: TYPE_FP32 dims: [ 10 ] },
         { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
"""
PROFILES = [Profile((ShapeRange("x", (1, 24), (2, 24), (4, 24)),)),
            Profile((ShapeRange("x", (1, 24), (16, 24), (16, 24)),))]
BOUNDS = {"fp32": 5e-3, "fp16": 5e-3}


def _entry(tmp_path):
    model = mlp_ln_softmax()
    vdir = tmp_path / "repo" / "mlp" / "1"
    vdir.mkdir(parents=True)
    (vdir.parent / "config.pbtxt").write_text(CFG)
    (vdir / "model.onnx").write_bytes(model.SerializeToString())
    return ModelEntry("mlp", validate_config(parse_config(CFG), "<mlp>"), vdir,
                      {"model.onnx": vdir / "model.onnx"}), model


def _reference(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(["probs", "logits"], s.run(["probs", "logits"], {"x": x})))


def _diff(ref, got):
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(tmp_path, precision):
    entry, model = _entry(tmp_path)
    backend = TensorRTBackend(entry, device="cuda", precision=precision, profiles=PROFILES)
    assert backend.plan.built
    for batch in (3, 12, 37):  # profile 0, profile 1, split into 16 + 16 + 5
        x = np.random.default_rng(batch).normal(0, 2, (batch, 24)).astype(np.float32)
        ref = _reference(model, x)
        host = backend.infer({"x": x})
        dev = backend.infer({"x": torch.from_numpy(x).cuda()})
        assert isinstance(dev["probs"], torch.Tensor) and dev["probs"].is_cuda
        for name in ("probs", "logits"):
            assert _diff(ref[name], host[name]) < BOUNDS[precision], (batch, name)
            assert _diff(ref[name], dev[name].cpu().numpy()) < BOUNDS[precision], (batch, name)
    again = TensorRTBackend(entry, device="cuda", precision=precision, profiles=PROFILES)
    assert not again.plan.built and again.plan.path == backend.plan.path


def test_compile_writes_a_loadable_plan(tmp_path):
    from engine.backends.tensorrt.builder import load
    from engine.backends.tensorrt.compile import write_triton_model
    from engine.backends.tensorrt.plans import get_or_build, torch_gpu

    entry, _ = _entry(tmp_path)
    plan = get_or_build(entry, precision="fp16", profiles=PROFILES[1:], gpu=torch_gpu(), trt=trt)
    done = write_triton_model(entry, plan, tmp_path / "triton", max_batch=16)
    _, engine = load(done.plan.read_bytes(), trt=trt)
    assert engine.num_io_tensors == 3
