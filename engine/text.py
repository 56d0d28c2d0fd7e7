"""Tokenization for MiniLM (sentence-transformers/all-MiniLM-L6-v2) with `tokenizers`.

Loads the model's ``tokenizer.json`` (BERT WordPiece, lower-casing normaliser, [CLS]/[SEP]
post-processor).  The file itself carries truncation 128 / fixed padding 128; like
sentence-transformers we override both: truncation to ``max_length`` = 256 (the model's
``sentence_bert_config.json`` max_seq_length) and padding to the longest text in the batch.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

from engine.errors import InputError, ModelError

DEFAULT_MAX_LENGTH = 256

# Note [text normalisation]
# Obfuscated text reads the same to people and not to the models: fullwidth letters
# ("ｆｕｃｋ"), mathematical and circled letters ("𝐟𝐮𝐜𝐤", "ⓕⓤⓒⓚ"), and invisible characters
# (zero-width space, soft hyphen, word joiner) between letters. The profanity classifier's
# vocabulary and MiniLM's WordPiece see none of it as the word. Before either model, texts are put
# in Unicode compatibility form (NFKC, which folds the look-alike letters to plain ones) and
# stripped of format characters (category Cf, invisible by definition). Letters of other scripts
# drawn like Latin ones (Cyrillic "с" in "fuсk", "ѕһіt") are folded to those Latin letters (Unicode's
# confusables, TR39, from confusable_homoglyphs) where a reader takes them for Latin: in a word that
# also holds Latin letters, or anywhere in a text written mostly in Latin letters, and only when
# every letter of the word has a Latin double; Russian or Greek text keeps its own letters. Text
# after a right-to-left override (U+202E, up to its U+202C or the end of the line) is shown
# reversed: "\u202ekcuf" shows as "fuck", so left-to-right letters there are read reversed, as
# shown (a run holding right-to-left letters, Hebrew or Arabic, reads as written). Plain text is
# unchanged, so the models' scores on it stay the packages' own. ``[text] unicode = "raw"`` in
# pipeline.toml turns it off.
TEXT_FORMS = ("nfkc", "raw")
_WORD = re.compile(r"\w+")


def normalise_text(text: str, form: str = "nfkc") -> str:
    """``text`` as the models should read it (Note [text normalisation]). In either form, a lone
    UTF-16 surrogate (a JSON "\\ud800" escape, an undecodable command-line byte) becomes U+FFFD: the
    tokenizer cannot take one, and a single one must not make a whole text unjudgeable."""
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if form == "raw":
        return text
    folded = unicodedata.normalize("NFKC", _overrides_as_shown(text))
    return _latin_lookalikes_folded("".join(ch for ch in folded if unicodedata.category(ch) != "Cf"))


_OVERRIDDEN = re.compile("\u202e([^\u202c\n\r\u2029]*)\u202c?")


def _overrides_as_shown(text: str) -> str:
    """Note [text normalisation]: left-to-right text after a right-to-left override, as shown."""
    if "\u202e" not in text:
        return text

    def shown(m: re.Match) -> str:
        run = m.group(1)
        if any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in run):
            return run  # Hebrew or Arabic: read right to left, as written
        return run[::-1]

    return _OVERRIDDEN.sub(shown, text)


def _latin_lookalikes_folded(text: str) -> str:
    """Note [text normalisation]: letters that pass for Latin ones, as the Latin letters."""
    if text.isascii():
        return text
    letters = [ch for ch in text if ch.isalpha()]
    mostly_latin = 2 * sum(ch.isascii() for ch in letters) >= len(letters)

    def word(m: re.Match) -> str:
        w = m.group()
        if w.isascii() or not (mostly_latin or any(ch.isascii() and ch.isalpha() for ch in w)):
            return w
        latin = [ch if ch.isascii() else _latin_lookalike(ch) for ch in w]
        return w if None in latin else "".join(latin)  # a letter with no Latin double: a real word

    return _WORD.sub(word, text)


@functools.lru_cache(maxsize=8192)
def _latin_lookalike(ch: str) -> str | None:
    """The ASCII letter ``ch`` (a letter of another script) is drawn like, per Unicode's
    confusables; None when there is none."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(ch, preferred_aliases=["latin"], greedy=True) or []
    for glyph in (g["c"] for f in found for g in f["homoglyphs"]):
        if len(glyph) == 1 and glyph.isascii() and glyph.isalpha():
            return glyph
    return None


class Tokenizer:
    """``Tokenizer.from_file(path)(texts)`` -> dict of int64 [B,T] input_ids/attention_mask/token_type_ids."""

    def __init__(self, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH, pad_token: str = "[PAD]"):
        if max_length < 2:
            raise InputError(f"max_length must be >= 2, got {max_length}")
        self._tok = tokenizer
        self.max_length = int(max_length)
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelError(f"tokenizer has no pad token {pad_token!r}")
        self.pad_id = pad_id
        tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_type_id=0, pad_token=pad_token,
                                 length=None)  # pad to the longest in the batch

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, max_length: int = DEFAULT_MAX_LENGTH) -> "Tokenizer":
        try:
            from tokenizers import Tokenizer as _HFTokenizer
        except ImportError:
            raise ModelError("engine.text needs the `tokenizers` package") from None
        try:
            tok = _HFTokenizer.from_file(os.fspath(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
            raise ModelError(f"cannot load tokenizer {path}: {e}") from None
        return cls(tok, max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, texts: str | Sequence[str], pad_to: Sequence[int] = ()) -> dict[str, np.ndarray]:
        """``pad_to``: lengths (ascending) to pad the batch up to, the smallest that holds its
        longest text, for a backend that runs per length bucket (Note [length buckets] in
        engine.backends.torch_cuda): padded alike, the batches of concurrent callers concatenate
        in the dynamic batcher. Padding tokens are masked: the pooled embeddings do not change."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        items: list[str] = []
        for t in texts:
            if isinstance(t, bytes):
                try:
                    t = t.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError("text is not valid UTF-8") from None
            if not isinstance(t, str):
                raise InputError(f"texts must be str, got {type(t).__name__}")
            items.append(t)
        if not items:
            z = np.zeros((0, 0), np.int64)
            return {"input_ids": z, "attention_mask": z.copy(), "token_type_ids": z.copy()}
        encs = self._tok.encode_batch(items, add_special_tokens=True)
        out = {
            "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encs], dtype=np.int64),
        }
        longest = out["input_ids"].shape[1]
        target = next((n for n in pad_to if n >= longest), longest)
        if target > longest:
            fill = {"input_ids": self.pad_id, "attention_mask": 0, "token_type_ids": 0}
            out = {k: np.pad(v, ((0, 0), (0, target - longest)), constant_values=fill[k]) for k, v in out.items()}
        return out

    __call__ = encode

    def count_tokens(self, texts: Iterable[str]) -> list[int]:
        """Token counts (with [CLS]/[SEP], after truncation)."""
        return [int(m.sum()) for m in self.encode(list(texts))["attention_mask"]]
