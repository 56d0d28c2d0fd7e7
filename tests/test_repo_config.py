"""config.pbtxt parsing and validation (no models needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from engine.errors import ConfigError
from engine.repo.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[1] / "model_repo"
MODELS = ["open_nsfw", "yamnet", "minilm", "profanity"]


@pytest.mark.parametrize("name", MODELS)
def test_shipped_configs_parse(name):
    cfg = load_config(REPO / name / "config.pbtxt")
    assert isinstance(cfg, mc.ModelConfig)
    assert cfg.name == name
    assert cfg.max_batch_size > 0
    assert cfg.input and cfg.output


def test_shipped_config_values():
    nsfw = load_config(REPO / "open_nsfw")
    assert nsfw.platform == "onnxruntime_onnx" and nsfw.max_batch_size == 32
    assert nsfw.input[0].name == "input:0" and nsfw.input[0].data_type == mc.TYPE_FP32
    assert list(nsfw.input[0].dims) == [224, 224, 3] and list(nsfw.output[0].dims) == [2]
    yam = load_config(REPO / "yamnet")
    assert yam.max_batch_size == 64 and list(yam.input[0].dims) == [1, 96, 64]
    assert list(yam.output[0].dims) == [521]
    lm = load_config(REPO / "minilm")
    assert [i.name for i in lm.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.data_type == mc.TYPE_INT64 and list(i.dims) == [-1] for i in lm.input)
    assert lm.output[0].name == "token_embeddings" and list(lm.output[0].dims) == [-1, 384]
    prof = load_config(REPO / "profanity")
    assert prof.backend == "sklearn" and prof.max_batch_size == 256
    assert prof.input[0].data_type == mc.TYPE_STRING and prof.output[0].data_type == mc.TYPE_FP32


def _copy(tmp_path: Path, name: str = "yamnet") -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(REPO / name / "config.pbtxt", d / "config.pbtxt")
    return d / "config.pbtxt"


def _edit(p: Path, old: str, new: str) -> None:
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new, 1))


def test_unknown_field_names_file_field_and_position(tmp_path):
    p = _copy(tmp_path)
    _edit(p, "max_batch_size: 64", "max_batch: 64")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    e = ei.value
    assert e.path == str(p) and e.field == "max_batch"
    assert "line" in e.problem and "col" in e.problem
    assert str(p) in str(e)


def test_wrong_dtype_names_data_type(tmp_path):
    p = _copy(tmp_path)
    _edit(p, "data_type: TYPE_FP32", "data_type: TYPE_FLOAT32")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == "data_type"
    assert "TYPE_FLOAT32" in ei.value.problem and "line" in ei.value.problem


def test_name_mismatch(tmp_path):
    p = _copy(tmp_path)
    _edit(p, 'name: "yamnet"', 'name: "yamnet2"')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == "name" and "yamnet2" in ei.value.problem and str(p) in str(ei.value)


def test_name_may_be_omitted(tmp_path):
    p = _copy(tmp_path)
    _edit(p, 'name: "yamnet"', "")
    assert load_config(p).name == "yamnet"


@pytest.mark.parametrize(
    "old,new,field",
    [
        ("max_batch_size: 64", "max_batch_size: -1", "max_batch_size"),
        ('platform: "onnxruntime_onnx"', 'platform: "onnx_magic"', "platform"),
        ('platform: "onnxruntime_onnx"', 'backend: "nope"', "backend"),
        ('platform: "onnxruntime_onnx"', "", "platform"),
        ("data_type: TYPE_FP32\n    dims: [ 1, 96, 64 ]", "dims: [ 1, 96, 64 ]", "input[0].data_type"),
        ("dims: [ 1, 96, 64 ]", "", "input[0].dims"),
        ("dims: [ 1, 96, 64 ]", "dims: [ 1, 0, 64 ]", "input[0].dims"),
        ('name: "audio"', 'name: ""', "input[0].name"),
        ("dims: [ 521 ]", "dims: [ -2 ]", "output[0].dims"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, old, new, field):
    p = _copy(tmp_path)
    _edit(p, old, new)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == field, ei.value
    assert ei.value.path == str(p)


def test_missing_inputs_and_outputs(tmp_path):
    p = _copy(tmp_path)
    text = p.read_text()
    start, end = text.index("input ["), text.index("output [")
    p.write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.field == "input"


def test_syntax_error_and_missing_file(tmp_path):
    p = _copy(tmp_path)
    _edit(p, "max_batch_size: 64", "max_batch_size: 64 }")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "line" in ei.value.problem
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nothing" / "config.pbtxt")
    assert "not found" in ei.value.problem


def test_parse_config_string():
    cfg = parse_config('name: "m" backend: "sklearn" max_batch_size: 4')
    assert cfg.backend == "sklearn" and cfg.max_batch_size == 4
