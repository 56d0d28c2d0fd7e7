"""Note [text segments]: a text is judged whole and sentence by sentence, its strongest score kept."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.errors import MediaLimitError
from engine.text_units import (MAX_EXCERPT_CHARS, MAX_WORDS, STRIDE, TextUnits, Unit,
                               batches_of_like_length, segments)

FRIENDLY = "We had a lovely picnic in the park with the kids. "
THREAT = "I am going to kill you."


@pytest.fixture(scope="module")
def session(model_repo):
    from engine import Session

    with Session(model_repo.path) as s:
        yield s


def pieces(text: str) -> list[str]:
    return [text[s:e] for s, e in segments(text)]


@pytest.mark.parametrize("text, want", [
    ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
    ('He said "stop." Then he left…  Really?!', ['He said "stop."', "Then he left…", "Really?!"]),
    ("line one\nline two\r\n\nline three", ["line one", "line two", "line three"]),
    ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
    # a full stop inside a number is no end; after an abbreviation it is one (user text starts
    # sentences in lower case as often as not, and a text is judged whole as well)
    ("Version 3.14 is out. e.g. this", ["Version 3.14 is out.", "e.g.", "this"]),
    ("Wait... what?", ["Wait...", "what?"]),
    ("First. ... !!! Second.", ["First.", "Second."]),  # pieces without a letter or digit are dropped
])
def test_sentences(text, want):
    assert pieces(text) == want


@pytest.mark.parametrize("text", ["", "   ", "One sentence only.", "  padded sentence  ", "no punctuation at all",
                                  "End.\n", "...", "Dr."])
def test_a_text_of_one_segment_has_none(text):
    assert segments(text) == []


def test_long_sentences_are_judged_in_overlapping_windows():
    rng = random.Random(7)
    for n in (MAX_WORDS + 1, MAX_WORDS + STRIDE, 3 * MAX_WORDS + 7, 250):
        words = ["w%d%s" % (i, "x" * rng.randrange(3)) for i in range(n)]
        text = "  ".join(words) + " "
        spans = segments(text)
        got = [text[s:e].split() for s, e in spans]
        assert all(len(g) == MAX_WORDS for g in got)
        assert got[0] == words[:MAX_WORDS] and got[-1] == words[-MAX_WORDS:]
        # any run of MAX_WORDS - STRIDE words lies whole inside one window
        for k in range(n - (MAX_WORDS - STRIDE) + 1):
            run = words[k:k + MAX_WORDS - STRIDE]
            assert any(" ".join(run) in " ".join(g) for g in got), (n, k)


def test_units_read_whole_segments_and_readings_once_each():
    u = TextUnits([FRIENDLY + THREAT, "sh1t. sh1t.", "hello"])
    assert u.texts == [FRIENDLY + THREAT, FRIENDLY.strip(), THREAT,
                       "sh1t. sh1t.", "shit. shit.", "sh1t.", "shit.", "hello"]
    assert len(u.units) == 10  # "sh1t." twice (and its reading): read once
    scores = np.array([0.4, 0.1, 0.9, 0.2, 0.7, 0.3, 0.8, 0.05])
    per_text, won, at = u.strongest(scores)
    assert per_text.tolist() == pytest.approx([0.9, 0.8, 0.05])
    assert won[0] == Unit(0, (len(FRIENDLY), len(FRIENDLY + THREAT)), None)
    assert won[1] == Unit(1, (0, 5), "shit.") and won[2] == Unit(2, None, None)
    assert at.tolist() == [2, 6, 7]
    assert u.excerpt(won[0]) == THREAT and u.excerpt(won[2]) is None


def test_a_non_finite_score_of_any_unit_fails_the_text():
    u = TextUnits([FRIENDLY + THREAT, "fine"])
    for bad in (np.nan, np.inf):
        scores = np.array([0.2, bad, 0.9, 0.1])
        per_text, _, _ = u.strongest(scores)
        assert not np.isfinite(per_text[0]) and per_text[1] == pytest.approx(0.1)


def test_readings_and_normalisation_are_per_unit():
    u = TextUnits(["Nice day. ｆ ｕ ｃ ｋ you"], read_disguised=True)
    assert "fuck you" in u.texts  # the fullwidth segment folded, then read back
    raw = TextUnits(["Nice day. f u c k you"], form="raw", read_disguised=False)
    assert raw.texts == ["Nice day. f u c k you", "Nice day.", "f u c k you"]


def test_long_excerpts_are_cut():
    text = "Hi. " + "a" * 500 + " b"
    u = TextUnits([text])
    unit = next(x for x in u.units if x.span is not None and x.span[0] > 0)
    assert len(u.excerpt(unit)) == MAX_EXCERPT_CHARS and u.excerpt(unit).endswith("…")


def test_texts_batch_with_texts_of_like_length():
    texts = ["x" * n for n in (300, 5, 10, 60, 1000, 7, 70, 20)]
    got = batches_of_like_length(texts, most=3)
    assert sorted(i for b in got for i in b) == list(range(len(texts)))  # each text once
    assert got == [[1, 5, 2], [7, 3, 6], [0], [4]]  # shortest first, at most 3, like lengths
    for b in got:
        lengths = [len(texts[i]) for i in b]
        assert max(lengths) <= 1.5 * min(lengths) + 40
    assert batches_of_like_length([], 4) == []


@pytest.mark.models
def test_one_sentence_flags_a_longer_text(session):
    for friendly in (1, 3, 40):  # 40 sentences: the threat is past MiniLM's 256 tokens
        text = FRIENDLY * friendly + THREAT + " See you."
        v = session.moderate(text=["hello", text])
        alone = session.moderate(text=THREAT)
        for name in ("violent_threat", "offensive_text"):
            r = v.policies[name]
            assert r.flagged and r.score == pytest.approx(alone.policies[name].score, abs=1e-5)
            assert r.evidence.index == 1 and r.evidence.excerpt == THREAT
            s, e = r.evidence.span
            assert text[s:e] == THREAT
    calm = session.moderate(text=FRIENDLY * 3).policies["violent_threat"]
    assert not calm.flagged


@pytest.mark.models
def test_texts_are_embedded_in_length_batches_in_their_order(session):
    rng = random.Random(3)
    words = "we had a lovely picnic in the park with kids and then it rained".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(1, 120))) for _ in range(150)]
    together = session._embed_texts(texts)
    alone = np.concatenate([session._embed_texts([t]) for t in texts[:20]])
    np.testing.assert_allclose(together[:20], alone, atol=2e-5)
    assert together.shape == (150, 384)


@pytest.mark.models
def test_texts_are_bounded(repo_with):
    from engine import Session

    with Session(repo_with("max_text_chars = 100000", "max_text_chars = 50")) as s:
        with pytest.raises(MediaLimitError, match="max_text_chars"):
            s.moderate(text=["fine", "x" * 51])
        good, bad = s.moderate_many([{"text": "I am going to kill you"}, {"text": "y" * 51}])
        assert good.ok and good.verdict.policies["violent_threat"].flagged
        assert isinstance(bad.error, MediaLimitError)
