"""Words disguised from filters, read back the way people read them (Note [disguised words]).

Note [disguised words]
People write the words a filter looks for so that readers still read them and the filter does
not: letters spelled out one by one ("f u c k", "f.u.c.k", "k-i-l-l"), digits and signs standing
for letters ("sh1t", "k!ll", "@sshole", "a$$"), marked letters ("fück") and stretched letters
("fuuuuck"). The profanity classifier's vocabulary and MiniLM's WordPiece see other tokens ("I
will k1ll you" scored 0.39 for violent_threat, "I will kill you" 0.85). So a text is judged as
written AND as read back, each policy keeping the stronger score: a reading can raise a score,
never lower it, and a wrong guess costs nothing unless it spells what a policy looks for. One
reading undoes all four, in this order:
* marked: Latin letters with accents, strokes or hooks ("fück", "ƒuck", "shïţ") are read as their
  plain letters (from the letter's Unicode name: "LATIN SMALL LETTER F WITH HOOK" is an f);
* spelled out: a run of >= 3 single characters (letters, or digits and signs standing for
  letters), at least two of them letters, separated by spaces or by one of . - _ * ~ / · • (with
  or without spaces around it), is joined into a word;
* leetspeak: in a word holding letters, the digits and signs that stand for letters become those
  letters (0 o, 1 i, 3 e, 4 a, 5 s, 7 t, @ a, $ s, ! i, | l, + t), only when every other character
  of the word is a letter; ! | + only between letters (before or after a word they are
  punctuation), and a word of digits alone is a number;
* stretched: a letter written three or more times in a row is read once and twice (English
  spells "kill" and "ass" with doubles), giving two readings.
Letters masked by asterisks ("f**k") are not guessed, nor words run together ("fuckyou"). Unicode
disguises (fullwidth, look-alike letters of other scripts, invisible characters, right-to-left
overrides) are undone before, by normalise_text (Note [text normalisation] in engine/text.py).
``[text] read_disguised = false`` in pipeline.toml turns the readings off.
"""

from __future__ import annotations

import functools
import re
import unicodedata

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


def readings(text: str) -> list[str]:
    """The readings of ``text`` other than ``text`` itself (none, one, or two when letters are
    stretched), per Note [disguised words]."""
    read = _leet_read(_spelled_out_joined(_plain_latin(text)))
    if _STRETCHED.search(read):
        found = [_STRETCHED.sub(r"\1", read), _STRETCHED.sub(r"\1\1", read)]
    else:
        found = [read]
    return [r for r in dict.fromkeys(found) if r != text]


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

