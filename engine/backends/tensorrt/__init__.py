"""TensorRT backend (issue 3): engine build and cache, runtime backend, ``engine compile``.

* :mod:`.fp16`     - fp32 ONNX -> mixed fp16 ONNX for strongly typed networks (TensorRT 11);
* :mod:`.profiles` - optimisation profiles (min/opt/max shapes) from config.pbtxt;
* :mod:`.cache`    - engine cache key, plan + sidecar layout, timing cache path, Triton layout;
* :mod:`.builder`  - the thin TensorRT build/deserialize layer (lazy ``import tensorrt``);
* :mod:`.plans`    - get-or-build a model's engine through the cache (runtime and compile);
* :mod:`.tensors`  - engine IO vs config.pbtxt, dtype mapping, profile choice, output shapes;
* :mod:`.memory`   - torch buffers, the caller's stream and the current device;
* :mod:`.runtime`  - :class:`TensorRTBackend`: ``set_input_shape`` / ``set_tensor_address`` /
  ``execute_async_v3`` on the torch stream, numpy or device tensors in and out;
* :mod:`.compile`  - ``engine compile``: engines ahead of time as a Triton ``tensorrt_plan`` repository.

**The TensorRT calls have never run in this project**: TensorRT cannot be installed anywhere
it is built or tested, the lent GPU machine included. Everything around them is tested on the
CPU with a fake ``tensorrt`` module (tests/fake_tensorrt.py).
Importing this package does not import ``tensorrt``, ``torch`` or ``onnx``.
"""

from __future__ import annotations

from engine.backends.tensorrt.builder import build_engine, build_options, import_tensorrt, load
from engine.backends.tensorrt.cache import EngineKey, key_for, lookup, plan_for_triton, store, timing_cache_path
from engine.backends.tensorrt.plans import GpuInfo, engine_profiles, get_or_build
from engine.backends.tensorrt.profiles import Profile, ShapeRange, profile_from_config, text_profile
from engine.backends.tensorrt.runtime import TensorRTBackend

__all__ = [
    "build_engine", "build_options", "engine_profiles", "EngineKey", "get_or_build", "GpuInfo",
    "import_tensorrt", "key_for", "load", "lookup", "plan_for_triton", "Profile", "profile_from_config",
    "ShapeRange", "store", "TensorRTBackend", "text_profile", "timing_cache_path",
]
