"""pipeline.toml validation: the shipped file loads; every mistake names file and field."""

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.pipeline import load_pipeline

REPO = Path(__file__).resolve().parents[1] / "model_repo"


def test_shipped_pipeline_loads():
    p = load_pipeline(REPO)
    assert p.vision.model == "open_nsfw"
    assert p.vision.preprocess["channels"] == "bgr"
    assert p.vision.preprocess["resize_to"] == (256, 256)
    assert p.vision.backgrounds == ("white", "black")
    assert p.audio.model == "yamnet"
    names = [x.name for x in p.policies]
    assert names == ["sexual_content", "violent_audio", "offensive_text", "violent_threat", "self_harm"]


def _with(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "pipeline.toml").read_text()
    assert old in text, old
    (tmp_path / "pipeline.toml").write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize(
    "old,new,field,problem",
    [
        ('mode = "fps"', 'mode = "sometimes"', "vision.sampling.mode", "not one of"),
        ('channels = "bgr"', 'channel = "bgr"', "vision.preprocess.channel", "unknown field"),
        ("size = [224, 224]", "size = [224]", "vision.preprocess.size", "[height, width]"),
        ("resize_to = [256, 256]", "resize_to = [200, 200]", "vision.preprocess.resize_to", "smaller"),
        ("std = [1.0, 1.0, 1.0]", "std = [1.0, 0, 1.0]", "vision.preprocess.std", "0"),
        ("threshold = 0.8", 'threshold = "high"', "policies[0].threshold", "expected float"),
        ("window = 3", "window = 0", "policies[0].window", ">= 1"),
        ('source = "vision"', 'source = "smell"', "policies[0].source", "not one of"),
        ('name = "self_harm"', 'name = "sexual_content"', "policies[4].name", "duplicate"),
        ('batch_size = 16\nbackend = "auto"', 'batch_size = 16\nbackend = "cuda"', "vision.backend", "not one of"),
        ('does\nbackend = "auto"', 'does\nbackend = 1', "text.embedding.backend", "expected str"),
        ('unicode = "nfkc"', 'unicode = "nfc"', "text.unicode", "not one of"),
        ('backgrounds = ["white", "black"]', 'backgrounds = ["white", "grey"]', "vision.backgrounds", "distinct pages"),
        ('backgrounds = ["white", "black"]', 'backgrounds = []', "vision.backgrounds", "distinct pages"),
        ('backgrounds = ["white", "black"]', 'backgrounds = ["black", "black"]', "vision.backgrounds", "distinct pages"),
    ],
)
def test_invalid_fields_are_named(tmp_path, old, new, field, problem):
    repo = _with(tmp_path, old, new)
    with pytest.raises(ConfigError) as e:
        load_pipeline(repo)
    assert e.value.field == field
    assert problem in e.value.problem
    assert str(repo / "pipeline.toml") in str(e.value)


def test_policy_without_its_model_is_refused(tmp_path):
    text = (REPO / "pipeline.toml").read_text()
    start, end = text.index("[audio]"), text.index("# --- text")
    (tmp_path / "pipeline.toml").write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError, match="no model configured"):
        load_pipeline(tmp_path)


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path)
    (tmp_path / "pipeline.toml").write_text("[vision\n")
    with pytest.raises(ConfigError, match="<syntax>"):
        load_pipeline(tmp_path)


def test_backend_choice_per_model(tmp_path):
    p = load_pipeline(REPO)
    assert {p.backend_for(m) for m in ("open_nsfw", "yamnet", "minilm", "profanity", "unused")} == {"auto"}
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('batch_size = 64\nbackend = "auto"', 'batch_size = 64\nbackend = "onnxruntime"')
    text = text.replace('model = "profanity"', 'model = "profanity"\nbackend = "auto"')
    (tmp_path / "pipeline.toml").write_text(text.replace('batch_size = 16\nbackend = "auto"',
                                                         'batch_size = 16\nbackend = "torch"'))
    p = load_pipeline(tmp_path)
    assert (p.vision.backend, p.audio.backend, p.text_embedding.backend) == ("torch", "onnxruntime", "auto")
    assert p.backend_for("open_nsfw") == "torch" and p.backend_for("profanity") == "auto"


def test_one_model_with_two_backends_is_refused(tmp_path):
    text = (REPO / "pipeline.toml").read_text()
    text = text.replace('model = "yamnet"', 'model = "open_nsfw"')  # the audio section reuses the vision model
    (tmp_path / "pipeline.toml").write_text(text.replace('batch_size = 64\nbackend = "auto"',
                                                         'batch_size = 64\nbackend = "torch"'))
    with pytest.raises(ConfigError) as e:
        load_pipeline(tmp_path)
    assert e.value.field == "audio.backend" and "[vision]" in e.value.problem
