"""The `engine` command: JSON lines in input order, errors per item, info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _engine(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.models
def test_moderate_json_lines_in_order(model_repo, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    paths = [SAMPLES / "image.png", bad, SAMPLES / "speech.m4a"]
    r = _engine("moderate", *map(str, paths), "--json", "--repo", str(model_repo.path))
    assert r.returncode == 1, r.stderr  # one item failed
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["input"] for d in lines] == [str(p) for p in paths]
    assert "sexual_content" in lines[0]["policies"]
    assert lines[1]["error"]["type"].endswith("Error") and lines[1]["error"]["message"]
    assert set(lines[2]["policies"]) == {"violent_audio"}


@pytest.mark.models
def test_moderate_table_and_text_only(model_repo):
    r = _engine("moderate", "--text", "I am going to kill you", "--repo", str(model_repo.path))
    assert r.returncode == 0, r.stderr
    assert "violent_threat" in r.stdout and "flag" in r.stdout


def test_info():
    r = _engine("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "onnxruntime" in info["backends"]
    assert info["native"]["cuda_compiled"] in (True, False)
    device = info["device"]
    assert device["cuda devices"].isdigit() and device["video_decoder nvdec"]
    assert device["kernel_impl cuda"].startswith("engine._C_cuda")
    try:
        import pillow_heif
        assert info["media"]["heif"].startswith(f"pillow-heif {pillow_heif.__version__}:")
    except ImportError:
        assert info["media"]["heif"].startswith("pillow-heif not installed")
    assert info["media"]["colour profiles"].startswith("LittleCMS 2.")
    assert info["media"]["hdr"].startswith("PQ, HLG and BT.2020")


def test_usage_errors():
    assert _engine("moderate").returncode == 2
    r = _engine("moderate", "--text", "x", "--repo", "/nonexistent/repo")
    assert r.returncode == 2 and "engine:" in r.stderr
