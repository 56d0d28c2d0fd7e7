"""The GPU rows of the bench suites, checked without a GPU: the bandwidth arithmetic, the skip
note when torch sees no CUDA device, the torch baselines against the engine's CPU ops, and the
suites' row builders fed the GPU paths' results structure (GPU stand-ins running on the CPU)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import gpu, gpu_kernels
from bench.suites import RunConfig, SuiteResult

TINY = RunConfig(quick=True, threads=2, repeats=2, min_time=0.0)


def by_name(figures):
    return {f.name: f for f in figures}


def no_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def skip_notes(notes):
    return [n for n in notes if n.startswith("GPU rows skipped")]


# ---------------------------------------------------------------------------------- arithmetic
def reference_span(spec, h, w):
    """Rows and columns of the source with a nonzero weight in the float64 reference's matrices."""
    sys.path.insert(0, str(Path(__file__).parent / "kernels"))
    from reference import axis_matrix, geometry

    to = spec.resize_to if spec.resize_to is not None else spec.size
    (rh, oy), (rw, ox) = geometry(spec.resize, h, w, spec.size[0], spec.size[1], to)
    spans = []
    for size, resized, out, off in ((h, rh, spec.size[0], oy), (w, rw, spec.size[1], ox)):
        m, _ = axis_matrix(spec.filter, size, resized, out, off)
        used = (m != 0).any(0).nonzero()[0]
        spans.append(int(used[-1] - used[0] + 1))
    return tuple(spans)


@pytest.mark.parametrize("h,w", [(480, 854), (720, 1280), (1080, 1920), (2160, 3840), (1920, 1080), (96, 128)])
@pytest.mark.parametrize("resize,filt,to", [("shorter", "antialias", (256, 256)), ("shorter", "bilinear", (256, 256)),
                                            ("stretch", "antialias", None), ("stretch", "bilinear", None)])
def test_footprint_is_the_reference_tap_span(h, w, resize, filt, to):
    from engine.ops import PreprocessSpec

    spec = PreprocessSpec(size=(224, 224), resize=resize, resize_to=to, filter=filt)
    (rh, oy), (rw, ox) = gpu.resized_geometry(spec, h, w)
    span = (gpu.source_span(filt, h, rh, 224, oy), gpu.source_span(filt, w, rw, 224, ox))
    assert span == reference_span(spec, h, w)
    assert gpu.footprint_bytes(spec, h, w, 3) == int(3 * span[0] * span[1] * 1.5)


def test_traffic_and_bandwidth_by_hand():
    from bench.preprocess import preprocess_spec

    spec = preprocess_spec()  # 1080p -> shorter 256 (256 x 455) -> crop 224: 950 x 950 source pixels
    assert gpu.resized_geometry(spec, 1080, 1920) == ((256, 16), (455, 116))
    read, written = 8 * 950 * 950 * 3 // 2, 8 * 3 * 224 * 224 * 4
    assert gpu.preprocess_traffic(spec, 1080, 1920, 8) == read + written == 10_830_000 + 4_816_896
    half = dataclasses.replace(spec, dtype="float16")
    assert gpu.preprocess_traffic(half, 1080, 1920, 8) == read + written // 2
    letterbox = dataclasses.replace(spec, resize="letterbox")  # reads every pixel
    assert gpu.footprint_bytes(letterbox, 1080, 1920, 2) == 2 * 1080 * 1920 * 3 // 2
    assert gpu.copy_bytes(1001) == 1000 and gpu.copy_bytes(1000) == 1000
    assert gpu.bandwidth([1e-3, 2e-3], 4e6) == pytest.approx([4.0, 2.0])  # 4 MB in 1 ms = 4 GB/s
    assert gpu.offset(256, 224) == 16 and gpu.offset(455, 224) == 116 and gpu.offset(200, 224) == -12


