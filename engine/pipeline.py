"""The pipeline file: which model serves which modality, preprocessing, pooling and policies.

``model_repo/pipeline.toml`` is read with :mod:`tomllib` and validated field by field; every
problem raises :class:`~engine.errors.ConfigError` naming the file, the dotted field and what is
wrong, so a typo never turns into a silent default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import BACKEND_CHOICES  # the per-model engine choice load_backend takes
from .errors import ConfigError
from .media.alpha import BACKGROUNDS
from .media.limits import Limits
from .text import TEXT_FORMS

PIPELINE_FILE = "pipeline.toml"

SAMPLING_MODES = ("fps", "uniform", "keyframes", "all")
POLICY_SOURCES = ("vision", "audio", "text_classifier", "text_similarity")
POOLINGS = ("max", "mean", "window_max")
ACTIVATIONS = ("none", "sigmoid", "softmax")


@dataclass(frozen=True)
class SamplingConfig:
    mode: str = "fps"
    value: float = 1.0
    max_frames: int = 64
    shots: bool = True  # also the keyframes that start a shot (Note [shot starts])


@dataclass(frozen=True)
class VisionConfig:
    model: str
    preprocess: dict[str, Any]  # keyword arguments of engine.ops.preprocess.PreprocessSpec
    sampling: SamplingConfig
    input: str | None = None  # None: the model's only input
    output: str | None = None  # None: the model's first output
    embedding: str = "embedding"  # the output Session.embed pools over time
    batch_size: int = 16
    backend: str = "auto"
    # the pages a transparent still or animation is judged over, the stronger score kept (Note
    # [transparent pictures] in engine/media/alpha.py); Session.embed uses the first
    backgrounds: tuple[str, ...] = ("white", "black")


@dataclass(frozen=True)
class AudioConfig:
    model: str
    frontend: str = "yamnet"
    class_map: str = "class_map.csv"
    input: str | None = None
    output: str | None = None
    embedding: str = "embedding"
    batch_size: int = 64
    backend: str = "auto"
    raise_quiet: bool = True      # quiet sound also judged raised to reference_lufs (Note [loudness])
    reference_lufs: float = -20.0


@dataclass(frozen=True)
class TextEmbeddingConfig:
    model: str
    output: str = "token_embeddings"
    normalize: bool = True
    backend: str = "auto"


@dataclass(frozen=True)
class TextClassifierConfig:
    model: str
    backend: str = "auto"


@dataclass(frozen=True)
class PolicyConfig:
    name: str
    source: str
    threshold: float
    pooling: str = "max"
    window: int = 1
    classes: tuple[int | str, ...] = ()
    activation: str = "none"
    exemplars: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    path: Path
    limits: Limits
    vision: VisionConfig | None
    audio: AudioConfig | None
    text_embedding: TextEmbeddingConfig | None
    text_classifier: TextClassifierConfig | None
    policies: tuple[PolicyConfig, ...] = field(default_factory=tuple)
    text_unicode: str = "nfkc"  # how texts are normalised before the models (Note [text normalisation])
    text_read_disguised: bool = True  # texts also judged as read back (Note [disguised words])

    def backend_for(self, model: str) -> str:
        """The backend the pipeline asks for ``model`` ("auto" for models it does not use)."""
        for section in (self.vision, self.audio, self.text_embedding, self.text_classifier):
            if section is not None and section.model == model:
                return section.backend
        return "auto"


class _Reader:
    """Typed access to one TOML table, reporting errors with the dotted field path."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str):
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"{self.prefix}{key}", problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices=None):
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "required field is missing")
            return default
        value = self.table[key]
        # TOML integers are valid floats; bools are not numbers here.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def floats(self, key: str, n: int, default: Any = ...) -> tuple[float, ...]:
        value = self.get(key, list, default)
        if value is default:
            return default
        if len(value) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise self.error(key, f"expected a list of {n} numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def sub(self, key: str, required: bool = True) -> "_Reader | None":
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.error(key, "required table is missing")
            return None
        if not isinstance(self.table[key], dict):
            raise self.error(key, "expected a table")
        return _Reader(self.path, self.table[key], f"{self.prefix}{key}.")

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown field (typo?)")


def _limits(r: _Reader | None) -> Limits:
    if r is None:
        return Limits()
    d = Limits()
    out = Limits(
        max_bytes=r.get("max_bytes", int, d.max_bytes),
        max_pixels=r.get("max_pixels", int, d.max_pixels),
        max_duration_s=r.get("max_duration_s", float, d.max_duration_s),
        max_frames=r.get("max_frames", int, d.max_frames),
        max_audio_s=r.get("max_audio_s", float, d.max_audio_s),
        timeout_s=r.get("timeout_s", float, d.timeout_s),
        max_text_chars=r.get("max_text_chars", int, d.max_text_chars),
    )
    r.finish()
    return out


def _backend(r: _Reader) -> str:
    return r.get("backend", str, "auto", choices=BACKEND_CHOICES)


def _check_backends(path: Path, sections: dict[str, Any]) -> None:
    """One model, one backend: two sections naming the same model must not disagree."""
    seen: dict[str, tuple[str, str]] = {}
    for where, cfg in sections.items():
        if cfg is None:
            continue
        first = seen.setdefault(cfg.model, (where, cfg.backend))
        if first[1] != cfg.backend:
            raise ConfigError(path, f"{where}.backend", f"model {cfg.model!r} is also used by "
                              f"[{first[0]}] with backend {first[1]!r}, here {cfg.backend!r}")


def _preprocess(r: _Reader) -> dict[str, Any]:
    size = r.get("size", list)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise r.error("size", f"expected [height, width] of positive integers, got {size!r}")
    spec: dict[str, Any] = {
        "size": tuple(size),
        "resize": r.get("resize", str, "shorter", choices=("stretch", "shorter", "letterbox")),
        "filter": r.get("filter", str, "antialias", choices=("antialias", "bilinear")),
        "scale": r.get("scale", float, 1.0),
        "mean": r.floats("mean", 3, (0.0, 0.0, 0.0)),
        "std": r.floats("std", 3, (1.0, 1.0, 1.0)),
        "channels": r.get("channels", str, "rgb", choices=("rgb", "bgr")),
        "layout": r.get("layout", str, "nchw", choices=("nchw", "nhwc")),
        "dtype": r.get("dtype", str, "float32", choices=("float32", "float16")),
        "pad_value": r.get("pad_value", float, 0.0),
        "clamp": r.get("clamp", str, "source", choices=("source", "output")),
    }
    resize_to = r.get("resize_to", list, None)
    if resize_to is not None:
        if len(resize_to) != 2 or not all(isinstance(v, int) and v > 0 for v in resize_to):
            raise r.error("resize_to", f"expected [height, width] of positive integers, got {resize_to!r}")
        if resize_to[0] < size[0] or resize_to[1] < size[1]:
            raise r.error("resize_to", f"{resize_to} is smaller than the crop size {size}")
        spec["resize_to"] = tuple(resize_to)
    if any(s == 0 for s in spec["std"]):
        raise r.error("std", "must not contain 0")
    r.finish()
    return spec


def _vision(r: _Reader | None) -> VisionConfig | None:
    if r is None:
        return None
    s = r.sub("sampling", required=False)
    sampling = SamplingConfig()
    if s is not None:
        sampling = SamplingConfig(
            mode=s.get("mode", str, "fps", choices=SAMPLING_MODES),
            value=s.get("value", float, 1.0),
            max_frames=s.get("max_frames", int, 64),
            shots=s.get("shots", bool, True),
        )
        if sampling.value <= 0 or sampling.max_frames <= 0:
            raise s.error("value", "value and max_frames must be positive")
        s.finish()
    out = VisionConfig(
        model=r.get("model", str),
        input=r.get("input", str, None),
        output=r.get("output", str, None),
        embedding=r.get("embedding", str, "embedding"),
        batch_size=r.get("batch_size", int, 16),
        backend=_backend(r),
        sampling=sampling,
        preprocess=_preprocess(r.sub("preprocess")),
        backgrounds=_backgrounds(r),
    )
    r.finish()
    return out


def _backgrounds(r: _Reader) -> tuple[str, ...]:
    pages = r.get("backgrounds", list, ["white", "black"])
    if not pages or len(set(pages)) != len(pages) or not all(p in BACKGROUNDS for p in pages):
        raise r.error("backgrounds", f"expected distinct pages among {', '.join(BACKGROUNDS)}, "
                                     f"got {pages!r}")
    return tuple(pages)


def _audio(r: _Reader | None) -> AudioConfig | None:
    if r is None:
        return None
    out = AudioConfig(
        model=r.get("model", str),
        frontend=r.get("frontend", str, "yamnet", choices=("yamnet",)),
        class_map=r.get("class_map", str, "class_map.csv"),
        input=r.get("input", str, None),
        output=r.get("output", str, None),
        embedding=r.get("embedding", str, "embedding"),
        batch_size=r.get("batch_size", int, 64),
        backend=_backend(r),
        raise_quiet=r.get("raise_quiet", bool, True),
        reference_lufs=r.get("reference_lufs", float, -20.0),
    )
    if not -70.0 < out.reference_lufs <= 0.0:
        raise r.error("reference_lufs", f"must be above -70 and at most 0 LUFS, got {out.reference_lufs}")
    r.finish()
    return out


def _policy(path: Path, index: int, table: Any, sources: set[str]) -> PolicyConfig:
    if not isinstance(table, dict):
        raise ConfigError(path, f"policies[{index}]", "expected a table")
    r = _Reader(path, table, f"policies[{index}].")
    p = PolicyConfig(
        name=r.get("name", str),
        source=r.get("source", str, choices=POLICY_SOURCES),
        threshold=r.get("threshold", float),
        pooling=r.get("pooling", str, "max", choices=POOLINGS),
        window=r.get("window", int, 1),
        classes=tuple(r.get("classes", list, [])),
        activation=r.get("activation", str, "none", choices=ACTIVATIONS),
        exemplars=tuple(r.get("exemplars", list, [])),
    )
    r.finish()
    if p.source not in sources:
        raise r.error("source", f"{p.source!r} has no model configured in this pipeline")
    if p.window < 1:
        raise r.error("window", "must be >= 1")
    if p.source in ("vision", "audio") and not p.classes:
        raise r.error("classes", "a vision or audio policy needs the class ids or names it reads")
    if not all(isinstance(c, (int, str)) and not isinstance(c, bool) for c in p.classes):
        raise r.error("classes", "expected class indices or class names")
    if p.source == "text_similarity" and not (p.exemplars and all(isinstance(e, str) and e for e in p.exemplars)):
        raise r.error("exemplars", "a text_similarity policy needs non-empty exemplar phrases")
    return p


def load_pipeline(repo: str | Path) -> Pipeline:
    """Read and validate ``<repo>/pipeline.toml``."""
    path = Path(repo) / PIPELINE_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "<file>", "pipeline file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "<syntax>", str(e)) from None

    root = _Reader(path, data, "")
    limits = _limits(root.sub("limits", required=False))
    vision = _vision(root.sub("vision", required=False))
    audio = _audio(root.sub("audio", required=False))
    text = root.sub("text", required=False)
    embedding = classifier = None
    text_unicode = "nfkc"
    read_disguised = True
    if text is not None:
        text_unicode = text.get("unicode", str, "nfkc", choices=TEXT_FORMS)
        read_disguised = text.get("read_disguised", bool, True)
        e = text.sub("embedding", required=False)
        if e is not None:
            embedding = TextEmbeddingConfig(
                model=e.get("model", str),
                output=e.get("output", str, "token_embeddings"),
                normalize=e.get("normalize", bool, True),
                backend=_backend(e),
            )
            e.finish()
        c = text.sub("classifier", required=False)
        if c is not None:
            classifier = TextClassifierConfig(model=c.get("model", str), backend=_backend(c))
            c.finish()
        text.finish()

    sources = {
        name
        for name, cfg in (
            ("vision", vision),
            ("audio", audio),
            ("text_classifier", classifier),
            ("text_similarity", embedding),
        )
        if cfg is not None
    }
    _check_backends(path, {"vision": vision, "audio": audio, "text.embedding": embedding,
                           "text.classifier": classifier})
    raw = root.get("policies", list, [])
    policies = tuple(_policy(path, i, t, sources) for i, t in enumerate(raw))
    names = [p.name for p in policies]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(path, f"policies[{i}].name", f"duplicate policy name {n!r}")
    root.finish()
    return Pipeline(path, limits, vision, audio, embedding, classifier, policies, text_unicode,
                    read_disguised)
