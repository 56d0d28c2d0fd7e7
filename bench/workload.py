"""The items the Session-level benches feed: bundled samples per kind, and model input batches.

Shared by the ``models``, ``e2e`` and ``load`` suites and ``bench/serving.py``, so that every
Session measurement runs on the same media.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# ENGINE_MODEL_REPO as in tests/conftest.py (a subset repository: bench/repo_subset.py)
MODEL_REPO = Path(os.environ.get("ENGINE_MODEL_REPO", ROOT / "model_repo"))

# one Session item per kind (keywords of Session.moderate; "media" is the content-detected input)
ITEMS = {
    "video": {"media": SAMPLES / "clip_tone.mp4"},
    "image": {"image": SAMPLES / "image.jpg"},
    "audio": {"audio": SAMPLES / "speech.m4a"},
    "text": {"text": "have a lovely day"},
}

# YAMNet patches are 0.96 s windows every 0.48 s (engine.ops.audio): N patches cover 0.48 N s
AUDIO_SECONDS_PER_PATCH = 0.48
TEXT_TOKENS = 32  # token length of the synthetic MiniLM batches (a short caption)


def model_batch(model: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One input batch of ``batch`` rows for a model of the shipped repository.

    Values are in each input's real range (Caffe-mean-subtracted BGR pixels, log-mel values,
    token ids inside the vocabulary), so no backend takes a shortcut on degenerate input.
    """
    if model == "open_nsfw":
        return {"input:0": rng.uniform(-123, 151, (batch, 224, 224, 3)).astype(np.float32)}
    if model == "yamnet":
        return {"audio": rng.normal(-4, 2, (batch, 1, 96, 64)).astype(np.float32)}
    if model == "minilm":
        ids = rng.integers(1000, 30000, (batch, TEXT_TOKENS))
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    if model == "profanity":
        words = ["have", "a", "lovely", "day", "you", "are", "awful", "the", "match", "was", "great"]
        texts = [" ".join(rng.choice(words, 8)) for _ in range(batch)]
        return {"TEXT": np.array(texts, dtype=object)}
    raise KeyError(f"no synthetic inputs for model {model!r}")
