"""ONNX Runtime CPU backend.

``InferenceSession.run`` is thread-safe, so one backend instance may be shared by threads;
the session is created once with: CPUExecutionProvider, graph optimisation level ALL,
``intra_op_num_threads`` = ``threads`` (None = ORT's default, one per core), one inter-op
thread (sequential execution) and spinning disabled (idle worker threads sleep instead of
burning CPU between requests).
"""

from __future__ import annotations

import numpy as np

from engine.backends.base import BaseBackend, specs_from_config
from engine.backends.onnx_io import GraphTensor, check_io, onnx_file
from engine.errors import ModelError

_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


def session_options(threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


class OnnxRuntimeBackend(BaseBackend):
    name = "onnxruntime"

    def __init__(self, entry, *, threads: int | None = None):
        import onnxruntime as ort

        cfg = entry.config
        inputs, outputs = specs_from_config(cfg)
        super().__init__(entry.name, cfg.max_batch_size, inputs, outputs)
        self.path = path = onnx_file(entry)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"{entry.name}: ONNX Runtime cannot load {path}: {e}") from None
        self._check_io()
        self._output_names = [s.name for s in self.outputs]

    def _check_io(self) -> None:
        def graph(nodes):
            return {n.name: GraphTensor(_ORT_TYPES.get(n.type), tuple(n.shape)) for n in nodes}

        check_io(self.model_name, self.max_batch_size, self.inputs, self.outputs,
                 graph(self.session.get_inputs()), graph(self.session.get_outputs()))

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        try:
            res = self.session.run(self._output_names, feed)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{self.model_name}: inference failed: {e}") from None
        return dict(zip(self._output_names, res))