def test_bandwidth_figures_from_the_gpu_results_structure():
    seconds = {"cuda": [2e-3, 1e-3], "triton": [4e-3, 4e-3], "torch": [8e-3, 5e-3], "copy": [1e-3, 1e-3]}
    figs = by_name(gpu_kernels.bandwidth_figures("kernels/gpu/preprocess/1080p/b8", seconds, traffic=8_000_000,
                                                 copied=8_000_000, items=8, unit="frames/s",
                                                 params={"batch": 8}))
    base = "kernels/gpu/preprocess/1080p/b8"
    assert set(figs) == {f"{base}/copy/bandwidth"} | {
        f"{base}/{p}{s}" for p in ("cuda", "triton", "torch") for s in ("", "/bandwidth", "÷copy")} | {
        f"{base}/cuda÷torch", f"{base}/triton÷torch"}
    assert figs[f"{base}/cuda"].samples == pytest.approx([4000, 8000]) and figs[f"{base}/cuda"].unit == "frames/s"
    assert figs[f"{base}/copy/bandwidth"].samples == pytest.approx([8.0, 8.0])
    assert figs[f"{base}/cuda/bandwidth"].samples == pytest.approx([4.0, 8.0])
    # per round: the op's GB/s over the copy's in that round
    assert figs[f"{base}/cuda÷copy"].samples == pytest.approx([0.5, 1.0])
    assert figs[f"{base}/triton÷copy"].samples == pytest.approx([0.25, 0.25])
    assert figs[f"{base}/cuda÷torch"].samples == pytest.approx([4.0, 5.0])
    assert all((f.better, f.stage) == ("higher", None) for f in figs.values())
    assert {f.unit for n, f in figs.items() if "÷" in n} == {"x"}  # same-run ratios: what compare gates on
    assert figs[f"{base}/cuda"].params == {"batch": 8, "traffic_bytes": 8_000_000, "path": "cuda"}
    # no torch path (window max): no speed-up rows, the fraction of copy still
    only = by_name(gpu_kernels.bandwidth_figures("k", {"cuda": [1.0], "copy": [0.5]}, traffic=10, copied=10,
                                                 items=1, unit="segments/s", params={}))
    assert set(only) == {"k/copy/bandwidth", "k/cuda", "k/cuda/bandwidth", "k/cuda÷copy"}
    assert only["k/cuda÷copy"].samples == pytest.approx([0.5])
    # with the DRAM copy of the same rounds: its bandwidth, and each path's fraction of it
    dram = by_name(gpu_kernels.bandwidth_figures("k", {"cuda": [1.0, 2.0], "copy": [0.5, 0.5], "dram_copy": [0.25, 0.5]},
                                                 traffic=10, copied=10, dram_copied=100, items=1, unit="rows/s",
                                                 params={}))
    assert set(dram) == {"k/copy/bandwidth", "k/dram_copy/bandwidth", "k/cuda", "k/cuda/bandwidth", "k/cuda÷copy",
                         "k/cuda÷dram_copy"}
    assert dram["k/dram_copy/bandwidth"].samples == pytest.approx([400e-9, 200e-9])  # 100 B in 0.25 s, GB/s
    assert dram["k/cuda÷dram_copy"].samples == pytest.approx([0.025, 0.025])
    assert dram["k/dram_copy/bandwidth"].params == {"path": "dram_copy", "traffic_bytes": 100}
    # bench plan's GPU preprocess stage: the default implementation's rate only (cuda, else triton)
    tagged = gpu_kernels.bandwidth_figures("p", seconds, traffic=8, copied=8, items=8, unit="frames/s",
                                           params={}, stage="preprocess")
    assert [(f.name, f.stage, f.items_per_call) for f in tagged if f.stage] == [("p/cuda", "preprocess", 8)]
    triton_only = gpu_kernels.bandwidth_figures("p", {"triton": [1.0], "copy": [1.0]}, traffic=8, copied=8,
                                                items=4, unit="frames/s", params={}, stage="preprocess")
    assert [f.name for f in triton_only if f.stage] == ["p/triton"]


def test_measure_events_starts_each_round_one_path_later(monkeypatch):
    torch = pytest.importorskip("torch")

    class Event:
        def __init__(self, **kw):
            pass

        def record(self):
            pass

        def elapsed_time(self, end):
            return 1.0  # ms

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    ran = []
    paths = {k: (lambda k=k: ran.append(k)) for k in "abc"}
    seconds = gpu.measure_events(paths, repeats=4, calls=1, warmup=0)
    assert "".join(ran) == "abc" "bca" "cab" "abc"
    assert seconds == {k: [1e-3] * 4 for k in "abc"}


