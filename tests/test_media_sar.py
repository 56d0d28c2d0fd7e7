"""Anamorphic video (pixels that are not square: DVD, broadcast, HDV) keeps its displayed shape
through decoding and preprocessing (Note [sample aspect ratio] in csrc/include/engine/resample.h)."""

from __future__ import annotations

import dataclasses
import fractions

import numpy as np
import pytest

from engine.media import synthetic as syn
from engine.media.frame import stream_sar
from engine.media.video import Sampling, decode_video
from engine.ops import PreprocessSpec, preprocess

NORM = dict(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _clip(rgb: np.ndarray, sar: fractions.Fraction | None) -> bytes:
    """Two frames of ``rgb`` as H.264 4:4:4, the sample aspect ratio written in the bitstream."""
    return syn.encode_picture(rgb, pix_fmt="yuv444p", options={"crf": "4", "preset": "ultrafast"}, sar=sar)


def _scene(h: int, w: int) -> np.ndarray:
    """A disc and bars: content whose shape shows a wrong aspect."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (0.35 * h) ** 2)
    img = np.stack([255 * disc, 128 + 100 * np.sin(x / 5), 255 * (y / h)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_decoded_frames_carry_the_sample_aspect_ratio():
    data = _clip(_scene(64, 96), fractions.Fraction(2, 1))
    dv = decode_video(data, Sampling(mode="all"))
    assert dv.sar == (2, 1) and all(f.sar == (2, 1) for f in dv.frames)
    assert dv.picture_facts() == {"sar": [2, 1]}
    square = decode_video(_clip(_scene(64, 96), None), Sampling(mode="all"))
    assert square.sar == (1, 1)
    turned = decode_video(syn.set_mp4_rotation(data, 90), Sampling(mode="all"))
    assert turned.frames[0].sar == (1, 2) and (turned.width, turned.height) == (64, 96)


def test_anamorphic_clip_preprocesses_like_its_square_pixel_picture():
    """A 96x64 clip at 2:1 is shown 192x64: preprocessed (shorter side + centre crop), it equals the
    same scene stored as square pixels at 192x64, and not the 96x64 picture taken at face value."""
    scene = _scene(64, 192)
    squeezed = scene.reshape(64, 96, 2, 3).mean(2).round().astype(np.uint8)  # 2:1 pixels
    ana = decode_video(_clip(squeezed, fractions.Fraction(2, 1)), Sampling(mode="all")).frames[0]
    sq = decode_video(_clip(scene, None), Sampling(mode="all")).frames[0]
    spec = PreprocessSpec(size=(32, 32), resize="shorter", **NORM)
    a, b = preprocess([ana], spec)[0], preprocess([sq], spec)[0]
    face_value = preprocess([dataclasses.replace(ana, sar=(1, 1))], spec)[0]
    err = np.abs(a - b).mean() * 0.25 * 255  # levels
    assert err < 4, err
    assert np.abs(face_value - b).mean() * 0.25 * 255 > 3 * err


@pytest.mark.parametrize("sar,expected", [((4, 3), (4, 3)), ((64, 45), (64, 45)), ((9, 1), (1, 1)),
                                          ((1, 9), (1, 1)), ((0, 1), (1, 1))])
def test_stream_sar_takes_plausible_ratios(sar, expected):
    class Stream:
        sample_aspect_ratio = fractions.Fraction(*sar) if sar[0] else None
        codec_context = None

    assert stream_sar(Stream()) == expected


def test_decord_frames_carry_the_sample_aspect_ratio():
    from engine.media.decord_source import decode_video_decord, decord_available

    if not decord_available():
        pytest.skip("decord not installed")
    data = _clip(_scene(64, 96), fractions.Fraction(2, 1))
    dv = decode_video_decord(data, Sampling(mode="all"))
    assert dv.sar == (2, 1) and dv.frames[0].sar == (2, 1)
    turned = decode_video_decord(syn.set_mp4_rotation(data, 90), Sampling(mode="all"))
    assert turned.frames[0].sar == (1, 2)
