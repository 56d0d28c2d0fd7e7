"""Triton mel projection + log vs the CPU front end (engine.ops.log_mel) and the float64 reference.

The spectrum is the float64 |STFT| of the reference rounded to float32; the CPU kernel computes
the whole front end in float64 from the waveform. float32 sums of 257 products are ~1e-6
relative off; log turns that into ~1e-6 absolute, and the values are ~1..20 in magnitude, so the
comparison is rtol 1e-5 with atol 1e-5 (values near 0). float16 spectra: rounding to 11 bits
(2^-11 relative, ~5e-4 absolute after the log).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import log_mel_ref, melscale_fbanks_ref, stft_mag_ref

from triton_cases import import_kernels

from engine.errors import InputError
from engine.ops import log_mel

pytest.importorskip("triton")
torch = pytest.importorskip("torch")
kernels = import_kernels()

RTOL, ATOL = 1e-5, 1e-5


def _wave(n: int, rng) -> np.ndarray:
    return (rng.standard_normal(n) * 0.3).astype(np.float32)


@pytest.mark.parametrize("samples", [512, 512 + 160 * 40 + 17])  # 1 frame; 41 frames (> one 32-row tile)
def test_log_mel_project(samples, device):
    rng = np.random.default_rng()
    w = _wave(samples, rng)
    spec = torch.from_numpy(stft_mag_ref(w).astype(np.float32)).to(device)
    out = torch.full((spec.shape[0], 64), float("nan"), device=device)
    got = kernels.log_mel_project(spec, out=out)  # the default filterbank: engine.ops.mel_filterbank()
    assert got is out
    got = got.cpu().numpy()
    np.testing.assert_allclose(got, log_mel(w), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, log_mel_ref(w), rtol=RTOL, atol=ATOL)


def test_batched_strided_and_half(device):
    rng = np.random.default_rng()
    waves = [_wave(512 + 160 * 9, rng) for _ in range(3)]
    spec = np.stack([stft_mag_ref(w) for w in waves]).astype(np.float32)  # [3, 10, 257]
    padded = torch.zeros(3, 10, 300, device=device)
    padded[:, :, :257] = torch.from_numpy(spec).to(device)
    fb = torch.from_numpy(melscale_fbanks_ref().astype(np.float32)).to(device)
    got = kernels.log_mel_project(padded[:, :, :257], fb).cpu().numpy()
    want = np.stack([log_mel(w) for w in waves])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    half = kernels.log_mel_project(padded[:, :, :257].half(), fb).cpu().numpy()
    np.testing.assert_allclose(half, want, rtol=0, atol=2e-3)


def test_validation(device):
    fb = torch.zeros(257, 64, device=device)
    with pytest.raises(InputError, match="bins"):
        kernels.log_mel_project(torch.zeros(4, 256, device=device), fb)
    with pytest.raises(InputError, match="float32"):
        kernels.log_mel_project(torch.zeros(4, 257, device=device), fb.double())
