"""Turn model outputs over time into per-policy scores with evidence.

A vision or audio policy reads some classes of a model's per-step output (one step = one
sampled frame or one audio window), takes the strongest selected class per step, and pools the
steps over time with the native segment pooling kernel (``max``, ``mean`` or ``window_max``:
the maximum over sliding windows of the window mean, so one violating scene flags a video
without one noisy frame doing so). Text policies take the maximum over the item's texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ConfigError, ModelError
from .ops.pooling import segment_pool
from .pipeline import PolicyConfig
from .verdict import Evidence, PolicyResult


def activate(x: np.ndarray, activation: str) -> np.ndarray:
    """Apply the policy's activation to raw model outputs of shape [steps, classes]."""
    x = np.asarray(x, dtype=np.float32)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    if activation == "softmax":
        z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return x


def resolve_classes(policy: PolicyConfig, class_names: Sequence[str] | None, n_classes: int,
                    pipeline_path: object) -> np.ndarray:
    """Class ids of a policy; names are looked up in the model's class map."""
    ids = []
    for i, c in enumerate(policy.classes):
        if isinstance(c, str):
            if class_names is None or c not in class_names:
                raise ConfigError(pipeline_path, f"policy {policy.name}.classes[{i}]",
                                  f"unknown class name {c!r}")
            ids.append(list(class_names).index(c))
        else:
            if not 0 <= c < n_classes:
                raise ConfigError(pipeline_path, f"policy {policy.name}.classes[{i}]",
                                  f"class id {c} out of range [0, {n_classes})")
            ids.append(c)
    return np.asarray(ids, dtype=np.int64)


def pool_over_time(per_step: np.ndarray, pooling: str, window: int) -> float:
    """Pool a [steps] score sequence into one score with the native segment kernel."""
    steps = np.ascontiguousarray(per_step, dtype=np.float32).reshape(-1, 1)
    offsets = np.array([0, steps.shape[0]], dtype=np.int64)
    return float(segment_pool(steps, offsets, mode=pooling, window=window)[0, 0])


def score_timed(policy: PolicyConfig, outputs: np.ndarray, class_ids: np.ndarray,
                times: Sequence[tuple[float, float]], modality: str, model: str,
                class_names: Sequence[str] | None = None) -> PolicyResult:
    """Score a vision or audio policy from per-step outputs [steps, classes].

    ``times`` gives each step's (start, end) in seconds; a frame's start equals its end.
    """
    probs = activate(outputs, policy.activation)[:, class_ids]  # [steps, selected]
    per_step = probs.max(axis=1)
    score = pool_over_time(per_step, policy.pooling, policy.window)
    return timed_result(policy, score, per_step, class_ids[probs.argmax(axis=1)], times, modality,
                        model, class_names)


def timed_result(policy: PolicyConfig, score: float, per_step: np.ndarray, best_class: np.ndarray,
                 times: Sequence[tuple[float, float]], modality: str, model: str,
                 class_names: Sequence[str] | None = None) -> PolicyResult:
    """The result of a vision or audio policy from its pooled ``score`` and, per step, the
    strongest selected class's score ``per_step`` and id ``best_class``: the evidence is the
    steps at or above the threshold (else the strongest one), their times, and the class name
    at the peak. Shared by :func:`score_timed` and the device pipeline, which pools on the GPU
    and brings back only these per-step values."""
    _check_finite(policy, score, model)
    hits = np.flatnonzero(per_step >= policy.threshold)
    if hits.size == 0:
        hits = np.array([int(per_step.argmax())])
    stamps = tuple(float(times[i][0]) for i in hits)
    segment = (float(times[hits[0]][0]), float(times[hits[-1]][1]))
    peak = int(hits[per_step[hits].argmax()])
    detail = None
    if class_names is not None:
        detail = class_names[int(best_class[peak])]
    return PolicyResult(policy.name, float(score), policy.threshold,
                        Evidence(modality, model, stamps, segment, detail=detail))


def score_texts(policy: PolicyConfig, per_text: np.ndarray, model: str,
                details: Sequence[str] | None = None) -> PolicyResult:
    """Score a text policy from one score per text of the item (max over texts)."""
    per_text = np.asarray(per_text, dtype=np.float32).reshape(-1)
    best = int(per_text.argmax())
    score = pool_over_time(per_text, policy.pooling, policy.window)
    _check_finite(policy, score, model)
    return PolicyResult(policy.name, score, policy.threshold,
                        Evidence("text", model, index=best,
                                 detail=None if details is None else details[best]))


def _check_finite(policy: PolicyConfig, score: float, model: str) -> None:
    """A NaN score is below every threshold: it would pass an item nobody judged. Inputs are kept
    finite (engine.media.audio sanitises samples); should a model still give one, the item fails."""
    if not np.isfinite(score):
        raise ModelError(f"policy {policy.name}: {model} gave a non-finite score ({score})")
