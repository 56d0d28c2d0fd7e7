"""Note [text normalisation]: obfuscated text reaches the models as the words it shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.pipeline import load_pipeline
from engine.text import normalise_text

ZWSP, SHY, WJ = "\u200b", "\u00ad", "\u2060"  # zero-width space, soft hyphen, word joiner

DISGUISED = {
    "fullwidth": "ｆｕｃｋ ｙｏｕ",
    "bold maths": "𝐟𝐮𝐜𝐤 𝐲𝐨𝐮",
    "circled": "ⓕⓤⓒⓚ ⓨⓞⓤ",
    "zero-width spaces": f"f{ZWSP}u{ZWSP}c{ZWSP}k you",
    "soft hyphen and word joiner": f"fu{SHY}c{WJ}k you",
    "Cyrillic look-alikes": "fu\u0441k \u0443\u043eu",  # с, у, о: Cyrillic letters drawn like c, y, o
    "Cyrillic and Greek look-alikes": "fu\u0441k y\u03bf\u03c5",  # с; ο, υ (Greek omicron, upsilon)
    "right-to-left override": "\u202euoy kcuf",  # shown as "fuck you"
    "right-to-left override of a word": "\u202ekcuf\u202c you",
}


@pytest.mark.parametrize("how", DISGUISED)
def test_disguised_letters_fold_to_the_word(how):
    assert normalise_text(DISGUISED[how]) == "fuck you"
    assert normalise_text(DISGUISED[how], "raw") == DISGUISED[how]


@pytest.mark.parametrize("text", ["I am going to kill you", "Ich werde dich töten", "¿Qué tal?", "你好世界",
                                  "naïve café", "tab\tand\nnewline", "",
                                  # Cyrillic and Greek words keep their letters, even next to Latin
                                  # ones, when a letter has no Latin double (ь, Ы, λ)
                                  "Привет, мир", "καλημέρα σας", "iPhone сеть", "Fuck ТЫ"])
def test_plain_text_is_unchanged(text):
    assert normalise_text(text) == text


@pytest.mark.parametrize("form", ["nfkc", "raw"])
def test_lone_surrogates_become_replacement_characters(form):
    assert normalise_text("abc \ud800 def", form) == "abc \ufffd def"  # a JSON "\\ud800" escape
    assert normalise_text("\udcff", form) == "\ufffd"  # an undecodable command-line byte
    assert normalise_text("x\ud83d\ude00y", form) == "x\U0001F600y"  # a pair is its character


def test_text_after_a_right_to_left_override_reads_as_shown():
    assert normalise_text("I will \u202ellik\u202c you") == "I will kill you"
    assert normalise_text("ab\u202edc\nfe") == "abcd\nfe"  # the override ends with the line
    assert normalise_text("\u202eשלום\u202c עולם") == "שלום עולם"  # Hebrew: read as written
    assert normalise_text("\u202ekcuf", "raw") == "\u202ekcuf"


def test_ligatures_and_compatibility_forms():
    assert normalise_text("ﬁre ﬂag") == "fire flag"
    assert normalise_text("x²") == "x2"


def test_pipeline_choice(tmp_path):
    repo = Path(__file__).resolve().parents[1] / "model_repo"
    assert load_pipeline(repo).text_unicode == "nfkc"
    text = (repo / "pipeline.toml").read_text().replace('unicode = "nfkc"', 'unicode = "raw"', 1)
    (tmp_path / "pipeline.toml").write_text(text)
    assert load_pipeline(tmp_path).text_unicode == "raw"


@pytest.mark.models
def test_the_session_scores_disguised_text_as_the_plain_text(model_repo, repo_with, stack):
    from engine import Session

    plain = ["fuck you", "I am going to kill you", "fuck you"]
    disguised = [DISGUISED["fullwidth"], f"I am going to k{ZWSP}i{ZWSP}l{ZWSP}l you",
                 DISGUISED["Cyrillic look-alikes"]]
    folded = stack.enter_context(Session(model_repo.path))
    raw = stack.enter_context(Session(repo_with('unicode = "nfkc"', 'unicode = "raw"')))
    for p, d in zip(plain, disguised):
        want = {k: r.score for k, r in folded.moderate(text=p).policies.items()}
        got = {k: r.score for k, r in folded.moderate(text=d).policies.items()}
        assert got == pytest.approx(want, abs=1e-6)
        as_given = {k: r.score for k, r in raw.moderate(text=d).policies.items()}
        assert max(abs(as_given[k] - want[k]) for k in want) > 0.1  # what the models saw before
    assert folded.embed(text=disguised[0])["text"] == pytest.approx(folded.embed(text=plain[0])["text"])
