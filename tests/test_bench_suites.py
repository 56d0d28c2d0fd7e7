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
        assert {f"{base}/{p}" for p in ("fused", "naive", "opencv", "fused_2t", "fused÷naive", "fused÷opencv",
                                          "torch", "fused÷torch")} <= set(figs)
        ratio = figs[f"{base}/fused÷naive"]
        assert ratio.samples == pytest.approx([a / n for a, n in zip(figs[f"{base}/fused"].samples,
                                                                       figs[f"{base}/naive"].samples)])
        stage = figs[f"{base}/fused_2t"]  # all cores: the plan's per-machine figure
        assert (stage.stage, stage.items_per_call, stage.params["threads"]) == ("preprocess", b, 2)
        assert figs[f"{base}/fused"].stage is None and figs[f"{base}/fused"].params["threads"] == 1


EXACT_ROWS = {"decode/h264/8-exact", "decode/h264/8-exact÷all", "decode/h264/8-exact-loop",
              "decode/h264/8-exact-loop÷all", "decode/h264/8-exact÷8-exact-loop"}


@pytest.mark.parametrize("decord", [False, True])
def test_decode_suite_modes_units_and_skipped_codec(monkeypatch, tmp_path, decord):
    import engine.media.decord_source as ds

    if decord and not ds.decord_available():
        pytest.skip("decord not installed")
    monkeypatch.setattr(ds, "decord_available", lambda: decord)
    monkeypatch.setenv("ENGINE_MEDIA_CACHE", str(tmp_path))  # the clip is encoded here, not in ~/.cache
    monkeypatch.setattr(decode_suite, "clip_shape", lambda cfg: (2, 96, 128))
    monkeypatch.setattr(decode_suite, "available_encoders", lambda: {"h264": "libx264"})
    monkeypatch.setattr(decode_suite, "audio_seconds", lambda cfg: 1)
    monkeypatch.setattr(decode_suite, "hdr_rows", lambda cfg, out: None)  # its own test below
    ticks = []
    res = decode_suite.run(TINY, ticks.append)
    figs = by_name(f for f in res.figures if f.name.startswith("decode/h264/"))
    pyav = {"decode/h264/all", "decode/h264/1fps", "decode/h264/8-uniform",
            "decode/h264/1fps÷all", "decode/h264/8-uniform÷all"} | EXACT_ROWS
    decord_rows = {f"decode/h264/{m}" for m in ("decord-all", "decord-1fps", "decord-8-uniform",
                                                 "decord-all÷all", "decord-1fps÷all", "decord-8-uniform÷all",
                                                 "all÷decord-all", "1fps÷decord-1fps", "8-uniform÷decord-8-uniform")}
    assert set(figs) == (pyav | decord_rows if decord else pyav)
    assert figs["decode/h264/1fps"].unit == "video-s/s" and figs["decode/h264/1fps"].items_per_call == 2
    assert figs["decode/h264/8-uniform"].unit == "videos/s" and figs["decode/h264/8-uniform"].items_per_call == 1
    # only the engine's own decoder is a plan stage
    assert {f.params["sampling"] for f in res.figures if f.stage} == {"all", "fps=1", "uniform=8"}
    assert all(f.params["decoder"] == "pyav" for f in res.figures if f.stage)
    assert figs["decode/h264/all"].params["resolution"] == "96p"
    assert figs["decode/h264/8-exact"].unit == "videos/s" and figs["decode/h264/8-exact"].stage is None
    r = figs["decode/h264/8-exact÷8-exact-loop"]  # per round: the loop's time over the engine's
    assert r.samples == pytest.approx([e / b for e, b in zip(figs["decode/h264/8-exact"].samples,
                                                              figs["decode/h264/8-exact-loop"].samples)])
    assert not any("did not pick" in n for n in res.notes)
    if decord:
        r = figs["decode/h264/1fps÷decord-1fps"]
        # per round: decord's time over PyAV's, i.e. PyAV's rate over decord's
        assert r.samples == pytest.approx([p / d for p, d in zip(figs["decode/h264/1fps"].samples,
                                                                   figs["decode/h264/decord-1fps"].samples)])
    skipped = [n for n in res.notes if "skipped" in n]
    assert len(skipped) == 3 and len(res.notes) == (3 if decord else 4)
    assert ticks == ["h264", "hevc skipped", "vp9 skipped", "av1 skipped", "audio", "hdr"]


