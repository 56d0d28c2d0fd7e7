"""Note [subtitles]: the text subtitle tracks of a video, as players show them."""

from __future__ import annotations

import pytest

import media_factory as mf
from engine.media import decode_subtitles, probe
from engine.media import subtitles as subs
from engine.media.synthetic import with_subtitles

CAPTIONS = [(0.5, 1.3, "hello <i>there</i>"), (1.5, 2.3, "I am going to\\Nkill you"), (2.4, 2.9, "{\\an8}bye")]


def subtitled() -> bytes:
    return with_subtitles(mf.clip(width=64, height=48, fps=10, duration=3.0), CAPTIONS)


def test_captions_are_the_text_players_show():
    data = subtitled()
    assert probe(data).subtitles == 1 and probe(mf.clip(duration=1.0)).subtitles == 0
    got = decode_subtitles(data)
    assert [(c.start, c.end, c.text) for c in got] == [
        (0.5, 1.3, "hello there"), (1.5, 2.3, "I am going to kill you"), (2.4, 2.9, "bye")]
    assert decode_subtitles(mf.clip(duration=1.0)) == []


def test_captions_are_bounded(monkeypatch):
    monkeypatch.setattr(subs, "MAX_CAPTIONS", 2)
    assert [c.text for c in decode_subtitles(subtitled())] == ["hello there", "I am going to kill you"]
    monkeypatch.setattr(subs, "MAX_CAPTIONS", 100)
    monkeypatch.setattr(subs, "MAX_CAPTION_CHARS", 15)
    assert [c.text for c in decode_subtitles(subtitled())] == ["hello there"]