def test_the_dram_copy_is_made_once_per_device_and_size(monkeypatch):
    pytest.importorskip("torch")
    assert gpu.DRAM_COPY_BYTES >= 10 * 50e6 * 2  # each way ten times an H100's 50 MB of L2
    monkeypatch.setattr(gpu, "DEVICE", "cpu")
    monkeypatch.setattr(gpu, "DRAM_COPY_BYTES", 4096)
    gpu._dram_copy.cache_clear()
    fn, moved = gpu.dram_copy_path()
    assert moved == 4096 and gpu.dram_copy_path()[0] is fn
    monkeypatch.setattr(gpu, "DRAM_COPY_BYTES", 8192)
    assert gpu.dram_copy_path()[1] == 8192
    gpu._dram_copy.cache_clear()  # no host buffers kept for later tests


# ---------------------------------------------------------------------------------- no GPU
def test_no_cuda_device_gives_one_skip_note_and_no_figures(monkeypatch):
    no_cuda(monkeypatch)
    reason = gpu.unavailable()
    assert reason == "no CUDA device (torch.cuda.is_available() is False)"
    out = SuiteResult()
    gpu_kernels.part(TINY, pytest.fail, out, {"1080p": (1080, 1920)})  # never ticks
    assert out.figures == [] and out.notes == [gpu.skip_note(
        "torch CUDA ops and the engine's CUDA/Triton kernels", reason)]
    assert gpu_kernels.steps(TINY, {"1080p": (1080, 1920)}) == 0


