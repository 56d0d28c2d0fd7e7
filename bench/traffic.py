"""Traffic mix for ``bench plan``: peak rates per media type, video durations and sampling,
headroom and utilisation target, read from YAML (see bench/traffic.sample.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Traffic:
    videos_per_s: float = 0.0
    video_duration_s: tuple[tuple[float, float], ...] = ((30.0, 1.0),)  # (seconds, share of videos)
    video_sampling: str = "fps=1"   # fps=V | uniform=N | all
    video_fps: float = 30.0         # source frame rate, only used by sampling "all"
    video_codec: str = "h264"
    resolution: str = "1080p"       # of the videos and images: decode/preprocess figures measured at it
    images_per_s: float = 0.0
    audio_seconds_per_s: float = 0.0
    texts_per_s: float = 0.0
    headroom: float = 0.0           # plan for peak * (1 + headroom)
    utilisation_target: float = 0.8

    def __post_init__(self):
        shares = sum(s for _, s in self.video_duration_s)
        if not math.isclose(shares, 1.0, abs_tol=1e-6):
            raise ValueError(f"video_duration_s shares sum to {shares}, not 1")
        if not 0 < self.utilisation_target <= 1:
            raise ValueError("utilisation_target must be in (0, 1]")
        if self.headroom < 0:
            raise ValueError("headroom must be >= 0")
        _ = self.sampling  # raises on a malformed video_sampling

    @property
    def sampling(self) -> tuple[str, float]:
        mode, _, value = self.video_sampling.partition("=")
        if mode == "all" and not value:
            return "all", self.video_fps
        if mode in ("fps", "uniform") and value:
            return mode, float(value)
        raise ValueError(f"video_sampling must be fps=V, uniform=N or all, got {self.video_sampling!r}")

    def frames_per_video(self, seconds: float) -> float:
        mode, value = self.sampling
        if mode == "uniform":
            return value
        return math.ceil(seconds * value - 1e-9)  # targets k / V for k / V < duration

    @property
    def mean_duration(self) -> float:
        return sum(d * s for d, s in self.video_duration_s)

    @property
    def p99_duration(self) -> float:
        """The shortest duration that 99% of the videos do not exceed."""
        cumulative = 0.0
        for d, s in sorted(self.video_duration_s):
            cumulative += s
            if cumulative >= 0.99 - 1e-9:
                return d
        return max(d for d, _ in self.video_duration_s)

    @property
    def mean_frames_per_video(self) -> float:
        return sum(self.frames_per_video(d) * s for d, s in self.video_duration_s)

    def scaled(self, k: float) -> Traffic:
        return replace(self, videos_per_s=self.videos_per_s * k, images_per_s=self.images_per_s * k,
                       audio_seconds_per_s=self.audio_seconds_per_s * k, texts_per_s=self.texts_per_s * k)


def from_mapping(doc: dict) -> Traffic:
    """``{"peak": {...rates...}, "headroom": h, "utilisation_target": u}`` -> Traffic."""
    peak = dict(doc.get("peak", {}))
    known = {f.name for f in fields(Traffic)}
    extra = (set(peak) | set(doc) - {"peak"}) - known
    if extra:
        raise ValueError(f"unknown traffic keys {sorted(extra)}; known: {sorted(known)}")
    if "video_duration_s" in peak:
        peak["video_duration_s"] = tuple((float(b["seconds"]), float(b["share"])) for b in peak["video_duration_s"])
    kw = {**peak, **{k: v for k, v in doc.items() if k != "peak"}}
    return Traffic(**kw)


def load_traffic(path: str | Path) -> Traffic:
    import yaml  # PyYAML, in the bench extra

    return from_mapping(yaml.safe_load(Path(path).read_text()) or {})
