"""TensorRT backend, the parts that do not need TensorRT (issue 3).

* :mod:`.fp16`     - fp32 ONNX -> mixed fp16 ONNX for strongly typed networks (TensorRT 11);
* :mod:`.profiles` - optimisation profiles (min/opt/max shapes) from config.pbtxt;
* :mod:`.cache`    - engine cache key, plan + sidecar layout, timing cache path, Triton layout;
* :mod:`.builder`  - the thin TensorRT layer (lazy ``import tensorrt``).

There is no TensorRT backend class yet: running an engine (execute_async_v3, device buffers)
is not written. The TensorRT calls in :mod:`.builder` have not run in this project's CI.
Importing this package does not import ``tensorrt`` or ``onnx``.
"""

from __future__ import annotations

from engine.backends.tensorrt.builder import build_engine, build_options, import_tensorrt, load
from engine.backends.tensorrt.cache import EngineKey, key_for, lookup, plan_for_triton, store, timing_cache_path
from engine.backends.tensorrt.profiles import Profile, ShapeRange, profile_from_config, text_profile

__all__ = [
    "build_engine", "build_options", "EngineKey", "import_tensorrt", "key_for", "load", "lookup",
    "plan_for_triton", "Profile", "profile_from_config", "ShapeRange", "store", "text_profile",
    "timing_cache_path",
]