def test_decode_suite_audio_rows(monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_MEDIA_CACHE", str(tmp_path))
    monkeypatch.setattr(decode_suite, "audio_seconds", lambda cfg: 1)
    out = SuiteResult()
    decode_suite.audio_rows(TINY, out)
    figs = by_name(out.figures)
    t = decode_suite.AUDIO_THREADS
    assert set(figs) == {f"decode/audio/{m}" for m in (
        "engine", "per-frame", f"engine-{t}threads", f"per-frame-{t}threads",
        "engine÷per-frame", f"engine-{t}threads÷per-frame-{t}threads")}
    assert figs["decode/audio/engine"].unit == "audio-s/s" and figs["decode/audio/engine"].params["threads"] == 1
    assert figs[f"decode/audio/engine-{t}threads"].params["threads"] == t
    # per round: the baseline's time over the engine's, i.e. the engine's rate over the baseline's
    assert figs["decode/audio/engine÷per-frame"].samples == pytest.approx(
        [e / b for e, b in zip(figs["decode/audio/engine"].samples, figs["decode/audio/per-frame"].samples)])
    assert not any(f.stage for f in out.figures)  # not a plan stage: the e2e suite's audio decode is


def test_decode_suite_keeps_pyav_rows_when_decord_fails(monkeypatch, tmp_path):
    import engine.media.decord_source as ds
    from engine.errors import CorruptMediaError

    def refuse(*args, **kw):  # decord 0.6.0's bundled FFmpeg lacks e.g. the AV1 decoder
        raise CorruptMediaError("decord cannot open the video")

    monkeypatch.setattr(ds, "decord_available", lambda: True)
    monkeypatch.setattr(ds, "decode_video_decord", refuse)
    monkeypatch.setenv("ENGINE_MEDIA_CACHE", str(tmp_path))
    monkeypatch.setattr(decode_suite, "clip_shape", lambda cfg: (2, 96, 128))
    monkeypatch.setattr(decode_suite, "available_encoders", lambda: {"h264": "libx264"})
    monkeypatch.setattr(decode_suite, "audio_rows", lambda cfg, out: None)
    monkeypatch.setattr(decode_suite, "hdr_rows", lambda cfg, out: None)
    res = decode_suite.run(TINY, lambda label: None)
    assert {f.name for f in res.figures} == {"decode/h264/all", "decode/h264/1fps", "decode/h264/8-uniform",
                                             "decode/h264/1fps÷all", "decode/h264/8-uniform÷all"} | EXACT_ROWS
    assert any("h264: decord rows missing" in n and "cannot open" in n for n in res.notes)


# ---------------------------------------------------------------- models, e2e, load (issue 5)
@pytest.mark.models
def test_models_suite_units_stages_and_same_run_ratio(monkeypatch, model_repo, tmp_path):
    from bench.plan import make_plan
    from bench.plots import suite_plots
    from bench.traffic import Traffic
    from bench.suites import models

    monkeypatch.setattr(models, "MODELS", {"yamnet": models.ModelInfo("patches/s", "audio_model", [1, 2], []),
                                           "profanity": models.ModelInfo("texts/s", "text", [1, 3], [])})
    ticks = []
    res = models.run(TINY, ticks.append, repo_path=model_repo.path)
    figs = by_name(res.figures)
    assert ticks == ["yamnet batch 1", "yamnet batch 2", "profanity batch 1", "profanity batch 3"]
    for b in (1, 2):
        ort = figs[f"models/yamnet/b{b}/onnxruntime"]
        lat = figs[f"models/yamnet/b{b}/onnxruntime/latency"]
        assert (ort.unit, ort.better, lat.unit, lat.better) == ("patches/s", "higher", "ms", "lower")
        # rows per second and milliseconds per call are two views of the same timed calls
        assert ort.samples == pytest.approx([b * 1e3 / ms for ms in lat.samples])
        audio = figs[f"models/yamnet/b{b}/onnxruntime/audio-s"]
        assert (audio.unit, audio.stage, audio.items_per_call) == ("audio-s/s", "audio_model", pytest.approx(0.48 * b))
        assert audio.samples == pytest.approx([0.48 * x for x in ort.samples])
        assert ort.stage is None and all(f.stats.spread >= 0 and f.stats.n == 2 for f in (ort, lat, audio))
        if models.torch_available() and f"models/yamnet/b{b}/torch" in figs:
            ratio = figs[f"models/yamnet/b{b}/torch÷onnxruntime"]
            assert ratio.samples == pytest.approx([t / o for t, o in zip(figs[f"models/yamnet/b{b}/torch"].samples,
                                                                         ort.samples)])
            assert figs[f"models/yamnet/b{b}/torch"].stage is None  # plan reads the default backend only
    text = figs["models/profanity/b3/sklearn"]
    assert (text.unit, text.stage, text.items_per_call) == ("texts/s", "text", 3)
    assert not any("torch" in n for n in figs if n.startswith("models/profanity"))
    # plan finds the audio and text stages it used to report as missing
    plan = make_plan(res.figures, Traffic(audio_seconds_per_s=30, texts_per_s=50), p99_ms=1e9)
    assert {s.stage for s in plan.stages} == {"audio_model", "text"} and [m[0] for m in plan.missing] == ["audio_frontend", "text_model"]
    assert "models.png" in [p.name for p in suite_plots(res.figures, tmp_path, "test machine")]


@pytest.mark.models
def test_e2e_suite_session_against_its_stages(monkeypatch, model_repo, tmp_path):
    from bench.plots import suite_plots
    from bench.suites import e2e

    monkeypatch.setattr(e2e, "items_in_flight", lambda kind, cfg: 3)
    ticks = []
    res = e2e.run(TINY, ticks.append, repo_path=model_repo.path, kinds=("image", "text"))
    figs = by_name(res.figures)
    assert ticks == ["image", "text"]
    stages = {"image": ("decode", "preprocess", "model"), "text": ("embedding", "classifier")}
    for kind, unit in (("image", "images/s"), ("text", "texts/s")):
        paths = [figs[f"e2e/{kind}/{p}"] for p in ("session", *stages[kind])]
        assert all((f.unit, f.better, f.stats.n) == (unit, "higher", 2) and f.stats.median > 0 for f in paths)
        # per round: end to end over the slowest stage of that same round
        frac = figs[f"e2e/{kind}/session÷slowest"]
        assert frac.unit == "x" and frac.samples == pytest.approx(
            [s / min(st) for s, *st in zip(*(f.samples for f in paths))])
        assert frac.params["slowest_stage"] in stages[kind]
    kind_notes = [n for n in res.notes if not n.startswith("GPU rows skipped")]  # one, without a GPU
    assert len(kind_notes) == 2 and kind_notes[0].startswith("image: slowest stage ")
    assert "e2e_stages.png" in [p.name for p in suite_plots(res.figures, tmp_path, "test machine")]


def test_stability_windows_stop_when_two_agree_within_tolerance():
    from bench.stability import agree, until_stable

    def windows(rates):
        """A window source handing out ``rates`` in order, and the list of the calls it got."""
        it, calls = iter(rates), []

        def nxt():
            calls.append(1)
            return next(it)
        return nxt, calls

    nxt, calls = windows([100, 90, 94, 95, 50])
    w = until_stable(nxt, float, tolerance=0.05, max_windows=6)
    # 100 vs 90: 10 > 0.05 * 100; 90 vs 94: 4 <= 0.05 * 94 = 4.7 -> they agree, the fourth is never asked for
    assert (w.windows, w.stable, len(calls)) == ([100, 90, 94], True, 3)
    nxt, calls = windows([100, 104, 1])
    assert until_stable(nxt, float).windows == [100, 104]          # 4 <= 5.2
    assert agree(95, 100, 0.05) and not agree(94.9, 100, 0.05)      # at most 5% of the larger
    nxt, calls = windows([100, 80, 100, 80, 100, 80, 100])
    w = until_stable(nxt, float, tolerance=0.05, max_windows=5)
    assert (w.windows, w.stable, len(calls)) == ([100, 80, 100, 80, 100], False, 5)  # gives up at the max
    with pytest.raises(ValueError):
        until_stable(lambda: 1.0, float, max_windows=1)


def test_nearest_rank_percentiles_on_hand_computed_samples():
    from bench.stability import percentile

    ten = [7, 3, 10, 1, 9, 2, 8, 4, 6, 5]  # 1..10 shuffled
    assert [percentile(ten, q) for q in (50, 90, 95, 99, 100)] == [5, 9, 10, 10, 10]
    assert percentile(ten, 10) == 1 and percentile(ten, 11) == 2     # ceil(1.1) = 2nd smallest
    assert percentile([4.0], 99) == 4.0 and percentile([3, 1, 2], 50) == 2
    hundred = list(range(1, 101))
    assert [percentile(hundred, q) for q in (50, 90, 95, 99)] == [50, 90, 95, 99]
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 0)


