"""The committed GPU baselines (bench/baselines/) stay readable by `bench compare`: a schema change
must come with new baselines, not silently orphan them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.compare import main as compare_main
from bench.results import figures_of, load

BASELINES = sorted((Path(__file__).resolve().parents[1] / "bench" / "baselines").glob("*/*.json"))


def test_there_are_baselines():
    assert BASELINES


@pytest.mark.parametrize("path", BASELINES, ids=[f"{p.parent.name}/{p.stem}" for p in BASELINES])
def test_baseline_loads_and_names_its_gpu(path):
    doc = load(path)
    figures = figures_of(doc)
    assert figures and all(f.samples for f in figures)
    assert [g["name"] for g in doc["machine"]["gpus"]]  # a GPU baseline says which card
    assert any(f.params.get("device", "").startswith("cuda") or "/gpu/" in f.name or "gpu" in f.name
               for f in figures)
    assert path.with_suffix(".md").is_file()  # its summary table beside it


@pytest.mark.parametrize("path", BASELINES, ids=[f"{p.parent.name}/{p.stem}" for p in BASELINES])
def test_a_baseline_compared_with_itself_has_no_regression(path, capsys):
    assert compare_main([str(path), str(path)]) == 0
