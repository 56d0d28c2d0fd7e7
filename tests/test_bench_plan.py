"""bench plan: the planner's arithmetic on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.plan import machines_needed, main, make_plan, pk_wait
from bench.results import Figure
from bench.traffic import Traffic, from_mapping, load_traffic

BENCH = Path(__file__).resolve().parents[1] / "bench"


def stage_fig(stage, per_machine, items_per_call, unit, **params):
    # constant samples: median = p10 = p90 = per_machine
    return Figure(f"t/{stage}/{items_per_call}/{params}", "t", unit, "higher", [per_machine] * 3, params,
                  stage=stage, items_per_call=items_per_call)


PRE_900 = stage_fig("preprocess", 900.0, 8, "frames/s", resolution="1080p")
DEC_400 = stage_fig("decode", 400.0, 10, "video-s/s", codec="h264", sampling="fps=1", resolution="1080p")
VIDEOS = Traffic(videos_per_s=120, video_duration_s=((30.0, 1.0),), video_sampling="fps=1")


def test_issue_example_5_machines():
    # 120 videos/s x 30 s x 1 fps = 3600 frames/s; 900 frames/s per machine at 80% -> 3600 / 720 = 5
    plan = make_plan([PRE_900], VIDEOS, p99_ms=1e9)
    (pre,) = plan.stages
    assert pre.load == pytest.approx(3600) and pre.machines == 5 and pre.utilisation == pytest.approx(0.8)
    assert machines_needed(3600, 900, 0.0, 0.8) == (5, pytest.approx(5.0))


def test_headroom_rounds_up():
    plan = make_plan([PRE_900], Traffic(**{**VIDEOS.__dict__, "headroom": 0.25}), p99_ms=1e9)
    (pre,) = plan.stages
    assert pre.required == pytest.approx(6.25) and pre.machines == 7            # 4500 / 720
    assert pre.utilisation == pytest.approx(3600 / (7 * 900))                     # at the peak itself


def test_stages_share_the_machines_and_missing_stages():
    plan = make_plan([PRE_900, DEC_400], VIDEOS, p99_ms=1e9)
    by = {s.stage: s for s in plan.stages}
    # decode: 120 x 30 = 3600 video-s/s / (400 x 0.8) = 11.25 machine-loads (12 alone); preprocess
    # 5.0: both on the CPUs of the same machines, 16.25 -> 17
    assert by["decode"].machines == 12 and by["decode"].required == pytest.approx(11.25)
    assert plan.machine_loads() == {"host": pytest.approx(16.25)} and plan.total_machines == 17
    assert by["decode"].utilisation == pytest.approx(3600 / (17 * 400))       # its share at the peak
    assert by["preprocess"].utilisation == pytest.approx(3600 / (17 * 900))
    assert plan.utilisation() == {"host": pytest.approx(3600 / (17 * 400) + 3600 / (17 * 900))}
    assert plan.bottleneck.stage == "decode"
    assert [m[0] for m in plan.missing] == ["image_model"]
    assert "the models suite measures it" in plan.missing[0][1]
    assert plan.path_latency("video") == (None, ["image_model"])


def test_decode_figure_must_match_codec_and_sampling():
    hevc = stage_fig("decode", 400.0, 10, "video-s/s", codec="hevc", sampling="fps=1", resolution="1080p")
    h264_480p = stage_fig("decode", 400.0, 10, "video-s/s", codec="h264", sampling="fps=1", resolution="480p")
    plan = make_plan([PRE_900, hevc, h264_480p], VIDEOS, p99_ms=1e9)
    missing = dict(plan.missing)
    assert "decode" in missing and "hevc fps=1 1080p" in missing["decode"] and "h264 fps=1 480p" in missing["decode"]


def test_uniform_sampling_counts_frames_and_videos():
    t = Traffic(videos_per_s=50, video_duration_s=((10.0, 0.5), (60.0, 0.5)), video_sampling="uniform=8",
                images_per_s=100)
    dec = stage_fig("decode", 4.0, 1, "videos/s", codec="h264", sampling="uniform=8", resolution="1080p")
    plan = make_plan([PRE_900, dec], t, p99_ms=1e9)
    by = {s.stage: s for s in plan.stages}
    assert by["preprocess"].load == pytest.approx(50 * 8 + 100)                 # 500 frames/s
    assert by["decode"].load == pytest.approx(50) and by["decode"].machines == 16  # 50 / (4 x 0.8) = 15.6


def test_latency_mdl_queueing_by_hand():
    # preprocess at batch 8, 900 frames/s: a call takes 8/900 s; at 80% utilisation the M/D/1 wait is
    # 0.8 / (2 x 0.2) = 2 calls. A 30 s video at 1 fps is ceil(30 / 8) = 4 calls of service.
    assert pk_wait([(0.8, 1.0)]) == pytest.approx(2.0) and pk_wait([(1.0, 1.0)]) == float("inf")
    # two classes on one resource: 0.2 calls/s of 2 s and 10 of 0.01 s: rho 0.5, wait (0.8 + 0.001) / 1
    assert pk_wait([(0.2, 2.0), (10.0, 0.01)]) == pytest.approx(0.801)
    t = Traffic(**{**VIDEOS.__dict__, "images_per_s": 0.0})
    (pre,) = make_plan([PRE_900], t, p99_ms=1e9).stages
    call = 8 / 900 * 1e3
    assert pre.call_ms == pytest.approx(call)
    assert pre.latency_ms["video"] == pytest.approx(4 * call + 2 * call)
    t_img = Traffic(images_per_s=3600)
    (pre,) = make_plan([PRE_900], t_img, p99_ms=1e9).stages
    assert pre.latency_ms == {"image": pytest.approx(call + 2 * call)}


def test_batch_choice_under_the_latency_budget():
    small = stage_fig("preprocess", 500.0, 1, "frames/s", resolution="1080p")
    big = stage_fig("preprocess", 1000.0, 32, "frames/s", resolution="1080p")
    t = Traffic(images_per_s=400)
    # batch 32: 32 ms call; 400 / 800 -> 1 machine at 40%: wait 0.4/1.2 x 32 = 10.7 ms -> 42.7 ms
    # batch 1: 2 ms call; 400 / 400 -> 1 machine at 80%: 2 + 4 = 6 ms
    assert make_plan([small, big], t, p99_ms=100).stages[0].items_per_call == 32
    chosen = make_plan([small, big], t, p99_ms=20).stages[0]
    assert chosen.items_per_call == 1 and chosen.fits
    over = make_plan([small, big], t, p99_ms=1).stages[0]
    assert over.items_per_call == 1 and not over.fits  # the fastest point, flagged


def test_the_batch_is_chosen_under_the_shared_load():
    # alone, preprocessing takes batch 64 (1,000 frames/s: 146 ms for a video, within 150); on
    # machines shared with decode (20 video-s per call, 50 ms each), every call also waits behind
    # decode's, and only batch 8 (4 calls of 8.9 ms) still fits
    b64 = stage_fig("preprocess", 1000.0, 64, "frames/s", resolution="1080p")
    dec = stage_fig("decode", 400.0, 20, "video-s/s", codec="h264", sampling="fps=1", resolution="1080p")
    alone = make_plan([b64, PRE_900], VIDEOS, p99_ms=150)
    assert [(s.items_per_call, s.fits) for s in alone.stages] == [(64, True)]
    only_64 = {s.stage: s for s in make_plan([b64, dec], VIDEOS, p99_ms=150).stages}
    assert not only_64["preprocess"].fits
    shared = {s.stage: s for s in make_plan([b64, PRE_900, dec], VIDEOS, p99_ms=150).stages}
    assert shared["preprocess"].items_per_call == 8 and shared["preprocess"].fits and shared["decode"].fits


def test_traffic_file_parsing():
    t = load_traffic(BENCH / "traffic.sample.yaml")
    assert t.mean_duration == pytest.approx(0.5 * 10 + 0.3 * 30 + 0.2 * 90)
    assert t.mean_frames_per_video == pytest.approx(32) and t.p99_duration == 90
    assert t.scaled(2).videos_per_s == 2 * t.videos_per_s and t.scaled(2).headroom == t.headroom
    with pytest.raises(ValueError, match="unknown"):
        from_mapping({"peak": {"video_per_s": 1}})
    with pytest.raises(ValueError, match="sum"):
        from_mapping({"peak": {"video_duration_s": [{"seconds": 1, "share": 0.5}]}})
    with pytest.raises(ValueError, match="sampling"):
        Traffic(video_sampling="every=2")


def test_plan_cli_on_the_sample_profile(tmp_path, capsys):
    png = tmp_path / "plan.png"
    assert main(["--profile", str(BENCH / "profile.sample.json"), "--traffic", str(BENCH / "traffic.sample.yaml"),
                 "--p99-ms", "5000", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "bottleneck" in out and "MISSING" not in out  # the sample profile has every stage now
    assert all(f"latency, {p} path: " in out and "unknown" not in out for p in ("video", "image", "audio", "text"))
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------- GPU machines
GPU_PRE = stage_fig("preprocess", 100_000.0, 32, "frames/s", resolution="1080p", device="cuda:0")
GPU_IMG = stage_fig("image_model", 16_000.0, 32, "frames/s", device="cuda:0")
CPU_IMG = stage_fig("image_model", 400.0, 8, "frames/s", device="cpu")
IMAGES = Traffic(images_per_s=20_000, resolution="1080p")


def test_gpu_machines_read_the_gpu_figures_of_the_gpu_stages():
    figs = [PRE_900, GPU_PRE, GPU_IMG, CPU_IMG]
    gpu = make_plan(figs, IMAGES, p99_ms=1e9, device="gpu")
    by = {s.stage: s for s in gpu.stages}
    # no headroom, 80% target: 20,000 / (16,000 x 0.8) = 1.56 -> 2 GPUs; preprocessing 20,000 / 80,000 -> 1
    assert (by["image_model"].figure, by["image_model"].machines) == (GPU_IMG.name, 2)
    assert (by["preprocess"].figure, by["preprocess"].machines) == (GPU_PRE.name, 1)
    cpu = make_plan(figs, IMAGES, p99_ms=1e9, device="cpu")
    by = {s.stage: s for s in cpu.stages}
    # 20,000 / (400 x 0.8) = 62.5 -> 63 nodes; 20,000 / 720 = 27.8 -> 28
    assert (by["image_model"].figure, by["image_model"].machines) == (CPU_IMG.name, 63)
    assert (by["preprocess"].figure, by["preprocess"].machines) == (PRE_900.name, 28)


def test_gpu_machines_run_host_and_gpu_stages_side_by_side():
    # decode on the host CPUs, preprocessing and the model on the GPU of the same machines: the
    # busier resource sets the count, and each stage queues behind its own resource's load
    t = Traffic(videos_per_s=10, video_duration_s=((30.0, 1.0),), video_sampling="fps=1", resolution="1080p")
    plan = make_plan([DEC_400, GPU_PRE, GPU_IMG], t, p99_ms=1e9, device="gpu")
    by = {s.stage: s for s in plan.stages}
    host, gpu = 300 / (400 * 0.8), 300 / (100_000 * 0.8) + 300 / (16_000 * 0.8)  # 0.9375, 0.0272
    assert plan.machine_loads() == {"host": pytest.approx(host), "gpu": pytest.approx(gpu)}
    assert plan.total_machines == 1 and [s.machines for s in plan.stages] == [1, 1, 1]
    rho = plan.utilisation()
    assert rho == {"host": pytest.approx(300 / 400), "gpu": pytest.approx(300 / 100_000 + 300 / 16_000)}
    img = by["image_model"]
    call = 32 / 16_000
    # a 30 s video at 1 fps: ceil(30 / 32) = 1 call of service, then the wait behind both GPU stages'
    # calls (300 frames/s each, in calls of 32)
    gpu_wait = pk_wait([(300 / 32, 32 / 100_000), (300 / 32, call)])
    assert img.latency_ms["video"] == pytest.approx(1e3 * (call + gpu_wait))
    assert by["preprocess"].latency_ms["video"] == pytest.approx(1e3 * (32 / 100_000 + gpu_wait))
    # twice the traffic: the host needs 2 machines, the GPUs keep their headroom
    double = make_plan([DEC_400, GPU_PRE, GPU_IMG], t.scaled(2.0), p99_ms=1e9, device="gpu")
    assert double.total_machines == 2 and double.utilisation()["host"] == pytest.approx(600 / 800)


def test_gpu_plan_takes_decode_from_the_host_and_names_missing_gpu_stages():
    t = Traffic(videos_per_s=10, video_duration_s=((30.0, 1.0),), video_sampling="fps=1", resolution="1080p")
    plan = make_plan([DEC_400, PRE_900, CPU_IMG], t, p99_ms=1e9, device="gpu")
    assert [s.stage for s in plan.stages] == ["decode"]  # host CPUs: the CPU decode figure
    missing = dict(plan.missing)
    assert set(missing) == {"preprocess", "image_model"}
    assert "no GPU figure" in missing["image_model"] and "gpu_bench" in missing["image_model"]


def test_device_auto_and_the_cli_merging_profiles(tmp_path, capsys):
    import json

    from bench.plan import resolve_device
    from bench.results import SCHEMA

    assert resolve_device([PRE_900, CPU_IMG], "auto") == "cpu"
    assert resolve_device([PRE_900, GPU_IMG], "auto") == "gpu"
    assert resolve_device([PRE_900, GPU_IMG], "cpu") == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device([], "tpu")
    machine = {"cpu_model": "x", "cores": 16, "memory_gib": 128, "gpus": [{"name": "H100"}]}

    def write(name, figs, **m):
        doc = {"schema": SCHEMA, "created": "now", "argv": [], "quick": True, "seconds": 1, "label": None,
               "machine": {**machine, **m}, "suites": {}, "figures": [f.to_json() for f in figs]}
        (tmp_path / name).write_text(json.dumps(doc))
        return str(tmp_path / name)

    kernels, models = write("k.json", [GPU_PRE]), write("m.json", [GPU_IMG])
    traffic = tmp_path / "t.yaml"
    traffic.write_text("peak: {images_per_s: 20000, resolution: 1080p}\n")
    args = ["--traffic", str(traffic), "--p99-ms", "1000"]
    assert main(["--profile", kernels, "--profile", models, *args]) == 0
    out = capsys.readouterr().out
    # preprocessing 20,000 / (100,000 x 0.8) = 0.25 and image_model 1.5625 GPU-loads: 2 machines
    assert "planning for: GPU machines" in out and "MISSING" not in out and "total machines: 2" in out
    other = write("o.json", [GPU_IMG], cpu_model="y")
    with pytest.raises(SystemExit):
        main(["--profile", kernels, "--profile", other, *args])
    assert "different machine types" in capsys.readouterr().err
