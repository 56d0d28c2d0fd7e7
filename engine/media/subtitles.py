"""Text subtitles of a video: the captions players show over its pictures.

Note [subtitles]
A subtitle track (SubRip, ASS/SSA, WebVTT, MP4 timed text) is text shown on screen with the video,
and players show a track flagged default or forced without being asked. Text there is judged like
any text of the item (engine.Session: the text policies over the captions, evidence naming the
caption and its time). Each caption's ASS override blocks (``{\\i1}``) are dropped and its line
breaks (``\\N``) become spaces. Picture subtitles (DVD, Blu-ray, DVB bitmaps) would need OCR and are
not read. Hostile files may hold millions of captions: at most MAX_CAPTIONS, MAX_CAPTION_CHARS in
all, and the decode deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .limits import DEFAULT_LIMITS, Limits
from .source import Packets, codec_name, media_errors, open_container

__all__ = ["Caption", "TEXT_SUBTITLE_CODECS", "decode_subtitles"]

TEXT_SUBTITLE_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})
MAX_CAPTIONS = 10_000
MAX_CAPTION_CHARS = 1_000_000

_OVERRIDES = re.compile(r"\{[^}]*\}")
_BREAKS = re.compile(r"\\[Nnh]")


@dataclass(frozen=True)
class Caption:
    start: float  # seconds from the start of the media
    end: float
    text: str


def decode_subtitles(source: Any, limits: Limits | None = None) -> list[Caption]:
    """The captions of every text subtitle track of ``source``, in time order (Note [subtitles]);
    [] when it has none."""
    limits = limits or DEFAULT_LIMITS
    deadline = limits.deadline()
    captions: list[Caption] = []
    chars = 0
    with media_errors("subtitles"), open_container(source, limits) as c:
        start0 = c.start_time / 1_000_000 if c.start_time is not None else 0.0  # the media's clock
        for st in c.streams.subtitles:
            if codec_name(st) not in TEXT_SUBTITLE_CODECS:
                continue
            tb = st.time_base
            for p in Packets(c, st, deadline):
                if not p.size or p.pts is None:
                    continue
                start = float(p.pts * tb) - start0
                end = start + (float(p.duration * tb) if p.duration else 0.0)
                for sub in st.decode(p):
                    text = _plain(sub)
                    if not text:
                        continue
                    chars += len(text)
                    if len(captions) >= MAX_CAPTIONS or chars > MAX_CAPTION_CHARS:
                        return sorted(captions, key=lambda x: x.start)
                    captions.append(Caption(round(start, 6), round(end, 6), text))
    return sorted(captions, key=lambda x: x.start)


def _plain(sub: Any) -> str:
    """A decoded subtitle's text without ASS markup; "" for picture subtitles."""
    raw = getattr(sub, "dialogue", None) or getattr(sub, "text", None)
    if not raw:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(_BREAKS.sub(" ", _OVERRIDES.sub("", text)).split())