@pytest.mark.models
def test_unbatched_repo_has_no_dynamic_batching_and_shares_the_weights(model_repo, tmp_path):
    from engine.repo import ModelRepository
    from engine.repo.config import load_config

    from bench.suites.load import unbatched_repo

    off = unbatched_repo(model_repo.path, tmp_path / "off")
    names = model_repo.models()
    assert ModelRepository(off).models() == names
    assert any(model_repo.config(n).HasField("dynamic_batching") for n in names)  # else nothing is switched off
    for name in names:
        on_cfg, off_cfg = model_repo.config(name), load_config(off / name / "config.pbtxt")
        assert not off_cfg.HasField("dynamic_batching")
        on_cfg.ClearField("dynamic_batching")
        assert off_cfg == on_cfg                                     # nothing else changed
        version = next(p for p in (off / name).iterdir() if p.is_dir())
        assert version.is_symlink() and version.resolve() == (model_repo.path / name / version.name).resolve()
    assert ModelRepository(off).model("yamnet").files                  # verified against the shared lock
    assert (off / "pipeline.toml").read_text() == (model_repo.path / "pipeline.toml").read_text()


def _load_figs(levels: dict[tuple[str, int], tuple[float, float]]):
    """Figures as the load suite names them: {(config, c): (items/s, p99 ms)}, two windows each."""
    from bench.results import Figure

    figs = {}
    for (config, c), (rate, p99) in levels.items():
        for what, v in (("items_per_s", rate), ("p99_ms", p99)):
            f = Figure(f"load/{config}/c{c}/{what}", "load", "x", "higher", [v, v])
            figs[f.name] = f
    return figs


