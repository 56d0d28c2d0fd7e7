"""Policy scoring (engine/policies.py): what a score may not be."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from engine.pipeline import PolicyConfig
from engine.policies import score_texts, score_timed


def test_a_non_finite_score_fails_the_item_instead_of_passing_it():
    """NaN is below every threshold: a NaN score would pass an item nobody judged."""
    policy = PolicyConfig("violent_audio", "audio", 0.5, pooling="max", classes=(0, 1))
    outputs = np.array([[0.1, 0.2], [np.nan, 0.3]], np.float32)
    times = [(0.0, 0.96), (0.48, 1.44)]
    with pytest.raises(ModelError, match="non-finite"):
        score_timed(policy, outputs, np.array([0, 1]), times, "audio", "yamnet")
    ok = score_timed(policy, np.nan_to_num(outputs), np.array([0, 1]), times, "audio", "yamnet")
    assert ok.score == pytest.approx(0.3)
    text = PolicyConfig("offensive_text", "text_classifier", 0.5)
    with pytest.raises(ModelError, match="non-finite"):
        score_texts(text, np.array([0.2, np.inf]), "profanity")
