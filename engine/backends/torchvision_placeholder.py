"""A stand-in ``torchvision`` for importing onnx2torch where no torchvision wheel works.

Why this exists: onnx2torch imports torchvision at package import (its NonMaxSuppression and
RoiAlign converters: ``import torchvision`` and ``from torchvision.ops import roi_align``), but no
torchvision wheel runs next to the pinned ``torch==2.13.0+cpu``: PyPI's torchvision 0.28.0 is a
CUDA build ("operator torchvision::nms does not exist" on the CPU torch) and 0.29 needs torch 2.14;
installing either would also pull a multi-GB CUDA torch. onnx2torch is therefore installed with
``--no-deps`` (scripts/setup.sh), and none of the engine's models has an NMS or RoiAlign node.

:func:`import_onnx2torch` imports a real torchvision when one imports and uses it. Otherwise it
puts these placeholder modules in ``sys.modules`` only while onnx2torch imports and removes them
afterwards, so nothing else in the process (transformers, user code) sees a fake torchvision.
Each placeholder op raises :class:`~engine.errors.ModelError`; the torch backend also refuses
graphs with those nodes at load time (:data:`TORCHVISION_OPS`).
"""

from __future__ import annotations

import logging
import sys
import types

from engine.errors import ModelError

log = logging.getLogger(__name__)

#: ONNX ops whose onnx2torch converters call torchvision.
TORCHVISION_OPS = frozenset({"NonMaxSuppression", "RoiAlign"})
_PLACEHOLDER_OPS = ("nms", "roi_align", "box_convert")


def _unavailable(op: str):
    def raise_unavailable(*args, **kwargs):
        raise ModelError(
            f"torchvision.ops.{op} is needed by this graph but torchvision is not usable here "
            "(no wheel matches the pinned torch); the torch backend cannot run NonMaxSuppression "
            "or RoiAlign nodes"
        )

    raise_unavailable.__name__ = op
    return raise_unavailable


def placeholder_modules() -> dict[str, types.ModuleType]:
    """``{"torchvision": ..., "torchvision.ops": ...}`` whose ops raise ModelError."""
    ops = types.ModuleType("torchvision.ops", "engine placeholder: see engine.backends.torchvision_placeholder")
    for op in _PLACEHOLDER_OPS:
        setattr(ops, op, _unavailable(op))
    tv = types.ModuleType("torchvision", ops.__doc__)
    tv.ops = ops
    tv.ENGINE_PLACEHOLDER = True
    return {"torchvision": tv, "torchvision.ops": ops}


def real_torchvision_works() -> bool:
    """True when ``import torchvision`` succeeds (its C++ ops registered for this torch)."""
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a mismatched build raises RuntimeError, not ImportError
        # a failed import can leave half-initialised torchvision submodules behind
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        log.debug("torchvision does not import (%s: %s); using the placeholder", type(e).__name__, e)
        return False
    return not getattr(sys.modules["torchvision"], "ENGINE_PLACEHOLDER", False)


def import_onnx2torch() -> types.ModuleType:
    """``import onnx2torch``, with the placeholder torchvision when the real one does not import."""
    if "onnx2torch" in sys.modules or real_torchvision_works():
        import onnx2torch

        return onnx2torch
    placeholders = placeholder_modules()
    sys.modules.update(placeholders)
    try:
        import onnx2torch
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return onnx2torch


def using_placeholder() -> bool:
    """True when the imported onnx2torch was bound to the placeholder torchvision."""
    nms = sys.modules.get("onnx2torch.node_converters.nms")
    tv = getattr(nms, "torchvision", None)
    return bool(getattr(tv, "ENGINE_PLACEHOLDER", False))
