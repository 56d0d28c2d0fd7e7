"""Words disguised from filters, read back the way people read them (Note [disguised words]).

Note [disguised words]
People write the words a filter looks for so that readers still read them and the filter does
not: letters spelled out one by one ("f u c k", "f.u.c.k", "k-i-l-l"), digits and signs standing
for letters ("sh1t", "k!ll", "@sshole", "a$$"), marked letters ("fück"), stretched letters
("fuuuuck"), and words run together ("fuckyou", hashtags: "#killthemall"). The profanity
classifier's vocabulary and MiniLM's WordPiece see other tokens ("I will k1ll you" scored 0.39 for
violent_threat, "I will kill you" 0.85). So a text is judged as written AND as read back, each
policy keeping the stronger score: a reading can raise a score, never lower it, and a wrong guess
costs nothing unless it spells what a policy looks for. One reading undoes all six, in this
order:
* marked: Latin letters with accents, strokes or hooks ("fück", "ƒuck", "shïţ") are read as their
  plain letters (from the letter's Unicode name: "LATIN SMALL LETTER F WITH HOOK" is an f);
* spelled out: a run of >= 3 single characters (letters, or digits and signs standing for
  letters), at least two of them letters, separated by spaces or by one of . - _ * ~ / · • (with
  or without spaces around it), is joined into a word;
* leetspeak: in a word holding letters, the digits and signs that stand for letters become those
  letters (0 o, 1 i, 3 e, 4 a, 5 s, 7 t, @ a, $ s, ! i, | l, + t), only when every other character
  of the word is a letter; ! | + only between letters (before or after a word they are
  punctuation), and a word of digits alone is a number;
* masked: a word of 3 to MAX_MASKED characters that starts with a letter and has asterisks for
  some of its letters, between letters ("f**k", "b*tch", "a**hole") or two or more at its end
  ("sh**", "a**"), is read as the word its writer hid: of the English words that fit the letters
  shown (wordninja's list), the one the Session's text classifier scores highest alone, if that
  score is at least UNMASK_MIN (Session._unmask: "f**k" -> "fuck", "c**t" -> "cunt", "h*ll" ->
  "hell"); the asterisks say the word was hidden, so the most offensive fit is the reading, and
  a mask that fits no offensive word ("f**d") is left. Not masked words: a footnote mark
  ("price*"), emphasis ("**bold**"), products ("2*3"), globs ("*.py"), masked e-mail addresses
  and host names ("j***@example.com"). The pick is the classifier's view of single words, quirks
  included (alt-profanity-check scores "nerd" 0.91 and "mom" 0.73 alone); a wrong pick only
  matters where the whole reading crosses a threshold, and people mask the words they mean to
  hide. A Session without a text classifier reads no masked words;
* stretched: a letter written three or more times in a row is read once and twice (English
  spells "kill" and "ass" with doubles), giving two readings;
* run together: a word of six or more letters, all small or all capital, that English word
  frequencies split into words (wordninja: "fuckyou", "iwillkillyou", "#killthemall") is read as
  those words; common words stay whole ("therapist", "assassin"), CamelCase and hyphenated words
  are left, and a split is taken only into common words (COMMON_WORDS: "normalised" -> "normal is
  ed" is not). The price: a rare word holding a taboo one may be read apart (the town "penistone",
  in small letters, flags offensive_text as "penis tone"; "Penistone" does not).
Unicode disguises (fullwidth, look-alike letters of other scripts, invisible characters,
right-to-left overrides) are undone before, by normalise_text (Note [text normalisation] in
engine/text.py).
``[text] read_disguised = false`` in pipeline.toml turns the readings off.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
         "|": "l", "+": "t"}
_PUNCTUATION_LEET = "!|+"  # stand for letters only between letters
_UNIT = r"(?:[^\W_]|[@$!|+])"  # one character of a spelled-out word
_ALONE = r"(?![^\W_])"  # not followed by a letter or digit
_SEPARATOR = r"(?:[ \t]+|[ \t]*[.\-_*~/·•][ \t]*)"
_SPELLED_OUT = re.compile(rf"(?<![^\W_]){_UNIT}{_ALONE}(?:{_SEPARATOR}{_UNIT}{_ALONE}){{2,}}")
_SEPARATOR_CHARS = re.compile(r"[ \t.\-_*~/·•]")
_WORD = re.compile(r"[\w@$!|+]+")
_STRETCHED = re.compile(r"([^\W\d_])\1{2,}", re.IGNORECASE)


def readings(text: str, unmask: Callable[[str], str | None] | None = None) -> list[str]:
    """The readings of ``text`` other than ``text`` itself (none, one, or two when letters are
    stretched), per Note [disguised words]. ``unmask``: the word a masked word's lowercase pattern
    ("f**k") is read as, or None to leave it; without it masked words are left."""
    read = _leet_read(_spelled_out_joined(_plain_latin(text)))
    if unmask is not None and "*" in read:
        read = _unmasked(read, unmask)
    if _STRETCHED.search(read):
        found = [_STRETCHED.sub(r"\1", read), _STRETCHED.sub(r"\1\1", read)]
    else:
        found = [read]
    return [r for r in dict.fromkeys(_words_apart(f) for f in found) if r != text]


_LATIN_LETTER = re.compile(r"LATIN (SMALL|CAPITAL) LETTER (?:DOTLESS )?([A-Z])(?: WITH .*)?$")


def _plain_latin(text: str) -> str:
    if text.isascii():
        return text
    return "".join(_plain_letter(ch) if not ch.isascii() else ch for ch in text)


@functools.lru_cache(maxsize=4096)
def _plain_letter(ch: str) -> str:
    m = _LATIN_LETTER.match(unicodedata.name(ch, ""))
    if m is None:
        return ch
    return m.group(2).lower() if m.group(1) == "SMALL" else m.group(2)


def _spelled_out_joined(text: str) -> str:
    def join(m: re.Match) -> str:
        units = _SEPARATOR_CHARS.sub("", m.group())
        return units if sum(ch.isalpha() for ch in units) >= 2 else m.group()

    return _SPELLED_OUT.sub(join, text)


_RUN_TOGETHER = re.compile(r"(?<![\w-])[^\W\d_]{6,}(?![\w-])")
MAX_RUN_TOGETHER = 40  # letters: phrases run together are short; longer runs are left (linear time)
# the words of one or two letters a run-together phrase is made of; other short pieces mean the
# split took a word wordninja does not know apart ("normalised" -> "normal is ed")
_SHORT_WORDS = frozenset("a i am an as at be by do go he if in is it me my no of oh ok on or so "
                         "to up us we ya ye yo".split())


def _words_apart(text: str) -> str:
    return _RUN_TOGETHER.sub(lambda m: _apart(m.group()), text)


@functools.lru_cache(maxsize=65536)  # a text's sentences and windows repeat its words
def _apart(word: str) -> str:
    if len(word) > MAX_RUN_TOGETHER or not (word.islower() or word.isupper()):
        return word  # CamelCase names and identifiers ("TensorRT", "InputError") stay
    import wordninja

    parts = wordninja.split(word)
    if len(parts) < 2 or not all(_common(w.lower()) for w in parts):
        return word
    return " ".join(parts)


COMMON_WORDS = 65_000  # of wordninja's 126k by frequency: "slut" is 45,902nd, "rapist" 60,507th


def _common(piece: str) -> bool:
    """A piece a run-together phrase is made of: a word of one or two letters people write, or one
    of the COMMON_WORDS most frequent words (random letters split into such pieces ~0.7% of the
    time, against 1.4% for any word of the list)."""
    if len(piece) < 3:
        return piece in _SHORT_WORDS
    return _frequency_rank(piece) < COMMON_WORDS


def _frequency_rank(word: str) -> float:
    import wordninja

    # wordninja 2.0 keeps cost = log((rank + 1) * log(N)) per word (its Zipf model), not the rank
    costs = wordninja.DEFAULT_LANGUAGE_MODEL._wordcost
    cost = costs.get(word)
    return math.inf if cost is None else math.exp(cost) / math.log(len(costs)) - 1


def _leet_read(text: str) -> str:
    def word(m: re.Match) -> str:
        w = m.group()
        if "_" in w:
            return w  # an identifier
        # signs that are punctuation around the word stay as they are
        core = w.rstrip(_PUNCTUATION_LEET)
        tail = w[len(core):]
        lead = len(core) - len(core.lstrip(_PUNCTUATION_LEET))
        head, core = core[:lead], core[lead:]
        if not any(ch.isalpha() for ch in core) or not any(ch in _LEET for ch in core):
            return w
        if not all(ch.isalpha() or ch in _LEET for ch in core):
            return w  # "covid19", "h264": digits that are numbers
        return head + "".join(_LEET.get(ch, ch) for ch in core) + tail

    return _WORD.sub(word, text)


MAX_MASKED = 20  # characters of a masked word; longer runs of letters and asterisks are left
UNMASK_MIN = 0.5  # a masked word is read as its most offensive fit when that scores this alone
# not part of an e-mail address or a host name ("j***@example.com", "www.f**k.com")
_MASKED = re.compile(r"(?<![\w*@.])[^\W\d_][^\W\d_*]*(?:\*+[^\W\d_*]+)*\**(?![\w*@]|\.\w)")


def _unmasked(text: str, unmask: Callable[[str], str | None]) -> str:
    def word(m: re.Match) -> str:
        w = m.group()
        trailing = len(w) - len(w.rstrip("*"))
        if "*" not in w or trailing == 1 or not 3 <= len(w) <= MAX_MASKED:
            return w  # a plain word, a footnote mark ("price*"), or too long to be one word
        found = unmask(w.lower())
        if found is None:
            return w
        shown = [ch for ch in w if ch != "*"]
        if all(ch.isupper() for ch in shown):
            return found.upper()
        return found.capitalize() if shown[0].isupper() else found

    return _MASKED.sub(word, text)


@functools.lru_cache(maxsize=4096)
def mask_fits(pattern: str) -> tuple[str, ...]:
    """The English words (wordninja's list, most frequent first) that a lowercase masked word
    ("f**k") can be: the same length, the shown letters in their places."""
    import wordninja

    shown = re.compile("".join("[a-z]" if ch == "*" else re.escape(ch) for ch in pattern))
    costs = wordninja.DEFAULT_LANGUAGE_MODEL._wordcost
    return tuple(sorted((w for w in _words_of_length(len(pattern)) if shown.fullmatch(w)), key=costs.get))


@functools.lru_cache(maxsize=None)
def _words_of_length(n: int) -> tuple[str, ...]:
    import wordninja

    return tuple(w for w in wordninja.DEFAULT_LANGUAGE_MODEL._wordcost
                 if len(w) == n and w.isascii() and w.isalpha())
