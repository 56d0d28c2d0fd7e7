"""Result types returned by :class:`engine.Session`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import EngineError


@dataclass(frozen=True)
class Evidence:
    """Where a policy score came from.

    ``timestamps`` are presentation times in seconds of the frames or audio windows that
    reached the threshold (or the single strongest one when none did); ``segment`` spans them.
    For text, ``index`` is the position of the text in the item and ``detail`` the matched
    exemplar or class; for subtitles (modality "subtitles"), ``index`` is the caption's and the
    timestamps and segment its time on screen; for audio of a source with several sound tracks,
    ``index`` is the track. ``background``: the page a transparent still was judged over that gave
    the score ("white", "black"; Note [transparent pictures]). Of a text: ``span``, the
    character span in the text as given of the sentence (or window) that gave the score, and
    ``excerpt`` that sentence (None: the whole text gave it; Note [text segments]); ``read_as``,
    the reading of a disguised text that gave the score ("f u c k" read as "fuck"; Note
    [disguised words]). Of sound: ``gain_db``, the gain quiet sound was raised by to the
    reference loudness when that gave the score (Note [loudness]), and ``channel``, the channel
    judged alone that gave it (Note [cancelling channels]).
    """

    modality: str
    model: str
    timestamps: tuple[float, ...] = ()
    segment: tuple[float, float] | None = None
    index: int | None = None
    detail: str | None = None
    background: str | None = None
    span: tuple[int, int] | None = None
    excerpt: str | None = None
    read_as: str | None = None
    gain_db: float | None = None
    channel: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that apply, in declaration order (times rounded to milliseconds)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            if f.name in ("timestamps", "segment"):
                value = [round(t, 3) for t in value]
            elif f.name == "span":
                value = list(value)
            d[f.name] = value
        return d


@dataclass(frozen=True)
class PolicyResult:
    name: str
    score: float
    threshold: float
    evidence: Evidence

    @property
    def flagged(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "threshold": self.threshold,
            "decision": "flag" if self.flagged else "pass",
            "evidence": self.evidence.to_dict(),
        }


@dataclass(frozen=True)
class Verdict:
    """Per-policy scores of one item. Policies whose modality the item lacks are absent."""

    policies: dict[str, PolicyResult]
    sampled_timestamps: tuple[float, ...] = ()
    sampling_strategy: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # what decoding did to a video, defaults left out: rotation, mirrored, sar, interlaced, hdr
    # (engine.media.DecodedVideo.picture_facts), audio_skipped (the codec of a sound track that
    # cannot be decoded, so the audio policies did not judge it), cover_art (the picture
    # stored with a sound file or video: "judged" by the vision policies, or why it was not), subtitles (captions judged by
    # the text policies, or why none were; Note [subtitles]), audio_tracks (sound tracks judged,
    # when there were several)
    media: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> list[str]:
        return [name for name, r in self.policies.items() if r.flagged]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"policies": {n: r.to_dict() for n, r in self.policies.items()}}
        if self.sampled_timestamps:
            d["sampled_timestamps"] = [round(t, 3) for t in self.sampled_timestamps]
            d["sampling_strategy"] = self.sampling_strategy
        if self.media:
            d["media"] = dict(self.media)
        return d


@dataclass(frozen=True)
class Outcome:
    """One item of :meth:`Session.moderate_many`: a verdict or the typed error that item raised."""

    input: str
    verdict: Verdict | None = None
    error: EngineError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input": self.input}
        if self.verdict is not None:
            d.update(self.verdict.to_dict())
        else:
            d["error"] = {"type": type(self.error).__name__, "message": str(self.error)}
        return d
