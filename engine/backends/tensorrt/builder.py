"""The thin TensorRT layer: build a serialized engine from ONNX bytes, deserialize one.

**The TensorRT calls in this module have not run in this project's CI**: TensorRT cannot be
installed on the CPU machines. What the tests cover is the logic around them, with a fake
``tensorrt`` module: :func:`build_options` (the TensorRT 10 / 11 precision dispatch),
the order and arguments of the builder calls in :func:`build_engine`, and the
:class:`~engine.errors.ModelError` raised when ``tensorrt`` is missing. The calls follow the
TensorRT 10 Python API (``Builder``, ``OnnxParser``, ``IOptimizationProfile.set_shape``,
``IBuilderConfig.create_timing_cache`` / ``set_timing_cache``, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``) and the TensorRT 11 migration guide.

Precision (see :func:`build_options`):

* TensorRT 10, fp16: weakly typed network from the fp32 graph + ``BuilderFlag.FP16``
  (TensorRT picks fp16 kernels where it judges them accurate enough);
* TensorRT >= 11, fp16: ``BuilderFlag.FP16`` no longer exists and every network is strongly
  typed, so the graph itself is made fp16 first (:func:`engine.backends.tensorrt.fp16.to_fp16`,
  sensitive ops kept fp32) and parsed into a ``STRONGLY_TYPED`` network;
* fp32: no flag, the fp32 graph (strongly typed on 11, where that is the only mode), and TF32
  turned off (``BuilderFlag.TF32`` is on by default: convolutions and matmuls would round their
  inputs to 10-bit mantissas, about fp16's error, in an engine asked for fp32).

``tensorrt`` is imported lazily, only by the functions that need it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from engine.backends.tensorrt.cache import PRECISIONS
from engine.backends.tensorrt.profiles import Profile
from engine.errors import InputError, ModelError

log = logging.getLogger(__name__)

MIN_MAJOR = 10
DEFAULT_WORKSPACE = 4 << 30  # 4 GiB builder scratch memory


def import_tensorrt():
    """``import tensorrt`` or ModelError saying it is not installed."""
    try:
        import tensorrt
    except ImportError as e:
        raise ModelError(
            f"TensorRT is not installed ({e}); install the `tensorrt` wheel matching the CUDA "
            "driver on a machine with an NVIDIA GPU, or use the onnxruntime backend"
        ) from None
    return tensorrt


def trt_major(trt) -> int:
    version = str(getattr(trt, "__version__", ""))
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ModelError(f"cannot read the TensorRT version from {version!r}") from None


@dataclass(frozen=True)
class BuildOptions:
    """How to build for one TensorRT version and precision."""

    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_flag: bool  # config.set_flag(BuilderFlag.FP16)
    fp16_graph: bool  # parse to_fp16(graph) instead of the fp32 graph


def build_options(trt, precision: str) -> BuildOptions:
    """The TensorRT 10 / 11 dispatch (the only version-dependent decision)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}: expected one of {PRECISIONS}")
    major = trt_major(trt)
    if major < MIN_MAJOR:
        raise ModelError(f"TensorRT {trt.__version__} is too old: need >= {MIN_MAJOR}")
    if major == 10:
        if precision == "fp16":
            if not hasattr(trt.BuilderFlag, "FP16"):
                raise ModelError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16")
            return BuildOptions(strongly_typed=False, fp16_flag=True, fp16_graph=False)
        return BuildOptions(strongly_typed=False, fp16_flag=False, fp16_graph=False)
    # >= 11: strong typing only; precision comes from the graph
    return BuildOptions(strongly_typed=True, fp16_flag=False, fp16_graph=precision == "fp16")


def _network_flags(trt, strongly_typed: bool) -> int:
    if not strongly_typed:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    # 11.x: accepted and ignored (always strongly typed); absent in a future release -> 0
    return 0 if flag is None else 1 << int(flag)


def prepare_onnx(onnx_bytes: bytes, options: BuildOptions) -> bytes:
    """The ONNX bytes to parse: unchanged, or the mixed-precision fp16 graph."""
    if not options.fp16_graph:
        return onnx_bytes
    import onnx

    from engine.backends.tensorrt.fp16 import to_fp16

    m16, _ = to_fp16(onnx.load_from_string(onnx_bytes))
    return m16.SerializeToString()


def build_engine(onnx_bytes: bytes, profiles: Sequence[Profile], precision: str,
                 timing_cache: bytes | None = None, *, workspace: int = DEFAULT_WORKSPACE,
                 trt=None) -> tuple[bytes, bytes]:
    """Build a serialized engine; returns ``(plan, timing_cache)``.

    ``timing_cache``: a cache from an earlier build with the same TensorRT and GPU (see
    :func:`engine.backends.tensorrt.cache.timing_cache_path`), or None; a mismatched cache
    is rejected by TensorRT (``ignore_mismatch=False``) and the build starts from an empty one.
    The updated cache is returned for the caller to store (empty if TensorRT gives none).
    ``trt`` = the tensorrt module (tests pass a fake).
    """
    trt = import_tensorrt() if trt is None else trt
    if not profiles:
        raise InputError("build_engine needs at least one optimisation profile")
    options = build_options(trt, precision)
    data = prepare_onnx(onnx_bytes, options)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, options.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse the ONNX graph: {errors or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if options.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    net_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for i, p in enumerate(profiles):
        names = {r.name for r in p.inputs}
        if names != net_inputs:
            raise InputError(f"profile inputs {sorted(names)} differ from the network's {sorted(net_inputs)}")
        prof = builder.create_optimization_profile()
        for r in p.inputs:
            prof.set_shape(r.name, r.min, r.opt, r.max)
        if config.add_optimization_profile(prof) < 0:  # the profile's index, -1 when invalid
            raise ModelError(f"TensorRT rejected optimisation profile {i} ({p}): see the TensorRT log above")
    _set_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError("TensorRT failed to build the engine (see the TensorRT log above)")
    cache = config.get_timing_cache()
    return bytes(plan), (bytes(cache.serialize()) if cache is not None else b"")


def _set_timing_cache(config, timing_cache: bytes | None) -> None:
    """Attach ``timing_cache`` (or a new, empty one) to the builder config. A stored cache that
    TensorRT cannot use costs only build time, so the build then starts from an empty one:
    TensorRT refuses a cache made on another device (``set_timing_cache`` returns False), and a
    damaged file (a partial copy, a disk error) may fail ``create_timing_cache`` itself (an
    exception or None: the docs say neither)."""
    if timing_cache:
        try:
            stored = config.create_timing_cache(timing_cache)
        except Exception as e:  # noqa: BLE001 - any failure here only means "no stored cache"
            log.warning("TensorRT could not read the stored timing cache (%s): building without it", e)
        else:
            if stored is not None and config.set_timing_cache(stored, False):
                return
            log.warning("TensorRT refused the stored timing cache (made on another GPU, or damaged): "
                        "building without it")
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise ModelError("TensorRT refused a new timing cache (see the TensorRT log above)")


def load(plan: bytes, *, trt=None):
    """Deserialize a plan: ``(runtime, engine)``; ModelError if TensorRT is missing or refuses it.

    The runtime is returned with the engine because it must outlive it. Callers check the
    plan with :func:`engine.backends.tensorrt.cache.lookup` first.
    """
    trt = import_tensorrt() if trt is None else trt
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ModelError("TensorRT could not deserialize the plan (built for another TensorRT "
                         "version or GPU?)")
    return runtime, engine

