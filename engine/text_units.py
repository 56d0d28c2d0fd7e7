"""What of an item's texts the text models judge: each text whole, sentence by sentence, and as
read back (Note [text segments]; Note [disguised words] in engine.disguises).

Note [text segments]
Both text models dilute what they read: the classifier's probability and MiniLM's mean-pooled
embedding are of the whole text. One friendly sentence before "I am going to kill you." took
violent_threat from 0.94 to 0.41 and offensive_text from 0.90 to 0.46 (both passed), and MiniLM
reads only the first 256 tokens, so a threat after them was never seen. A text is therefore
judged whole AND sentence by sentence, each policy keeping the strongest score, as one
violating scene flags a whole video. Sentences end at . ! ? … (with closing quotes or brackets)
before white space, at 。！？, and at line breaks; a sentence of more than MAX_WORDS words is
judged in windows of MAX_WORDS words, STRIDE words apart (so any run of up to MAX_WORDS - STRIDE
words lies whole inside one window). A text of one segment is judged once. The evidence gives
the segment's character span in the text as given and the segment itself (``excerpt``).
Texts are bounded by ``[limits] max_text_chars``; judging cost grows with the text's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .disguises import readings
from .text import normalise_text

MAX_WORDS = 40
STRIDE = 20
MAX_EXCERPT_CHARS = 200

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[」』”’)\]]*|[\r\n\u2028\u2029]")
_WORD = re.compile(r"\S+")
_HAS_WORD = re.compile(r"\w")


def segments(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences and windows of ``text`` (Note [text segments]); empty
    when the text is a single segment (it is judged whole anyway)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.extend(_windows(text, start, m.end()))
        start = m.end()
    spans.extend(_windows(text, start, len(text)))
    if len(spans) == 1 and text[spans[0][0]:spans[0][1]] == text.strip():
        return []
    return spans


def _windows(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The sentence text[start:end] without its surrounding white space, or its windows when it
    has more than MAX_WORDS words; nothing when it holds no letter or digit."""
    words = [m.span() for m in _WORD.finditer(text, start, end)]
    if not words or not _HAS_WORD.search(text, start, end):
        return []
    n = len(words)
    firsts = list(range(0, max(n - MAX_WORDS, 0) + 1, STRIDE))
    if firsts[-1] + MAX_WORDS < n:
        firsts.append(n - MAX_WORDS)
    return [(words[k][0], words[min(k + MAX_WORDS, n) - 1][1]) for k in firsts]


@dataclass(frozen=True)
class Unit:
    """One thing the text models read: text ``owner`` of the item, whole (``span`` None) or a
    segment of it, as written (``read_as`` None) or as read back."""

    owner: int
    span: tuple[int, int] | None
    read_as: str | None


class TextUnits:
    """The units of an item's texts and what the models read of them (``texts``: each distinct
    text once, for one batched call per model; a text repeated many times costs one), and the
    way back to one score per text of the item: the strongest of its units'."""

    def __init__(self, texts: Sequence[str], form: str = "nfkc", read_disguised: bool = True,
                 unmask: Callable[[str], str | None] | None = None):
        self.texts: list[str] = []
        self.units: list[Unit] = []
        self._read: list[int] = []  # per unit, its position in texts
        self._given = list(texts)
        at: dict[str, int] = {}
        for i, text in enumerate(self._given):
            for span in [None, *segments(text)]:
                read = normalise_text(text if span is None else text[span[0]:span[1]], form)
                found = [(None, read)] + [(r, r) for r in (readings(read, unmask) if read_disguised else ())]
                for read_as, t in found:
                    if t not in at:
                        at[t] = len(self.texts)
                        self.texts.append(t)
                    self.units.append(Unit(i, span, read_as))
                    self._read.append(at[t])

    def strongest(self, scores: np.ndarray) -> tuple[np.ndarray, list[Unit], np.ndarray]:
        """Given one score per entry of ``texts``: per text of the item, its strongest score, the
        unit that gave it, and the position in ``texts`` of what that unit read. A text with a
        non-finite score for any unit gets that score (the policy then fails the item,
        engine.policies)."""
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)[self._read]
        winner = np.full(len(self._given), -1)
        for j, u in enumerate(self.units):
            w = winner[u.owner]
            if w < 0 or not np.isfinite(scores[j]) or (np.isfinite(scores[w]) and scores[j] > scores[w]):
                winner[u.owner] = j
        return scores[winner], [self.units[j] for j in winner], np.asarray(self._read)[winner]

    def excerpt(self, unit: Unit) -> str | None:
        """The segment of the text as given that ``unit`` read (None: the whole text)."""
        if unit.span is None:
            return None
        s = self._given[unit.owner][unit.span[0]:unit.span[1]]
        return s if len(s) <= MAX_EXCERPT_CHARS else s[:MAX_EXCERPT_CHARS - 1] + "…"


def batches_of_like_length(texts: Sequence[str], most: int) -> list[list[int]]:
    """Positions of ``texts`` in batches of at most ``most`` texts of like length (the longest at
    most 1.5x the shortest, give or take 40 characters). A batch is padded to its longest text:
    an item's sentences (Note [text segments]) batched with its whole text would be padded to it,
    and self-attention costs grow with the square of the padded length."""
    batches: list[list[int]] = []
    for i in sorted(range(len(texts)), key=lambda i: len(texts[i])):
        b = batches[-1] if batches else None
        if b is None or len(b) == most or len(texts[i]) > 1.5 * len(texts[b[0]]) + 40:
            batches.append([i])
        else:
            b.append(i)
    return batches
