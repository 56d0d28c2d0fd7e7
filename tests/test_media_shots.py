"""Note [shot starts]: fps/uniform sampling also takes the keyframes that start a shot."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import av
import numpy as np
import pytest

from engine.media import Sampling, decode_video, decord_available
from engine.media.video import StreamIndex, plan_samples, shot_starts

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FPS = 30


def index(n_frames: int, key_frames: list[int]) -> StreamIndex:
    times = [i / FPS for i in range(n_frames)]
    keys = [times[k] for k in key_frames]
    gaps = [b - a for a, b in zip(keys, keys[1:])] or [n_frames / FPS]
    return StreamIndex(times=times, keys=keys, errors=0, frame_dur=1 / FPS, duration=n_frames / FPS,
                       short=False, key_gap=max(gaps), decode_times=times, end=n_frames / FPS)


@pytest.mark.parametrize("keys, want", [
    ([0, 60, 120, 180, 240], []),             # regular GOPs of 2 s
    ([0, 45, 90, 135, 180, 225, 270], []),    # GOPs of 1.5 s, the last cut short by the end
    ([0, 60, 120, 180, 240, 290], [290]),     # 50 frames after the last: sooner than the GOP
    ([0, 30, 61, 91, 122, 152, 183, 213, 244, 274], []),  # GOPs of 30 or 31 frames: jitter
    ([0, 69], [69]),                          # x264 scene cut at 2.3 s; 231 frames run to the end
    ([0, 69, 81, 250], [69, 81]),             # a 0.4 s shot spliced in, then the keyframe interval
    ([0, 250], []),                           # one periodic keyframe, a 50-frame tail
    (list(range(300)), []),                   # every frame a keyframe (MJPEG, APNG): no cadence
    ([0], []),
])
def test_shot_starts_are_keyframes_sooner_than_the_interval(keys, want):
    idx = index(300, keys)
    assert shot_starts(idx.times, idx.keys) == [k / FPS for k in want]


def test_plan_adds_shots_within_max_frames():
    idx = index(300, [0, 69, 81, 250])
    plain = plan_samples(Sampling("fps", 1.0, shots=False), idx)
    plan = plan_samples(Sampling("fps", 1.0), idx)
    assert plain.frames == [k / FPS for k in range(0, 300, 30)] and plain.shots == []
    assert plan.shots == [69 / FPS, 81 / FPS]
    assert plan.frames == sorted(plain.frames + plan.shots) and plan.targets == plain.targets
    assert plan_samples(Sampling("fps", 1.0, max_frames=11), idx).shots == [81 / FPS]  # spread
    assert plan_samples(Sampling("fps", 1.0, max_frames=10), idx).shots == []  # no room
    assert plan_samples(Sampling("keyframes"), idx).shots == []  # every keyframe anyway
    on_target = index(300, [0, 60, 90])  # shots at 2 s and 3 s: the frames the targets take
    assert shot_starts(on_target.times, on_target.keys) == [2.0, 3.0] and plan_samples(Sampling("fps", 1.0), on_target).shots == []


@functools.lru_cache(maxsize=None)
def spliced(preset: str = "medium", scenecut: bool = True) -> bytes:
    """10 s of a moving gradient with a 0.4 s shot of a photograph spliced in at 2.3 s, encoded as
    an editor would (x264 with its scene-cut detection, or without: ``scenecut=False``)."""
    from PIL import Image

    w, h = 160, 120
    photo = np.asarray(Image.open(SAMPLES / "image.jpg").convert("RGB").resize((w, h)))
    y, x = np.mgrid[0:h, 0:w]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as oc:
        st = oc.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": preset, **({} if scenecut else {"x264-params": "scenecut=0"})}
        for i in range(10 * FPS):
            img = photo if 69 <= i < 81 else \
                np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], -1).astype(np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                oc.mux(p)
        for p in st.encode():
            oc.mux(p)
    return buf.getvalue()


def test_a_spliced_shot_is_judged():
    d = decode_video(spliced(), Sampling("fps", 1.0))
    assert d.timestamps == [0.0, 1.0, 2.0, 2.3, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0] and d.shots == [2.3]
    assert d.targets == [float(k) for k in range(10)] and d.frames[3].pts == 2.3
    # the frame taken is the photograph's, unlike the gradient's frames before and after it
    luma = [np.asarray(f.planes[0], np.float64) for f in d.frames[2:5]]
    assert np.abs(luma[1] - luma[0]).mean() > 20 and np.abs(luma[1] - luma[2]).mean() > 20
    plain = decode_video(spliced(), Sampling("fps", 1.0, shots=False))
    assert plain.timestamps == [float(k) for k in range(10)] and plain.shots == []
    # without scene cuts the encoder marks no shot: nothing to add (Note [shot starts])
    assert decode_video(spliced(scenecut=False), Sampling("fps", 1.0)).shots == []


@pytest.mark.skipif(not decord_available(), reason="decord not installed")
def test_the_decord_source_takes_the_same_shots():
    d = decode_video(spliced(), Sampling("fps", 1.0), backend="decord")
    assert d.timestamps == decode_video(spliced(), Sampling("fps", 1.0)).timestamps and d.shots == [2.3]


@pytest.mark.models
def test_the_verdict_names_the_shots(model_repo, repo_with, stack):
    from engine import Session

    v = stack.enter_context(Session(model_repo.path)).moderate(spliced())
    assert 2.3 in v.sampled_timestamps and v.media["shot_starts"] == [2.3]
    off = stack.enter_context(Session(repo_with("shots = true", "shots = false"))).moderate(spliced())
    assert 2.3 not in off.sampled_timestamps and "shot_starts" not in off.media
