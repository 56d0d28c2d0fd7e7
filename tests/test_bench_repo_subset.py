"""bench/repo_subset.py: a repository of the fetched models only, with a pipeline that still loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.repo_subset import make_subset, subset_pipeline
from engine.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "model_repo" / "pipeline.toml").read_text()
MODELS = ("open_nsfw", "yamnet", "minilm", "profanity")


def _source(tmp_path: Path, fetched: set[str]) -> Path:
    """A repository like the shipped one whose ``fetched`` models have a version folder."""
    src = tmp_path / "src"
    for name in MODELS:
        (src / name).mkdir(parents=True)
        (src / name / "config.pbtxt").write_text((ROOT / "model_repo" / name / "config.pbtxt").read_text())
        if name in fetched:
            (src / name / "1").mkdir()
            (src / name / "1" / "model.onnx").write_bytes(b"weights")
    (src / "pipeline.toml").write_text(SHIPPED)
    (src / "models.lock").write_text((ROOT / "model_repo" / "models.lock").read_text())
    return src


def test_without_the_text_models_only_vision_and_audio_remain(tmp_path):
    src = _source(tmp_path, {"open_nsfw", "yamnet"})
    kept, dropped = make_subset(src, tmp_path / "dst")
    assert kept == ["open_nsfw", "yamnet"]
    assert dropped == ["[text.embedding]", "[text.classifier]", "policy offensive_text",
                       "policy violent_threat", "policy self_harm"]
    p = load_pipeline(tmp_path / "dst")
    assert [q.name for q in p.policies] == ["sexual_content", "violent_audio"]
    assert p.text_embedding is None and p.text_classifier is None
    assert p.vision.model == "open_nsfw" and p.audio.model == "yamnet"
    assert sorted(d.name for d in (tmp_path / "dst").iterdir()) == ["models.lock", "open_nsfw",
                                                                    "pipeline.toml", "yamnet"]
    assert (tmp_path / "dst" / "yamnet" / "1" / "model.onnx").read_bytes() == b"weights"  # linked


def test_every_model_fetched_keeps_the_pipeline_unchanged(tmp_path):
    src = _source(tmp_path, set(MODELS))
    kept, dropped = make_subset(src, tmp_path / "dst")
    assert kept == sorted(MODELS) and dropped == []
    assert (tmp_path / "dst" / "pipeline.toml").read_text() == SHIPPED


@pytest.mark.parametrize("missing, source", [("open_nsfw", "vision"), ("yamnet", "audio"),
                                              ("profanity", "text_classifier")])
def test_a_missing_model_takes_its_policies_along(missing, source):
    present = set(MODELS) - {missing}
    text, dropped = subset_pipeline(SHIPPED, present)
    import tomllib

    spec = tomllib.loads(text)
    assert all(q["source"] != source for q in spec["policies"])
    assert len(spec["policies"]) < len(tomllib.loads(SHIPPED)["policies"])
    assert dropped and all(missing not in line for line in text.splitlines() if line.startswith("model ="))
