"""Animated images: GIF and APNG through FFmpeg, WebP through Pillow (Note [animated WebP]), each
probed and sampled as a video, its first frame as an image, frames composited as Pillow shows them,
within the limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.errors import CorruptMediaError, MediaLimitError
from engine.media import Limits, Sampling, decode_image, decode_video, frame_to_rgb, probe
from engine.media.webp_animation import is_animated_webp, webp_index
from media_factory import typed_errors_on_damage

DURATIONS_MS = [500, 250, 10, 500, 740]  # 10 ms: shown for 100 ms
STARTS = [0.0, 0.5, 0.75, 0.85, 1.35]


def pictures(n: int, size=(40, 24)) -> list[np.ndarray]:
    """Distinct frames: a flat level per frame, and a bar whose position tells the frame apart."""
    w, h = size
    out = []
    for i in range(n):
        a = np.full((h, w, 3), 30 + 40 * i, np.uint8)
        a[:, 4 * i : 4 * i + 4] = (255, 0, 0)
        out.append(a)
    return out


def animation(durations=DURATIONS_MS, size=(40, 24), **save) -> bytes:
    frames = [Image.fromarray(a) for a in pictures(len(durations), size)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=list(durations),
                   loop=0, lossless=True, **save)
    return buf.getvalue()


def pillow_frames(data: bytes) -> list[np.ndarray]:
    out = []
    with Image.open(io.BytesIO(data)) as im:
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
    return out


def test_index_and_probe():
    data = animation()
    assert is_animated_webp(io.BytesIO(data))
    assert webp_index(data) == pytest.approx(STARTS + [2.09])
    info = probe(data)
    assert (info.kind, info.video_codec, info.width, info.height) == ("video", "webp", 40, 24)
    assert info.duration == pytest.approx(2.09) and info.fps == pytest.approx(5 / 2.09)
    one = animation([300])
    assert probe(one).kind == "image"
    still = io.BytesIO()
    Image.fromarray(pictures(1)[0]).save(still, format="WEBP", lossless=True)
    assert not is_animated_webp(io.BytesIO(still.getvalue()))


def test_all_frames_equal_pillows():
    data = animation()
    dv = decode_video(data, Sampling("all"))
    assert dv.timestamps == pytest.approx(STARTS) and dv.codec == "webp" and dv.strategy == "all"
    assert (dv.width, dv.height, dv.decoded_frames) == (40, 24, 5)
    for ours, ref in zip(dv.frames, pillow_frames(data)):
        assert ours.format == "rgb24"
        np.testing.assert_array_equal(frame_to_rgb(ours), ref)
    assert dv.duration == pytest.approx(2.09)


def test_sampling_picks_frames_by_time():
    data = animation()
    refs = pillow_frames(data)
    # targets 0, 0.5, 1.0 and 1.5: the last frame starts at 1.35 and is shown until 2.09
    dv = decode_video(data, Sampling("fps", 2.0))
    assert dv.targets == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert dv.timestamps == pytest.approx([0.0, 0.5, 0.85, 1.35])  # the frame on screen at each
    for f, i in zip(dv.frames, (0, 1, 3, 4)):
        np.testing.assert_array_equal(frame_to_rgb(f), refs[i])
    dv = decode_video(data, Sampling("fps", 2.0, exact=True))
    assert dv.timestamps == pytest.approx([0.0, 0.5, 0.85, 1.35]) and dv.decoded_frames == 5
    dv = decode_video(data, Sampling("uniform", 1))
    assert len(dv.frames) == 1 and dv.decoded_frames <= 5


def test_first_frame_as_an_image():
    data = animation()
    np.testing.assert_array_equal(frame_to_rgb(decode_image(data)), pillow_frames(data)[0])


def test_limits_and_damage_give_typed_errors():
    data = animation()
    with pytest.raises(MediaLimitError):
        decode_video(data, Sampling("all"), Limits(max_pixels=40 * 24 - 1))
    with pytest.raises(MediaLimitError):
        decode_video(data, Sampling("all"), Limits(max_frames=3))
    with pytest.raises(MediaLimitError):  # one late frame wanted: the frames before it count
        decode_video(data, Sampling("keyframes", max_frames=1), Limits(max_frames=2))
    with pytest.raises(MediaLimitError):
        decode_video(data, Sampling("all"), Limits(max_duration_s=2.0))
    with pytest.raises(MediaLimitError):
        decode_image(data, Limits(max_pixels=100))
    with pytest.raises(CorruptMediaError):
        decode_video(data[: len(data) // 2], Sampling("all"))  # a chunk runs past the end
    with pytest.raises(CorruptMediaError):
        probe(data[: len(data) // 2])
    broken = bytearray(data)
    i = broken.find(b"ANMF")
    broken[i + 8 + 24 : i + 8 + 40] = b"\xff" * 16  # the first frame's bitstream
    with pytest.raises(CorruptMediaError):
        decode_video(bytes(broken), Sampling("all"))


@pytest.mark.models
def test_session_moderates_an_animated_webp_as_a_video(model_repo):
    from engine import Session

    data = animation(size=(96, 64))
    with Session(model_repo.path) as s:
        v = s.moderate(video=data)
    ev = v.policies["sexual_content"].evidence
    assert 0.0 <= v.policies["sexual_content"].score <= 1.0
    assert ev.modality == "vision" and set(ev.timestamps) <= set(STARTS)
    assert v.sampled_timestamps == pytest.approx([0.0, 0.85])  # the pipeline's 1 fps


def test_a_huge_canvas_is_a_limit_even_with_max_pixels_off():
    data = bytearray(animation())
    i = data.find(b"VP8X")
    data[i + 12 : i + 18] = (19999).to_bytes(3, "little") * 2  # canvas 20000 x 20000
    for limits in (Limits(), Limits(max_pixels=None)):
        with pytest.raises(MediaLimitError):
            probe(bytes(data), limits)
        with pytest.raises(MediaLimitError):
            decode_video(bytes(data), Sampling("all"), limits)


def test_damaged_files_give_typed_errors_only():
    calls = (probe, lambda x: decode_video(x, Sampling("fps", 2.0)), decode_image)
    assert typed_errors_on_damage(animation(), calls, rounds=60)


def partial_updates(n: int = 6) -> list[np.ndarray]:
    """Frames that change a small block each: encoders store them as partial frames drawn over the
    previous canvas, so a frame decoded without its predecessors comes out wrong."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)]
    for i in range(1, n):
        f = frames[-1].copy()
        f[(8 * i) % 40 : (8 * i) % 40 + 8, 10:20] ^= 0xFF
        frames.append(f)
    return frames


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_are_videos_composited_as_pillow_shows_them(fmt):
    frames = [Image.fromarray(a) for a in partial_updates()]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=500, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    data = buf.getvalue()
    info = probe(data)
    assert info.kind == "video" and info.video_codec == {"GIF": "gif", "PNG": "apng", "WEBP": "webp"}[fmt]
    refs = pillow_frames(data)
    every = decode_video(data, Sampling("all"))
    assert every.timestamps == pytest.approx([0.5 * i for i in range(6)])
    for f, ref in zip(every.frames, refs):
        np.testing.assert_array_equal(frame_to_rgb(f), ref)
    for sampling in (Sampling("fps", 1.0), Sampling("uniform", 2), Sampling("fps", 1.0, exact=True)):
        dv = decode_video(data, sampling)  # a late frame alone, drawn over the right canvas
        for t, f in zip(dv.timestamps, dv.frames):
            np.testing.assert_array_equal(frame_to_rgb(f), refs[round(t / 0.5)])
    np.testing.assert_array_equal(frame_to_rgb(decode_image(data)), refs[0])


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
@pytest.mark.parametrize("durations_ms,starts", [([500, 100, 1400, 1000], [0.0, 0.6, 2.0]),
                                                 ([500, 100, 700, 1000], [0.0, 0.6, 1.3])])
def test_a_frame_held_across_a_target_is_the_one_judged_there(fmt, durations_ms, starts):
    """Four frames sampled at 1 fps: every frame shown for a second or more is judged. With
    durations 0.5, 0.1, 1.4, 1.0 s the frame on screen at 1 s is the third (the first frame
    starting at or after 1 s, taken before, was the fourth, so the third was never judged); with
    0.5, 0.1, 0.7, 1.0 s the fourth starts at 1.3 s and is held to 2.3 s, past the last target
    that used to be set (1 s), and was never judged either."""
    frames = [Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=durations_ms,
                   loop=0, lossless=True)
    dv = decode_video(buf.getvalue(), Sampling("fps", 1.0))
    assert dv.timestamps == pytest.approx(starts)
    assert [int(frame_to_rgb(f)[0, 0, 0]) // 60 for f in dv.frames] == [0, 2, 3]
