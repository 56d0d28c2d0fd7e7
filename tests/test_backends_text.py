"""engine.text.Tokenizer (MiniLM tokenizer.json) vs the Hugging Face fast tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError, ModelError
from engine.text import Tokenizer

pytestmark = pytest.mark.models

TEXTS = ["Hello world!", "Ünïcödé  ACCENTS and emoji 🤖", "word " * 400, "", "don't STOP me now"]


@pytest.fixture(scope="module")
def tok(model_entry):
    return Tokenizer.from_file(model_entry("minilm").files["tokenizer.json"])


def test_shapes_dtypes_padding_truncation(tok):
    enc = tok(TEXTS)
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids"}
    for v in enc.values():
        assert v.dtype == np.int64 and v.shape == (len(TEXTS), 256)
    assert enc["input_ids"][2, 0] == 101 and enc["input_ids"][2, -1] == 102  # truncated keeps [SEP]
    assert enc["attention_mask"][3].sum() == 2  # "" -> [CLS] [SEP]
    short = tok(["Hello world!", "hi"])
    assert short["input_ids"].shape == (2, 5)  # padded to the longest, not to 256
    assert short["input_ids"][1, -1] == tok.pad_id == 0 and short["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert tok.count_tokens(["Hello world!"]) == [5]
    assert tok("Hello world!")["input_ids"].shape == (1, 5)
    assert tok([])["input_ids"].shape == (0, 0)


def test_padding_to_a_length_bucket_keeps_the_embeddings(tok, model_entry):
    """pad_to (a backend's length buckets): the smallest bucket >= the longest text, padding
    masked, the pooled embeddings unchanged; longer than every bucket: the longest."""
    from engine.backends import load_backend
    from engine.ops.pooling import masked_mean

    texts = ["Hello world!", "hi"]
    plain, padded = tok(texts), tok(texts, pad_to=(4, 16, 64))
    assert padded["input_ids"].shape == (2, 16)
    for k in plain:
        np.testing.assert_array_equal(padded[k][:, :5], plain[k])
        assert not padded[k][:, 5:].any()  # [PAD] = 0, masked, type 0
    assert tok(texts, pad_to=(2, 4))["input_ids"].shape == (2, 5)
    be = load_backend(model_entry("minilm"), backend="onnxruntime")
    emb = [masked_mean(be.infer(e)["token_embeddings"], e["attention_mask"], normalize=True) for e in (plain, padded)]
    np.testing.assert_allclose(emb[1], emb[0], atol=1e-6)


def test_matches_transformers_fast_tokenizer(tok, model_entry, tmp_path):
    transformers = pytest.importorskip("transformers")
    import shutil

    shutil.copy(model_entry("minilm").files["tokenizer.json"], tmp_path / "tokenizer.json")
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                               pad_token="[PAD]", model_max_length=512)
    want = ref(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="np",
               return_token_type_ids=True)
    got = tok(TEXTS)
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(InputError):
        tok([1, 2])
    with pytest.raises(InputError):
        tok([b"\xff\xfe"])
    assert tok([b"bytes ok"])["input_ids"].shape[0] == 1
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ModelError):
        Tokenizer.from_file(tmp_path / "bad.json")
