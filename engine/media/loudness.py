"""Loudness of decoded sound, and the gain that brings quiet sound to the reference loudness
(Note [loudness]).

Note [loudness]
Sound turned down is still heard: viewers turn the volume up, and players normalise loudness.
YAMNet's log-mel front end is not: the explosion sample (-20.8 LUFS) scores 0.635 for
violent_audio as given (threshold 0.5), 0.496 10 dB quieter and 0.098 30 dB quieter. So sound quieter
than the pipeline's reference loudness (``[audio] reference_lufs``, -20 LUFS, about the level of
speech and effects in online video) by more than RAISE_MARGIN_DB is judged as given AND raised
to the reference, each policy keeping the stronger score; the evidence gives the gain
(``gain_db``). Raised samples are not clipped: a volume knob does not clip. Loudness is the
integrated, gated loudness of ITU-R BS.1770 (EBU R128) as FFmpeg's ebur128 filter measures it,
of the decoded mono waveform (content above 8 kHz is gone at 16 kHz; it weighs little in
K-weighted loudness). Sound with nothing above the standard's -70 LUFS gate (silence) is not
raised, and the gain is at most MAX_GAIN_DB.

Note [cancelling channels]
The model reads a mono downmix, and channels can cancel in it: a stereo track whose right channel
is its left one inverted plays at full loudness in headphones and stereo speakers, and downmixes
to silence (the explosion sample so scored 0.019, passed). So when the downmix of a track with
several channels is quiet (as above) or silent, each channel is judged alone too, the stronger
kept; the evidence names the channel (``channel``). Loud downmixes, the usual case, cost nothing
more. ``[audio] raise_quiet = false`` turns this off with the raising.
"""

from __future__ import annotations

import math

import av
import numpy as np

RAISE_MARGIN_DB = 3.0
MAX_GAIN_DB = 40.0
SILENT_LUFS = -70.0  # the absolute gate of BS.1770: quieter blocks are not measured
_CHUNK = 1 << 16  # samples per frame pushed through the filter


def integrated_loudness(wave: np.ndarray, sample_rate: int = 16000) -> float:
    """BS.1770 integrated loudness of a mono float waveform in LUFS (-inf for silence)."""
    wave = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
    graph = av.filter.Graph()
    src = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono",
                            time_base=f"1/{sample_rate}")
    meter = graph.add("ebur128", "metadata=1")
    sink = graph.add("abuffersink")
    src.link_to(meter)
    meter.link_to(sink)
    graph.configure()
    measured = None
    for start in [*range(0, wave.size, _CHUNK), None]:
        if start is None:
            graph.push(None)  # flush: the last frames carry the final measurement
        else:
            frame = av.AudioFrame.from_ndarray(wave[None, start:start + _CHUNK], format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            graph.push(frame)
        while True:
            try:
                out = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            measured = out.metadata.get("lavfi.r128.I", measured)
    value = float(measured) if measured is not None else -math.inf
    return value if value > SILENT_LUFS else -math.inf


def is_quiet(loudness: float, reference_lufs: float) -> bool:
    """Quieter than the reference by more than RAISE_MARGIN_DB, or silent (Note [loudness])."""
    return loudness < reference_lufs - RAISE_MARGIN_DB


def raise_gain_db(loudness: float, reference_lufs: float) -> float | None:
    """The gain in dB that brings sound of ``loudness`` to ``reference_lufs`` when it is quiet (at
    most MAX_GAIN_DB); None when it is not to be raised: loud enough, or silent (Note [loudness])."""
    if not math.isfinite(loudness) or not is_quiet(loudness, reference_lufs):
        return None
    return min(reference_lufs - loudness, MAX_GAIN_DB)
