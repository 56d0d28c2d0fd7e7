"""Note [loudness]: quiet sound is also judged raised to the reference loudness."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import media_factory as mf
from engine.errors import ConfigError
from engine.media import decode_audio
from engine.media.loudness import (MAX_GAIN_DB, RAISE_MARGIN_DB, integrated_loudness, is_quiet,
                                   raise_gain_db)
from engine.pipeline import load_pipeline

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def sine(amplitude: float, rate: int = 16000, seconds: float = 3.0, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_loudness_of_a_sine_is_the_standards():
    # ITU-R BS.1770: a 0 dBFS 1 kHz sine in one front channel reads -3.01 LUFS; half of it 6.02 less
    assert integrated_loudness(sine(0.5, 48000), 48000) == pytest.approx(-9.03, abs=0.02)
    assert integrated_loudness(sine(0.5)) == pytest.approx(-9.03, abs=0.1)  # at the model's 16 kHz
    for db in (10, 20, 40):  # a steady sound: every block above the gates, so exactly db quieter
        got = integrated_loudness(sine(0.5 * 10 ** (-db / 20)))
        assert got == pytest.approx(integrated_loudness(sine(0.5)) - db, abs=0.02)


def test_silence_has_no_loudness():
    assert integrated_loudness(np.zeros(48000, np.float32)) == -math.inf
    assert integrated_loudness(np.zeros(0, np.float32)) == -math.inf
    assert integrated_loudness(sine(0.5 * 10 ** (-75 / 20))) == -math.inf  # under the -70 LUFS gate


def test_the_gain_that_raises_quiet_sound():
    loud = integrated_loudness(sine(0.5))  # -9 LUFS
    gain = lambda wave: raise_gain_db(integrated_loudness(wave), -20.0)  # noqa: E731
    assert gain(sine(0.5)) is None and not is_quiet(loud, -20.0)  # louder than the reference
    within = sine(0.5 * 10 ** (-(11 + RAISE_MARGIN_DB / 2) / 20))  # 1.5 dB under the reference
    assert gain(within) is None and not is_quiet(integrated_loudness(within), -20.0)
    quiet = sine(0.5 * 10 ** (-25 / 20))  # -34 LUFS
    assert gain(quiet) == pytest.approx(-20.0 - (loud - 25), abs=0.02)
    faint = sine(0.5 * 10 ** (-58 / 20))  # -67 LUFS: 47 dB under, raised by at most MAX_GAIN_DB
    assert gain(faint) == MAX_GAIN_DB
    assert gain(np.zeros(16000, np.float32)) is None  # silence: nothing to raise, but quiet
    assert is_quiet(-math.inf, -20.0) and gain(np.zeros(0, np.float32)) is None


def test_pipeline_choice(tmp_path):
    repo = Path(__file__).resolve().parents[1] / "model_repo"
    a = load_pipeline(repo).audio
    assert a.raise_quiet is True and a.reference_lufs == -20.0
    text = (repo / "pipeline.toml").read_text()
    for old, new, problem in (("raise_quiet = true", "raise_quiet = 1", "expected bool"),
                              ("reference_lufs = -20.0", "reference_lufs = -80", "above -70"),
                              ("reference_lufs = -20.0", "reference_lufs = 3", "at most 0")):
        (tmp_path / "pipeline.toml").write_text(text.replace(old, new, 1))
        with pytest.raises(ConfigError, match=problem):
            load_pipeline(tmp_path)
    (tmp_path / "pipeline.toml").write_text(text.replace("raise_quiet = true", "raise_quiet = false", 1))
    assert load_pipeline(tmp_path).audio.raise_quiet is False


@pytest.mark.models
def test_quiet_violent_sound_is_judged_as_heard(model_repo, repo_with, stack):
    from engine import Session

    explosion = decode_audio(SAMPLES / "explosion.flac")  # -20.8 LUFS, flagged as given
    raising = stack.enter_context(Session(model_repo.path))
    as_given = stack.enter_context(Session(repo_with("raise_quiet = true", "raise_quiet = false")))
    loud = raising.moderate(mf.float_wav(explosion)).policies["violent_audio"]
    assert loud.flagged and loud.evidence.gain_db is None  # at the reference: judged once
    assert loud.score == as_given.moderate(mf.float_wav(explosion)).policies["violent_audio"].score
    for db in (10, 20, 30):
        quiet = mf.float_wav(explosion * np.float32(10 ** (-db / 20)))
        r = raising.moderate(quiet).policies["violent_audio"]
        assert r.flagged, db
        assert r.evidence.gain_db == pytest.approx(-20.0 - integrated_loudness(decode_audio(quiet)), abs=0.01)
        assert r.evidence.segment is not None and r.to_dict()["evidence"]["gain_db"] == r.evidence.gain_db
        assert not as_given.moderate(quiet).policies["violent_audio"].flagged, db  # what was missed


def test_channels_decode_alone():
    explosion = decode_audio(SAMPLES / "explosion.flac")
    stereo = mf.float_wav(np.stack([explosion, -explosion], 1))
    both = decode_audio(stereo, channels=True)
    assert both.shape == (2, explosion.size) and both.dtype == np.float32
    np.testing.assert_array_equal(both[0], explosion)
    np.testing.assert_array_equal(both[1], -explosion)
    assert not decode_audio(stereo).any()  # the downmix the model reads: silence
    np.testing.assert_array_equal(decode_audio(SAMPLES / "explosion.flac", channels=True), explosion[None])


def test_declared_channels():
    from engine.media import audio_channels

    explosion = decode_audio(SAMPLES / "explosion.flac")
    assert audio_channels(SAMPLES / "explosion.flac") == 1
    assert audio_channels(mf.float_wav(np.stack([explosion, -explosion], 1))) == 2
    assert audio_channels(SAMPLES / "speech.m4a") == 1


@pytest.mark.models
def test_a_quiet_mono_track_is_decoded_once(model_repo, stack, monkeypatch):
    """Quiet sound is also judged channel by channel (Note [cancelling channels]); a mono track has
    one channel, the downmix itself: no second decode."""
    import engine.media
    from engine import Session

    explosion = decode_audio(SAMPLES / "explosion.flac")
    calls = []
    real = engine.media.decode_audio
    monkeypatch.setattr(engine.media, "decode_audio", lambda *a, **k: calls.append(k.get("channels")) or real(*a, **k))
    session = stack.enter_context(Session(model_repo.path))
    quiet_mono = mf.float_wav(explosion * np.float32(0.1))  # 20 dB below the reference
    assert session.moderate(quiet_mono).policies["violent_audio"].flagged
    assert calls == [False]
    calls.clear()
    quiet_stereo = mf.float_wav(np.stack([explosion, explosion], 1) * np.float32(0.1))
    session.moderate(quiet_stereo)
    assert calls == [False, True]  # two channels: judged apart too


@pytest.mark.models
def test_channels_that_cancel_in_the_downmix_are_judged_alone(model_repo, repo_with, stack):
    from engine import Session

    explosion = decode_audio(SAMPLES / "explosion.flac")
    judging = stack.enter_context(Session(model_repo.path))
    as_given = stack.enter_context(Session(repo_with("raise_quiet = true", "raise_quiet = false")))
    want = judging.moderate(mf.float_wav(explosion)).policies["violent_audio"]
    for left, right, channel in ((explosion, -explosion, 0), (np.zeros_like(explosion), explosion, 1)):
        anti = mf.float_wav(np.stack([left, right], 1) * np.float32(0.5))
        r = judging.moderate(anti).policies["violent_audio"]
        assert r.flagged and r.evidence.channel == channel
        assert r.to_dict()["evidence"]["channel"] == channel
        if channel == 0:  # exact anti-phase: silence downmixed, the explosion itself in channel 0
            assert r.score == pytest.approx(want.score, abs=0.02)
            assert not as_given.moderate(anti).policies["violent_audio"].flagged  # what was missed
        for given in ({"audio": (np.stack([left, right], 1) * np.float32(0.5), 16000)},):
            [o] = judging.moderate_many([given])  # samples in memory: the same
            assert o.verdict.policies["violent_audio"].flagged
    loud = judging.moderate(mf.float_wav(np.stack([explosion, explosion], 1))).policies["violent_audio"]
    assert loud.evidence.channel is None  # a loud downmix: channels not judged apart
