"""bench.timing / bench.results / bench.runner: statistics, interleaving, the JSON schema, markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import machine
from bench.results import SCHEMA, Figure, Report, figures_of, load, ratio_figure
from bench.runner import main as run_main
from bench.runner import parse_suites
from bench.timing import Stats, in_flight, measure, rates


def test_stats_quantiles_and_spread():
    s = Stats.of(range(1, 11))
    # numpy linear percentiles of 1..10: p10 = 1.9, median = 5.5, p90 = 9.1
    assert (s.p10, s.median, s.p90, s.n) == pytest.approx((1.9, 5.5, 9.1, 10))
    assert s.spread == pytest.approx((9.1 - 1.9) / (2 * 5.5))
    with pytest.raises(ValueError):
        Stats.of([])


def test_measure_warms_up_then_interleaves_round_robin():
    calls = []
    paths = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    samples = measure(paths, repeats=3, min_time=0.0, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # min_time 0: one call per repetition
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    assert rates([0.5, 0.25], 8) == [16.0, 32.0]


def test_ratio_figure_is_per_round():
    a = Figure("s/a", "s", "frames/s", "higher", [10.0, 20.0, 30.0])
    b = Figure("s/b", "s", "frames/s", "higher", [5.0, 20.0, 10.0])
    r = ratio_figure("s/a÷b", "s", a, b)
    assert r.samples == [2.0, 1.0, 3.0] and r.unit == "x" and r.better == "higher"
    with pytest.raises(ValueError):
        ratio_figure("x", "s", a, Figure("s/c", "s", "frames/s", "higher", [1.0]))
    with pytest.raises(ValueError):
        Figure("s/d", "s", "ms", "faster", [1.0])


def test_report_json_roundtrip_and_markdown(tmp_path):
    figs = [Figure("k/p/fused", "k", "frames/s", "higher", [100.0, 110.0, 90.0], {"batch": 8},
                   stage="preprocess", items_per_call=8),
            Figure("k/lat", "k", "ms", "lower", [2.0, 3.0])]
    rep = Report(machine=machine.describe(), argv=["--quick"], quick=True, suites={"k": {"status": "ok"}},
                 figures=figs, seconds=1.5, label="test")
    js, md = rep.write(tmp_path, "run")
    doc = load(js)
    assert doc["schema"] == SCHEMA and doc["label"] == "test"
    back = figures_of(doc)
    assert [(f.name, f.samples, f.stage, f.items_per_call, f.better) for f in back] == \
        [(f.name, f.samples, f.stage, f.items_per_call, f.better) for f in figs]
    assert doc["figures"][0]["median"] == 100.0 and doc["figures"][0]["p10"] == pytest.approx(92.0)
    text = md.read_text()
    assert "| k/p/fused | 100 | 92 | 108 | 8.0% | frames/s | higher |" in text
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({**doc, "schema": "moderation-engine-bench/0"}))
    with pytest.raises(ValueError, match="schema"):
        load(bad)


def test_machine_description_names_cpu_and_versions():
    m = machine.describe()
    assert m["cores"] >= 1 and m["cpu_model"]
    assert m["versions"]["numpy"] == np.__version__
    assert "simd_selected" in m["engine_build"] or "error" in m["engine_build"]


def test_suite_names_and_the_runner_writes_what_a_suite_returns(tmp_path, monkeypatch):
    import types

    import bench.runner
    from bench.suites import SuiteResult

    assert parse_suites("all") == ["kernels", "decode", "models", "e2e", "load"]
    with pytest.raises(Exception, match="unknown"):
        parse_suites("kernels,nope")
    fig = Figure("models/m/b1/onnxruntime", "models", "frames/s", "higher", [10.0, 12.0])
    stub = types.SimpleNamespace(steps=lambda cfg: 1,
                                 run=lambda cfg, tick: tick("one") or SuiteResult([fig], ["a note"]))
    monkeypatch.setattr(bench.runner, "module", lambda name: stub)
    assert run_main(["--suite", "models", "--out", str(tmp_path), "--no-plots"]) == 0
    (js,) = tmp_path.glob("bench-*.json")
    doc = load(js)
    assert [f["name"] for f in doc["figures"]] == ["models/m/b1/onnxruntime"]
    assert doc["suites"]["models"]["status"] == "ok" and doc["suites"]["models"]["notes"] == ["a note"]


def test_suite_plots_write_pngs(tmp_path):
    from bench.plots import suite_plots

    f = lambda name, unit, v: Figure(name, name.split("/")[0], unit, "higher", [v, v * 1.1, v * 0.9])  # noqa: E731
    figs = [f("kernels/preprocess/480p/b1/fused", "frames/s", 500), f("kernels/preprocess/480p/b1/naive", "frames/s", 300),
            f("kernels/preprocess/480p/b1/fused÷naive", "x", 1.6), f("decode/h264/all", "video-s/s", 10),
            f("decode/h264/1fps", "video-s/s", 60)]
    paths = suite_plots(figs, tmp_path, "test machine")
    assert sorted(p.name for p in paths) == ["decode.png", "kernels_preprocess.png", "kernels_ratios.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_gpus_from_nvidia_smi(monkeypatch):
    import subprocess

    out = "NVIDIA H100 80GB HBM3, 580.65.06, 81559 MiB\n"
    monkeypatch.setattr(machine.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(machine.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out, stderr=""))
    assert machine.gpus() == [{"name": "NVIDIA H100 80GB HBM3", "driver": "580.65.06", "memory": "81559 MiB"}]


def test_in_flight_runs_its_threads_at_once():
    import threading

    barrier, done = threading.Barrier(3, timeout=10), []

    def item():  # passes only when three items are in flight together
        barrier.wait()
        done.append(1)

    in_flight(item, 3, calls=2)()
    assert len(done) == 6
