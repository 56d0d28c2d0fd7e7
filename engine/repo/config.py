"""Parse and validate Triton ``config.pbtxt`` files.

The text is parsed with :mod:`google.protobuf.text_format` against Triton's own
``inference.ModelConfig`` message (``tritonclient.grpc.model_config_pb2``), so a file that
loads here uses exactly Triton's field names and types.  Every problem is reported as
:class:`~engine.errors.ConfigError` naming the file, the field and the problem (for syntax
errors also the line and column).
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from engine.errors import ConfigError

ModelConfig = mc.ModelConfig

#: ``platform`` values Triton knows (the engine itself runs only ``onnxruntime_onnx``).
KNOWN_PLATFORMS = frozenset({
    "onnxruntime_onnx",
    "tensorrt_plan",
    "pytorch_libtorch",
    "tensorflow_graphdef",
    "tensorflow_savedmodel",
    "ensemble",
})
#: ``backend`` values: Triton's backends plus the engine-only ``sklearn`` backend.
KNOWN_BACKENDS = frozenset({
    "onnxruntime",
    "tensorrt",
    "pytorch",
    "tensorflow",
    "python",
    "openvino",
    "fil",
    "dali",
    "sklearn",  # engine-only (Triton has no sklearn backend)
})
#: platform -> the backend name Triton associates with it.
PLATFORM_BACKEND = {
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt_plan": "tensorrt",
    "pytorch_libtorch": "pytorch",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
}

_FIELD_NAMED = re.compile(r'no field named "?([A-Za-z_][\w]*)"?')
_FIELD_BEFORE = re.compile(r"([A-Za-z_]\w*)\s*:?\s*\[?\s*$")


def _parse_error_field(text: str, err: text_format.ParseError) -> str:
    m = _FIELD_NAMED.search(str(err))
    if m:
        return m.group(1)
    line_no, col = err.GetLine(), err.GetColumn()
    lines = text.splitlines()
    if line_no and 1 <= line_no <= len(lines) and col:
        prefix = lines[line_no - 1][: max(col - 1, 0)]
        m = _FIELD_BEFORE.search(prefix)
        if m:
            return m.group(1)
    return "<syntax>"


def parse_config(text: str, path: str | Path = "<string>") -> mc.ModelConfig:
    """Parse config text (no validation). Syntax errors -> ConfigError with line/col."""
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        field = _parse_error_field(text, e)
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e)
        # drop protobuf's own "L:C : " prefix, we add a clearer one
        msg = re.sub(r"^\d+:\d+\s*:\s*", "", msg)
        where = f"line {line} col {col}: " if line else ""
        raise ConfigError(path, field, f"{where}{msg}") from None
    return cfg


def _check_tensors(path: Path, kind: str, tensors, allow_empty: bool = False) -> None:
    if not tensors and not allow_empty:
        raise ConfigError(path, kind, f"at least one {kind} is required")
    seen: set[str] = set()
    for i, t in enumerate(tensors):
        where = f"{kind}[{i}]"
        if not t.name:
            raise ConfigError(path, f"{where}.name", "missing tensor name")
        if t.name in seen:
            raise ConfigError(path, f"{where}.name", f"duplicate {kind} name {t.name!r}")
        seen.add(t.name)
        if t.data_type == mc.TYPE_INVALID:
            raise ConfigError(path, f"{where}.data_type", f"{kind} {t.name!r} has no data_type")
        if not t.dims:
            raise ConfigError(path, f"{where}.dims", f"{kind} {t.name!r} has no dims")
        for d in t.dims:
            if d == 0 or d < -1:
                raise ConfigError(
                    path, f"{where}.dims", f"{kind} {t.name!r}: invalid dim {d} (use -1 for dynamic)"
                )


def validate_config(cfg: mc.ModelConfig, path: str | Path, folder_name: str | None = None) -> mc.ModelConfig:
    """Semantic checks; fills ``name`` from the folder when it is omitted (as Triton does)."""
    path = Path(path)
    if folder_name is not None:
        if not cfg.name:
            cfg.name = folder_name
        elif cfg.name != folder_name:
            raise ConfigError(
                path, "name", f"model name {cfg.name!r} does not match its folder {folder_name!r}"
            )
    if not cfg.name:
        raise ConfigError(path, "name", "missing model name")
    if cfg.max_batch_size < 0:
        raise ConfigError(path, "max_batch_size", f"must be >= 0, got {cfg.max_batch_size}")
    if not cfg.platform and not cfg.backend:
        raise ConfigError(path, "platform", "either platform or backend must be set")
    if cfg.platform and cfg.platform not in KNOWN_PLATFORMS:
        raise ConfigError(
            path, "platform", f"unknown platform {cfg.platform!r} (known: {', '.join(sorted(KNOWN_PLATFORMS))})"
        )
    if cfg.backend and cfg.backend not in KNOWN_BACKENDS:
        raise ConfigError(
            path, "backend", f"unknown backend {cfg.backend!r} (known: {', '.join(sorted(KNOWN_BACKENDS))})"
        )
    if cfg.platform and cfg.backend:
        expect = PLATFORM_BACKEND.get(cfg.platform)
        if expect and cfg.backend != expect:
            raise ConfigError(
                path, "backend", f"backend {cfg.backend!r} contradicts platform {cfg.platform!r}"
            )
    if cfg.platform != "ensemble":
        _check_tensors(path, "input", cfg.input)
        _check_tensors(path, "output", cfg.output)
    vp = cfg.version_policy
    if vp.WhichOneof("policy_choice") == "latest" and vp.latest.num_versions < 1:
        raise ConfigError(path, "version_policy.latest.num_versions", "must be >= 1")
    return cfg


def load_config(path: str | Path) -> mc.ModelConfig:
    """Load ``<model>/config.pbtxt`` (or a path to a model folder) and validate it."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.pbtxt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "<file>", "config.pbtxt not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "<file>", f"cannot read: {e}") from None
    cfg = parse_config(text, path)
    return validate_config(cfg, path, folder_name=path.parent.name)


def data_type_name(dt: int) -> str:
    return mc.DataType.Name(dt)