def test_issue4_criterion_on_synthetic_figures():
    from bench.suites.load import criterion

    base = {("batching_on", 1): (50, 30.0), ("batching_off", 1): (50, 28.0),      # p99 1.07x: within 10%
            ("batching_on", 16): (60, 300), ("batching_off", 16): (55, 320),
            ("batching_on", 64): (62, 900), ("batching_off", 64): (60, 1000)}
    held, text = criterion(_load_figs(base), (1, 16, 64))
    assert held is True and "c16 items/s on/off 1.09x" in text and "c1 p99 on/off 1.07x" in text
    assert criterion(_load_figs({**base, ("batching_on", 64): (59, 900)}), (1, 16, 64))[0] is False
    assert criterion(_load_figs({**base, ("batching_on", 1): (50, 31.0)}), (1, 16, 64))[0] is False  # 1.107x
    assert criterion(_load_figs(base), (1, 4))[0] is None        # no level >= 16: nothing to decide


@pytest.mark.models
def test_load_suite_sweep_figures_both_configurations(model_repo, tmp_path):
    from bench.plots import suite_plots
    from bench.suites.load import Sweep, run

    ticks = []
    res = run(TINY, ticks.append, repo_path=model_repo.path,
              plan=Sweep(concurrency=(1, 16), warmup_s=0.2, window_s=0.5, max_windows=2))
    figs = by_name(res.figures)
    assert sorted(ticks) == sorted(f"{cfg} c{c}" for cfg in ("batching_on", "batching_off") for c in (1, 16))
    for cfg in ("batching_on", "batching_off"):
        for c in (1, 16):
            rate = figs[f"load/{cfg}/c{c}/items_per_s"]
            assert (rate.unit, rate.better, rate.stats.n) == ("items/s", "higher", 2) and rate.stats.median > 0
            assert rate.params["concurrency"] == c and rate.params["batching"] == (cfg == "batching_on")
            qs = [figs[f"load/{cfg}/c{c}/p{q}_ms"] for q in (50, 90, 95, 99)]
            assert all((f.unit, f.better) == ("ms", "lower") for f in qs)
            assert all(a <= b for a, b in zip([f.samples[0] for f in qs], [f.samples[0] for f in qs][1:]))
        assert figs["load/c16/on÷off"].samples == pytest.approx(
            [a / b for a, b in zip(figs["load/batching_on/c16/items_per_s"].samples,
                                   figs["load/batching_off/c16/items_per_s"].samples)])
    assert any(n.startswith("issue 4 criterion") and ("HELD" in n) for n in res.notes)
    assert "load.png" in [p.name for p in suite_plots(res.figures, tmp_path, "test machine")]


def test_decode_suite_hdr_rows(monkeypatch):
    monkeypatch.setattr(decode_suite, "clip_shape", lambda cfg: (1, 32, 48))
    out = SuiteResult()
    decode_suite.hdr_rows(TINY, out)
    figs = by_name(out.figures)
    modes = ("engine", "ffmpeg-cms", "ffmpeg-cms-warm", "matrix-only")
    assert set(figs) == {f"decode/hdr/{m}" for m in modes} | {f"decode/hdr/engine÷{m}" for m in modes[1:]}
    assert figs["decode/hdr/engine"].unit == "frames/s" and not any(f.stage for f in out.figures)
    # per round: the baseline's time over the engine's, i.e. the engine's rate over the baseline's
    assert figs["decode/hdr/engine÷ffmpeg-cms"].samples == pytest.approx(
        [e / b for e, b in zip(figs["decode/hdr/engine"].samples, figs["decode/hdr/ffmpeg-cms"].samples)])
