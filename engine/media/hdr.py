"""HDR and wide-gamut video frames become the SDR picture a BT.709 display shows.

Phones record HDR by default (HLG in BT.2020, 10-bit HEVC), streaming masters are PQ; read as
if they were SDR, such frames come out dim and washed out, and the vision models see pictures
unlike any they were trained on. A frame whose transfer is PQ or HLG, or whose primaries are
BT.2020, is converted by :func:`engine.ops.sdr.to_sdr` (Note [HDR to SDR] in
``csrc/include/engine/transfer.h``) into an RGB24 frame; everything else is untouched.

The stream's tags decide (FFmpeg's ``AVColorTransferCharacteristic``, ``AVColorPrimaries`` and
``AVColorSpace`` codes). Untagged primaries and matrix of a PQ/HLG stream are BT.2020 (the only
ones BT.2100 defines). A matrix the op does not know (BT.2020 constant luminance, ICtCp: Dolby
Vision profile 5) leaves the frame to the old path: swscale converts it with its matrix alone.
"""

from __future__ import annotations

from typing import NamedTuple

_TRANSFERS = {16: "pq", 18: "hlg"}          # SMPTE ST 2084, ARIB STD-B67
_PRI_BT2020, _PRI_UNSPECIFIED = 9, 2
_CS_BT2020_NCL, _CS_UNSPECIFIED = 9, 2


class SdrConversion(NamedTuple):
    transfer: str    # "pq" | "hlg" | "sdr" (BT.2020 primaries, SDR signal)
    primaries: str   # "bt2020" | "bt709"
    matrix: str      # "bt2020" | "bt709" | "bt601": the frame's Y'CbCr matrix


def sdr_conversion(vf, matrix: str | None) -> SdrConversion | None:
    """What turns the ``av.VideoFrame`` ``vf`` into SDR BT.709, or None when it already is.

    ``matrix`` is the frame's BT.601/BT.709 matrix as :func:`engine.media.frame.matrix_for` reads
    it (None for the others).
    """
    try:
        trc, prim, cs = int(vf.color_trc), int(vf.color_primaries), int(vf.colorspace)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - very old PyAV
        return None
    transfer = _TRANSFERS.get(trc)
    wide = prim == _PRI_BT2020 or (transfer is not None and prim == _PRI_UNSPECIFIED)
    if transfer is None and not wide:
        return None
    if cs == _CS_BT2020_NCL or (cs == _CS_UNSPECIFIED and wide):
        matrix = "bt2020"
    if matrix is None:
        return None
    return SdrConversion(transfer or "sdr", "bt2020" if wide else "bt709", matrix)
