"""Note [disguised words]: spelled-out, leetspeak and stretched words are also judged as read back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from engine.disguises import readings
from engine.errors import ConfigError
from engine.pipeline import load_pipeline

READ_BACK = {
    # spelled out, with spaces or one separator between the letters
    "f u c k you": ["fuck you"],
    "f.u.c.k you": ["fuck you"],
    "f-u-c-k you": ["fuck you"],
    "f_u_c_k you": ["fuck you"],
    "f*u*c*k you": ["fuck you"],
    "f . u . c . k you": ["fuck you"],
    "i will k i l l you": ["i will kill you"],
    "k 1 l l": ["kill"],  # a spelled-out word with a digit for a letter
    # leetspeak
    "sh1t": ["shit"],
    "you b1tch": ["you bitch"],
    "b!tch": ["bitch"],
    "@sshole": ["asshole"],
    "a$$hole": ["asshole"],
    "I will k1ll you": ["I will kill you"],
    "go k!ll yourself": ["go kill yourself"],
    "l00k 4t th3 h0e": ["look at the hoe"],
    "ki|ler": ["killer"],
    # marked Latin letters: accents, strokes, hooks
    "fück you": ["fuck you"],
    "ƒuck you": ["fuck you"],
    "FÜCK": ["FUCK"],
    "i will kíll you": ["i will kill you"],
    "Łódź": ["Lodz"],
    # words run together
    "fuckyou": ["fuck you"],
    "#killthemall": ["#kill them all"],
    "iwillkillyou": ["i will kill you"],
    "GOKILLYOURSELF": ["GO KILL YOURSELF"],
    "F U C K Y O U": ["FUCK YOU"],  # spelled out, then apart
    "yourslut": ["your slut"],
    # stretched letters: read once and twice
    "fuuuuuck you": ["fuck you", "fuuck you"],
    "killlll them": ["kil them", "kill them"],
    "FUUUck": ["FUck", "FUUck"],
    # all three at once
    "f u u u c k y0u": ["fuck you", "fuuck you"],
}


@pytest.mark.parametrize("text", READ_BACK)
def test_disguised_words_are_read_back(text):
    assert readings(text) == READ_BACK[text]


@pytest.mark.parametrize("text", [
    "fuck you", "have a nice day", "", "hello!!! how are you?", "wow!!", "C++ rocks",
    "covid19 and h264",  # digits that are numbers, in words
    "1 2 3 go", "$100 only", "call 555-0100", "12:30", "3.14159",  # numbers alone
    "e.g. this", "a, b, c", "I am", "x y",  # two single letters are not a spelled-out word
    "@john_doe", "my_var_1", "ki||",  # identifiers; signs after a word are punctuation
    "e-mail", "well-known", "straße", "Привет, мир", "你好世界", "tab\tand\nnewline",
    "therapist", "assassin", "Scunthorpe", "cocktail", "butterfly", "analysis",  # words stay whole
    "KillThemAll", "TensorRT", "normalised", "KYSNOW",  # CamelCase; pieces that are no words
])
def test_plain_text_has_no_readings(text):
    assert readings(text) == []


MASKED = {  # masked word -> what the fake classifier's pick reads it as (None: no fit is offensive)
    "f**k": "fuck", "b*tch": "bitch", "a**": "ass", "a**hole": "asshole", "sh**": "shit", "f***": "fuck",
    "f**d": None,
}
READ_UNMASKED = {
    "f**k you": ["fuck you"],
    "F**K YOU": ["FUCK YOU"],  # the case of the letters shown
    "You b*tch": ["You bitch"],
    "B*tch": ["Bitch"],
    "what an a**hole": ["what an asshole"],
    "sh** happens": ["shit happens"],  # two or more asterisks at the end
    "what the f***!": ["what the fuck!"],
    "the f**d was great": [],  # no offensive fit: left
    "a** and sh1t": ["ass and shit"],  # with leetspeak
}


@pytest.mark.parametrize("text", READ_UNMASKED)
def test_masked_words_are_read_as_the_unmasker_says(text):
    asked = []

    def unmask(pattern):
        asked.append(pattern)
        return MASKED[pattern]

    assert readings(text, unmask) == READ_UNMASKED[text]
    assert asked and all(p in MASKED for p in asked)
    assert readings(text) == ([] if "1" not in text else ["a** and shit"])  # no unmasker: left


@pytest.mark.parametrize("text", [
    "**bold** text", "*emphasis*", "see the price*", "footnote* here", "2*3=6", "x * y", "*.py", "rm -rf *",
    "a*", "ab", "****", "a" + "*" * 25, "f**k_you",  # too short, no letter, too long, an identifier
    "mail j***@example.com", "see www.f**k.com now", "user@b***.org",  # addresses and host names
])
def test_no_masked_word_is_looked_up(text):
    def unmask(pattern):
        raise AssertionError(f"looked up {pattern!r}")

    readings(text, unmask)


def test_mask_fits():
    from engine.disguises import mask_fits

    fits = mask_fits("f**k")
    assert "fuck" in fits and "fork" in fits
    assert all(len(w) == 4 and w[0] == "f" and w[3] == "k" for w in fits)
    assert mask_fits("a**hole") == ("asshole",) or "asshole" in mask_fits("a**hole")
    assert mask_fits("zq*x") == ()


def test_readings_take_linear_time():
    rng = np.random.default_rng(0)
    distinct = " ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 9)) for _ in range(10_000))
    for text in ("a b " * 100_000, "f.u.c.k " * 25_000, "sh1t " * 40_000, "a" * 200_000,
                 "! " * 100_000, "x1" * 100_000, "thisisatest " * 20_000, distinct):
        t = time.perf_counter()
        readings(text)
        assert time.perf_counter() - t < 2.0, text[:12]


def test_run_together_words_split_into_common_words_only():
    from engine.disguises import COMMON_WORDS, _frequency_rank, _words_apart

    assert round(_frequency_rank("the")) == 0 and round(_frequency_rank("you")) == 104  # wordninja's ranks
    assert round(_frequency_rank("slut")) == 45_902 < COMMON_WORDS
    assert _frequency_rank("xkqj") == float("inf")
    rng = np.random.default_rng(1)  # random letters rarely split into common words
    gibberish = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 9)) for _ in range(2000)]
    assert sum(_words_apart(w) != w for w in gibberish) < 0.01 * len(gibberish)


def test_pipeline_choice(tmp_path):
    repo = Path(__file__).resolve().parents[1] / "model_repo"
    assert load_pipeline(repo).text_read_disguised is True
    text = (repo / "pipeline.toml").read_text()
    for value, want in (("false", False), ('"yes"', ConfigError)):
        (tmp_path / "pipeline.toml").write_text(
            text.replace("read_disguised = true", f"read_disguised = {value}", 1))
        if want is ConfigError:
            with pytest.raises(ConfigError, match="read_disguised"):
                load_pipeline(tmp_path)
        else:
            assert load_pipeline(tmp_path).text_read_disguised is want


@pytest.mark.models
def test_the_session_flags_disguised_text_as_the_plain_text(model_repo, repo_with, stack):
    from engine import Session

    cases = {  # disguised -> the plain text it reads as, and a policy that flags the plain text
        "f u c k you": ("fuck you", "offensive_text"),
        "f**k you": ("fuck you", "offensive_text"),
        "you are a b*tch": ("you are a bitch", "offensive_text"),
        "I will k**l you": ("I will kill you", "violent_threat"),
        "you are a piece of sh1t": ("you are a piece of shit", "offensive_text"),
        "fuuuuuck you": ("fuck you", "offensive_text"),
        "I will k1ll you": ("I will kill you", "violent_threat"),
        "go k!ll yourself": ("go kill yourself", "self_harm"),
        "fück you": ("fuck you", "offensive_text"),
        "iwillkillyou": ("i will kill you", "violent_threat"),
    }
    reading = stack.enter_context(Session(model_repo.path))
    as_written = stack.enter_context(Session(repo_with("read_disguised = true", "read_disguised = false")))
    for disguised, (plain, policy) in cases.items():
        want = reading.moderate(text=plain).policies[policy]
        assert want.flagged, (plain, policy)
        got = reading.moderate(text=["hello", disguised]).policies[policy]
        assert got.score == pytest.approx(want.score, abs=1e-6)
        assert got.flagged
        assert got.evidence.index == 1  # the item's text, not its reading
        assert got.evidence.read_as == plain
        if policy != "offensive_text":
            assert got.evidence.detail == want.evidence.detail  # the exemplar the reading matched
        assert not as_written.moderate(text=disguised).policies[policy].flagged, disguised
    plain_text = reading.moderate(text="I am going to kill you").policies["violent_threat"]
    assert plain_text.evidence.read_as is None
    assert "read_as" not in plain_text.evidence.to_dict()


@pytest.mark.models
def test_the_cli_says_how_a_text_was_read(model_repo, capsys):
    from engine.cli import main

    main(["moderate", "--repo", str(model_repo.path), "--text", "you are a piece of sh1t"])
    assert "read as 'you are a piece of shit'" in capsys.readouterr().out
    main(["moderate", "--repo", str(model_repo.path), "--json", "--text", "I will k1ll you"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["policies"]["violent_threat"]["evidence"]["read_as"] == "I will kill you"


@pytest.mark.models
def test_a_disguised_caption_is_read_back(model_repo, stack):
    import media_factory as mf
    from engine import Session
    from engine.media.synthetic import with_subtitles

    video = with_subtitles(mf.clip(width=64, height=48, fps=10, duration=2.0),
                           [(0.2, 0.9, "hello"), (1.0, 1.8, "I am going to k i l l you")])
    r = stack.enter_context(Session(model_repo.path)).moderate(video).policies["violent_threat"]
    assert r.flagged and r.evidence.modality == "subtitles" and r.evidence.index == 1
    assert r.evidence.read_as == "I am going to kill you" and r.evidence.segment == (1.0, 1.8)


@pytest.mark.models
def test_masked_words_fit_to_no_offensive_word_are_left(model_repo, stack):
    from engine import Session

    session = stack.enter_context(Session(model_repo.path))
    for text in ("the f**d was great", "see the price*", "**bold** move", "2*3=6", "Rated 5* by our guests",
                 "my password is p******d", "Call me at ***-***-1234", "Card ending ****1234",
                 "Contact j***@gmail.com for details", "Oh my g*d this is great", "Winter is c*ming"):
        v = session.moderate(text=text)
        assert all(r.evidence.read_as in (None, text.replace("*", "o")) and not r.flagged
                   for r in v.policies.values()), text


@pytest.mark.models
def test_an_item_looks_up_a_bounded_number_of_masked_words(model_repo, stack, monkeypatch):
    from engine import Session
    from engine.session import MASKED_PER_ITEM

    session = stack.enter_context(Session(model_repo.path))
    looked_up = []
    real = session._unmask
    monkeypatch.setattr(session, "_unmask", lambda p: looked_up.append(p) or real(p))
    words = [f"{a}{b}**" for a in "bcdgm" for b in "aeiou"]  # 25 distinct masked words
    v = session.moderate(text=" ".join(words) + " f**k you")
    assert looked_up == words[:MASKED_PER_ITEM]  # the rest are left as written
    assert "f**k you" in (v.policies["offensive_text"].evidence.read_as or "f**k you")
    v = session.moderate(text="f**k you")  # the next item looks up its own
    assert v.policies["offensive_text"].evidence.read_as == "fuck you"
    first = looked_up[:MASKED_PER_ITEM]
    looked_up.clear()
    session.moderate(text=" ".join(words))  # looked-up words are remembered: 8 new ones
    assert looked_up == words[MASKED_PER_ITEM:2 * MASKED_PER_ITEM] and not set(first) & set(looked_up)