def test_kernels_suite_without_cpu_baseline_libraries_still_reaches_its_gpu_rows(monkeypatch):
    # a bare GPU image has torch but not OpenCV / PyAV: the CPU parts leave a note, the GPU part runs
    from bench.suites import kernels

    for name in ("cv2", "av", "threadpoolctl"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    reached = []
    monkeypatch.setattr(kernels.gpu_kernels, "part", lambda cfg, tick, out, res: reached.append(res))
    monkeypatch.setattr(kernels, "pooling_part", lambda cfg, tick, out: None)
    monkeypatch.setattr(kernels, "audio_part", lambda cfg, tick, out: None)
    out = kernels.run(TINY, lambda *a: None)
    assert reached and "preprocess_part skipped: av is not installed" in out.notes
    assert out.figures == []


def test_no_torch_is_a_reason_too(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert gpu.unavailable() == "torch is not installed"


def test_gpu_bench_cli_refuses_without_a_gpu(monkeypatch, capsys):
    import importlib.util

    no_cuda(monkeypatch)
    # loaded from its file as `python bench/gpu_bench.py` runs it (bench/ on sys.path would shadow
    # top-level names for the other tests)
    where = importlib.util.spec_from_file_location("gpu_bench", Path(__file__).parents[1] / "bench" / "gpu_bench.py")
    gpu_bench = importlib.util.module_from_spec(where)
    where.loader.exec_module(gpu_bench)
    assert gpu_bench.main(["--quick"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- torch baselines
def test_torch_baselines_compute_what_the_engine_ops_do(monkeypatch):
    torch = pytest.importorskip("torch")
    from bench.preprocess import preprocess_spec
    from engine.ops import masked_mean, preprocess, segment_pool
    from engine.media.frame import Frame

    rng = np.random.default_rng(0)
    spec = preprocess_spec()
    h, w = 96, 128
    y = rng.integers(16, 236, (2, h, w), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (2, h // 2, w // 2), dtype=np.uint8) for _ in range(2))
    frames = [Frame(format="i420", planes=(y[i], u[i], v[i]), width=w, height=h, matrix="bt601",
                    full_range=False, pts=0.0) for i in range(2)]
    fused = preprocess(frames, spec)
    norm = gpu_kernels.torch_norm(spec, "cpu")
    made, real_tensor = [], torch.tensor
    with monkeypatch.context() as m:
        m.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real_tensor(*a, **k))
        mine = gpu_kernels.torch_preprocess(*(torch.from_numpy(p) for p in (y, u, v)), spec, norm).numpy()
    assert made == []  # no upload inside the timed call: it would wait for the stream
    assert mine.shape == fused.shape
    # in 0..255 levels: the same pixels up to float32 rounding and the kernels' fixed-point taps
    levels = np.abs(mine - fused) * np.array(spec.std)[None, :, None, None] / spec.scale
    assert levels.max() < 1.0
    x = rng.standard_normal((4, 9, 16), dtype=np.float32)
    m = (rng.random((4, 9)) < 0.7).astype(np.float32)
    for norm in (False, True):
        got = gpu_kernels.torch_masked_mean(torch.from_numpy(x), torch.from_numpy(m), norm).numpy()
        np.testing.assert_allclose(got, masked_mean(x, m, norm), atol=1e-5)
    rows = rng.standard_normal((12, 5), dtype=np.float32)
    offs = np.array([0, 3, 7, 12])
    ids = torch.repeat_interleave(torch.arange(3), torch.from_numpy(np.diff(offs)))
    counts = torch.from_numpy(np.diff(offs)).float()
    for mode in ("mean", "max"):
        got = gpu_kernels.torch_segment(torch.from_numpy(rows), ids, counts, 3, mode).numpy()
        np.testing.assert_allclose(got, segment_pool(rows, offs, mode), atol=1e-5)


# ---------------------------------------------------------------------------------- suites, GPU stand-ins
def cpu_stand_in(monkeypatch):
    """Make bench.gpu believe in a device that is the CPU: GPU code paths that are plain torch run
    for real, timing by wall clock instead of CUDA events."""
    from bench.timing import measure

    monkeypatch.setattr(gpu, "unavailable", lambda: None)
    monkeypatch.setattr(gpu, "DEVICE", "cpu")
    monkeypatch.setattr(gpu, "DRAM_COPY_BYTES", 1 << 16)  # a GiB of host memory would be a waste
    gpu._dram_copy.cache_clear()
    monkeypatch.setattr(gpu, "measure_events", lambda paths, repeats, calls: measure(paths, repeats=repeats,
                                                                                      min_time=0.0))
    monkeypatch.setattr(gpu, "synchronized", lambda fn: fn)


def test_kernels_gpu_part_with_a_cpu_stand_in(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from bench.plots import suite_plots
    from bench.preprocess import preprocess_spec

    cpu_stand_in(monkeypatch)
    seen = []

    def fake_preprocess(planes, spec, *, format, width, height, out):
        seen.append((format, width, height, tuple(out.shape)))
        return out.zero_()

    fake = SimpleNamespace(preprocess=fake_preprocess,
                           masked_mean=lambda x, m, norm, out: out.zero_(),
                           segment_pool=lambda x, offs, mode, win, out: out.zero_(),
                           log_mel_project=lambda s, fb, out: out.zero_())
    monkeypatch.setattr(gpu, "kernel_modules", lambda: ({"cuda": fake, "triton": fake}, ["a note"]))
    monkeypatch.setattr(gpu_kernels, "batches", lambda cfg: [2])
    ticks, out = [], SuiteResult()
    gpu_kernels.part(TINY, ticks.append, out, {"tiny": (96, 128)})
    figs = by_name(out.figures)
    assert ticks == ["GPU preprocess tiny batch 2", "GPU pooling and log-mel"] and out.notes == ["a note"]
    assert ("i420", 128, 96, (2, 3, 224, 224)) in seen
    base = "kernels/gpu/preprocess/tiny/b2"
    wanted = ("cuda", "triton", "torch", "cuda÷copy", "cuda÷dram_copy", "cuda÷torch", "copy/bandwidth",
              "dram_copy/bandwidth")
    assert {f"{base}/{p}" for p in wanted} <= set(figs)
    assert figs[f"{base}/cuda"].params["traffic_bytes"] == gpu.preprocess_traffic(preprocess_spec(), 96, 128, 2)
    for op in ("masked_mean", "masked_mean_norm", "segment_mean", "segment_max"):
        assert f"kernels/gpu/pooling/{op}/cuda÷torch" in figs
    assert "kernels/gpu/pooling/segment_window_max8/cuda÷copy" in figs
    assert "kernels/gpu/pooling/segment_window_max8/cuda÷torch" not in figs
    assert {"kernels/gpu/log_mel_project/triton÷copy", "kernels/gpu/log_mel_project/triton÷torch"} <= set(figs)
    assert "kernels/gpu/log_mel_project/cuda" not in figs  # Triton only
    assert all(f.stats.n == 2 and f.stats.median > 0 for f in out.figures)
    written = {p.name for p in suite_plots(out.figures, tmp_path, "test machine")}
    assert {"kernels_gpu_preprocess.png", "kernels_gpu_bandwidth.png"} <= written


@pytest.mark.models
def test_models_suite_gpu_rows_and_skip_note(monkeypatch, model_repo, tmp_path):
    from bench.plan import make_plan
    from bench.plots import suite_plots
    from bench.suites import models
    from bench.traffic import Traffic
    from engine.backends import load_backend

    monkeypatch.setattr(models, "MODELS", {"yamnet": models.ModelInfo("patches/s", "audio_model", [1, 2], []),
                                           "profanity": models.ModelInfo("texts/s", "text", [1], [])})
    monkeypatch.setattr(models, "torch_available", lambda: False)  # CPU torch rows are tested elsewhere
    no_cuda(monkeypatch)
    res = models.run(TINY, lambda label: None, repo_path=model_repo.path)
    assert len(skip_notes(res.notes)) == 1 and not any("cuda" in f.name for f in res.figures)

    cpu_stand_in(monkeypatch)  # the "torch-cuda" backend is ONNX Runtime on the CPU here
    monkeypatch.setattr(gpu, "model_backend", lambda entry, notes: {} if entry.config.backend == "sklearn" else
                        {"torch-cuda": load_backend(entry, threads=1, backend="onnxruntime")})
    monkeypatch.setattr(gpu, "device_feed", lambda feed: dict(feed))
    res = models.run(TINY, lambda label: None, repo_path=model_repo.path)
    figs = by_name(res.figures)
    assert skip_notes(res.notes) == []
    for b in (1, 2):
        base = f"models/yamnet/b{b}"
        for path in ("torch-cuda", "torch-cuda-device"):
            f, lat = figs[f"{base}/{path}"], figs[f"{base}/{path}/latency"]
            assert (f.unit, f.params["device"], f.stage, lat.unit) == ("patches/s", "cpu", None, "ms")
            assert f.params["precision"] == "fp32"  # the stand-in is ONNX Runtime: no fp16 attribute
            assert figs[f"{base}/{path}÷onnxruntime"].samples == pytest.approx(
                [g / o for g, o in zip(f.samples, figs[f"{base}/onnxruntime"].samples)])
        assert figs[f"{base}/onnxruntime"].params["device"] == "cpu"
    assert not any("cuda" in n for n in figs if n.startswith("models/profanity"))
    # bench plan reads the device pipeline's call for GPU machines: its audio-s figure carries the stage
    dev = figs["models/yamnet/b2/torch-cuda-device/audio-s"]
    assert (dev.stage, dev.items_per_call, dev.unit) == ("audio_model", 2 * 0.48, "audio-s/s")
    assert "models/yamnet/b2/torch-cuda/audio-s" not in figs
    # the plan finds its stages (the stand-in's "GPU" figures say device cpu: the CPU plan may read them)
    plan = make_plan(res.figures, Traffic(audio_seconds_per_s=30, texts_per_s=50), p99_ms=1e9)
    assert {s.stage for s in plan.stages} == {"audio_model", "text"}
    assert "models.png" in [p.name for p in suite_plots(res.figures, tmp_path, "test machine")]


@pytest.mark.models
def test_e2e_suite_gpu_session_rows_and_skip_note(monkeypatch, model_repo, tmp_path):
    from bench.plots import suite_plots
    from bench.suites import e2e
    from engine import Session

    monkeypatch.setattr(e2e, "items_in_flight", lambda kind, cfg: 2)
    no_cuda(monkeypatch)
    res = e2e.run(TINY, lambda label: None, repo_path=model_repo.path, kinds=("text",))
    assert len(skip_notes(res.notes)) == 1 and "cuda:0" in skip_notes(res.notes)[0]
    assert not any("gpu" in f.name for f in res.figures)

    opened = []

    def stand_in_sessions(repo_path, notes):  # a CPU Session under the GPU Session's name
        opened.append(Session(repo_path))
        notes.append("triton failed")
        return {"session-gpu-cuda": opened[-1]}

    monkeypatch.setattr(gpu, "unavailable", lambda: None)
    monkeypatch.setattr(gpu, "sessions", stand_in_sessions)
    res = e2e.run(TINY, lambda label: None, repo_path=model_repo.path, kinds=("image",))
    figs = by_name(res.figures)
    assert "triton failed" in res.notes and skip_notes(res.notes) == []
    g, cpu = figs["e2e/image/session-gpu-cuda"], figs["e2e/image/session"]
    assert (g.unit, g.params["in_flight"]) == ("images/s", 2)
    assert figs["e2e/image/session-gpu-cuda÷session"].samples == pytest.approx(
        [a / b for a, b in zip(g.samples, cpu.samples)])
    assert figs["e2e/image/session÷slowest"].params["slowest_stage"] in ("decode", "preprocess", "model")
    with pytest.raises(Exception):  # closed with the CPU Session when the suite ended
        opened[0].submit({"text": "x"}).result()
    assert "e2e_stages.png" in [p.name for p in suite_plots(res.figures, tmp_path, "test machine")]


def test_gpu_sessions_per_kernel_impl_and_nvdec_where_it_imports(monkeypatch):
    import engine
    import engine.device

    made = []

    class FakeSession:
        def __init__(self, repo, *, device, kernel_impl, video_decoder):
            if kernel_impl == "triton":
                raise RuntimeError("no triton here")
            made.append((device, kernel_impl, video_decoder))

        def warmup(self):
            pass

    monkeypatch.setattr(engine, "Session", FakeSession)
    monkeypatch.setattr(engine.device, "nvdec_import_error", lambda: None)
    notes = []
    found = gpu.sessions("repo", notes)
    assert set(found) == {"session-gpu-cuda", "session-gpu-cuda-nvdec"}
    assert made == [(gpu.DEVICE, "cuda", "cpu"), (gpu.DEVICE, "cuda", "nvdec")]
    assert len(notes) == 1 and "kernel_impl='triton'" in notes[0] and "no triton here" in notes[0]
    monkeypatch.setattr(engine.device, "nvdec_import_error", lambda: "not installed")
    notes.clear()
    assert set(gpu.sessions("repo", notes)) == {"session-gpu-cuda"}
    assert "no NVDEC Session row: PyNvVideoCodec not installed" in notes


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal without a GPU")
@pytest.mark.parametrize("script", ["length_buckets_ab", "preprocess_ab", "nvdec_ab"])
def test_gpu_ab_scripts_refuse_without_a_gpu(capsys, script):
    import importlib

    assert importlib.import_module(f"bench.{script}").main() == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err



def test_nvdec_ab_with_the_fake_decoder(monkeypatch, tmp_path, capsys):
    """bench/nvdec_ab.py end to end on the CPU: the fake PyNvVideoCodec of the NVDEC tests, a
    small clip; the three paths agree, and the table names the strategies each took."""
    import engine.device
    from bench import nvdec_ab
    from fake_pynvvideocodec import fake_nvc

    monkeypatch.setenv("ENGINE_MEDIA_CACHE", str(tmp_path))
    monkeypatch.setattr(gpu, "unavailable", lambda: None)
    monkeypatch.setattr(engine.device, "load_nvdec", lambda: fake_nvc())
    monkeypatch.setattr(__import__("torch").cuda, "get_device_name", lambda *a: "fake GPU")
    monkeypatch.setattr(nvdec_ab, "CLIPS", ((2, 96, 128),))
    monkeypatch.setattr(nvdec_ab, "ROUNDS", 1)
    monkeypatch.setattr(nvdec_ab, "CALLS", 1)
    assert nvdec_ab.main() == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| 128x96 2 s, 2 frames |") and "| keyframes/keyframes/seek |" in row
    assert row.endswith(f"videos/s with {nvdec_ab.THREADS} in flight |")
