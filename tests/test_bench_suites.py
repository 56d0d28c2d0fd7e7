"""The kernels and decode suites on tiny inputs: figure names, units, stages, same-run ratios."""

from __future__ import annotations

import pytest

from bench.suites import RunConfig, SuiteResult
from bench.suites import decode as decode_suite
from bench.suites import kernels

TINY = RunConfig(quick=True, threads=2, repeats=2, min_time=0.0)


def by_name(figures):
    return {f.name: f for f in figures}


def test_kernels_preprocess_paths_ratios_and_stage(monkeypatch):
    monkeypatch.setattr(kernels, "RESOLUTIONS", {"tiny": (96, 128)})
    monkeypatch.setattr(kernels, "_resolutions", lambda cfg: ["tiny"])
    monkeypatch.setattr(kernels, "_batches", lambda cfg: [1, 3])
    out, ticks = SuiteResult(), []
    with kernels.one_thread_libraries():
        kernels.preprocess_part(TINY, ticks.append, out)
    figs = by_name(out.figures)
    assert ticks == ["preprocess tiny batch 1", "preprocess tiny batch 3"]
    for b in (1, 3):
        base = f"kernels/preprocess/tiny/b{b}"
        assert {f"{base}/{p}" for p in ("fused", "naive", "opencv", "fused_2t", "fused÷naive", "fused÷opencv")} \
            <= set(figs)
        ratio = figs[f"{base}/fused÷naive"]
        assert ratio.samples == pytest.approx([a / n for a, n in zip(figs[f"{base}/fused"].samples,
                                                                       figs[f"{base}/naive"].samples)])
        stage = figs[f"{base}/fused_2t"]  # all cores: the plan's per-machine figure
        assert (stage.stage, stage.items_per_call, stage.params["threads"]) == ("preprocess", b, 2)
        assert figs[f"{base}/fused"].stage is None and figs[f"{base}/fused"].params["threads"] == 1


def test_decode_suite_modes_units_and_skipped_codec(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_MEDIA_CACHE", str(tmp_path))  # the clip is encoded here, not in ~/.cache
    monkeypatch.setattr(decode_suite, "clip_shape", lambda cfg: (2, 96, 128))
    monkeypatch.setattr(decode_suite, "available_encoders", lambda: {"h264": "libx264"})
    ticks = []
    res = decode_suite.run(TINY, ticks.append)
    figs = by_name(res.figures)
    assert set(figs) == {"decode/h264/all", "decode/h264/1fps", "decode/h264/8-uniform",
                         "decode/h264/1fps÷all", "decode/h264/8-uniform÷all"}
    assert figs["decode/h264/1fps"].unit == "video-s/s" and figs["decode/h264/1fps"].items_per_call == 2
    assert figs["decode/h264/8-uniform"].unit == "videos/s" and figs["decode/h264/8-uniform"].items_per_call == 1
    assert {f.params["sampling"] for f in res.figures if f.stage} == {"all", "fps=1", "uniform=8"}
    assert figs["decode/h264/all"].params["resolution"] == "96p"
    assert len(res.notes) == 3 and all("skipped" in n for n in res.notes)
    assert ticks == ["h264", "hevc skipped", "vp9 skipped", "av1 skipped"]
