"""Display orientation: how a decoded picture is turned and mirrored to be shown upright.

Note [display orientation]
~~~~~~~~~~~~~~~~~~~~~~~~~~
Pictures carry their upright orientation as metadata, not in their pixels: video as FFmpeg's
display matrix (MP4/MOV ``tkhd``, exported as ``AV_FRAME_DATA_DISPLAYMATRIX``), still images as the
EXIF Orientation tag (phone cameras). Both name one of the eight right-angle turns and mirror
images of a rectangle. An :class:`Orientation` holds it as three steps applied to the coded picture
in this order (each a numpy view, no copy): swap rows and columns, reverse the rows, reverse the
columns.

The angle alone does not say which of the eight it is: PyAV's ``VideoFrame.rotation``
(``av_display_rotation_get``) reads a left-right mirror as 180 degrees and an upside-down mirror
as 0, so a mirrored picture treated as a rotation comes out upside down. Hence:

* video: the matrix itself, from the frame's side data, read as FFmpeg's own player and CLI do
  (fftools' autorotate: ``transpose``/``hflip``/``vflip`` chosen from the clockwise angle and the
  signs of the matrix entries); angles that are not a multiple of 90 degrees go to the nearest
  quarter turn (FFmpeg would rotate by the exact angle);
* still images: the EXIF tag, read by Pillow from the file's headers. FFmpeg 8 turns that tag into
  a display matrix too, but then also attaches the EXIF block as side data of a type PyAV 18 does
  not know, and reading any of the frame's side data raises;
* where neither can be read, the angle, as a rotation without mirror.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import IO, Any, NamedTuple

import numpy as np

__all__ = ["Orientation", "IDENTITY", "ALL", "frame_orientation", "exif_orientation"]

EXIF_ORIENTATION_TAG = 0x0112


class Orientation(NamedTuple):
    """The coded -> display transform: ``transpose``, then ``flip_rows``, then ``flip_cols``."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not any(self)

    @property
    def mirrored(self) -> bool:
        """True when the transform includes a reflection (an odd number of the three steps)."""
        return sum(self) % 2 == 1

    def apply(self, a: np.ndarray) -> np.ndarray:
        """``a`` (rows, columns, ...) in display orientation, as a view."""
        if self.transpose:
            a = a.swapaxes(0, 1)
        if self.flip_rows:
            a = a[::-1]
        if self.flip_cols:
            a = a[:, ::-1]
        return a

    def as_rotation(self) -> tuple[int, bool]:
        """``(degrees, mirrored)``: the same transform as a counter-clockwise turn by ``degrees``
        (0/90/180/270) followed, when ``mirrored``, by a left-right mirror."""
        probe = np.arange(6).reshape(2, 3)
        shown = self.apply(probe)
        for k in range(4):
            turned = np.rot90(probe, k)
            if turned.shape == shown.shape and (turned == shown).all():
                return 90 * k, False
            if turned.shape == shown.shape and (turned[:, ::-1] == shown).all():
                return 90 * k, True
        raise AssertionError(f"{self} is not a right-angle transform")  # unreachable

    def after(self, done: Orientation) -> Orientation:
        """What is left to apply to a picture already put through ``done`` to reach ``self``."""
        probe = np.arange(6).reshape(2, 3)
        want, have = self.apply(probe), done.apply(probe)
        for o in ALL:
            got = o.apply(have)
            if got.shape == want.shape and (got == want).all():
                return o
        raise AssertionError("right-angle transforms form a group")  # unreachable

    @classmethod
    def from_rotation(cls, degrees: float) -> Orientation:
        """A counter-clockwise turn (FFmpeg's sign), rounded to the nearest quarter turn."""
        k = int(round(degrees / 90.0)) % 4 if degrees and math.isfinite(degrees) else 0
        return _TURNS[k]

    @classmethod
    def from_exif(cls, value: int) -> Orientation:
        """EXIF Orientation 1-8 (TIFF 6.0: where row 0 and column 0 of the stored picture lie)."""
        if value not in _EXIF:
            raise ValueError(f"EXIF orientation must be 1..8, got {value!r}")
        return _EXIF[value]

    @classmethod
    def from_display_matrix(cls, m) -> Orientation:
        """FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point), read as fftools' autorotate."""
        a, b, c, d = (float(m[i]) for i in (0, 1, 3, 4))
        sx, sy = math.hypot(a, c), math.hypot(b, d)
        if sx == 0.0 or sy == 0.0:  # singular: no orientation to apply
            return IDENTITY
        ccw = -math.degrees(math.atan2(b / sy, a / sx))  # av_display_rotation_get
        theta = -float(round(ccw))  # clockwise, as fftools' get_rotation
        theta -= 360.0 * math.floor(theta / 360.0 + 0.9 / 360.0)
        if abs(theta - 90.0) < 1.0:
            return cls(True, False, False) if c > 0 else _TURNS[3]  # transpose=cclock_flip / clock
        if abs(theta - 180.0) < 1.0:
            return cls(False, d < 0, a < 0)  # vflip, hflip
        if abs(theta - 270.0) < 1.0:
            return cls(True, True, True) if c < 0 else _TURNS[1]  # transpose=clock_flip / cclock
        if abs(theta) > 1.0:
            return cls.from_rotation(ccw)
        return cls(False, d < 0, False)


IDENTITY = Orientation()
ALL = tuple(Orientation(*bits) for bits in itertools.product((False, True), repeat=3))
# counter-clockwise quarter turns: np.rot90(a, k)
_TURNS = (IDENTITY, Orientation(True, True, False), Orientation(False, True, True),
          Orientation(True, False, True))
_EXIF = {
    1: IDENTITY,
    2: Orientation(False, False, True),   # mirrored left-right
    3: _TURNS[2],                          # 180 degrees
    4: Orientation(False, True, False),   # mirrored upside down
    5: Orientation(True, False, False),   # transposed
    6: _TURNS[3],                          # shown turned 90 degrees clockwise
    7: Orientation(True, True, True),     # transversed
    8: _TURNS[1],                          # shown turned 90 degrees counter-clockwise
}


# Note [side data PyAV cannot read safely]
# PyAV 18 wraps the metadata of a frame's side data in an av.Dictionary that frees it when the
# wrapper dies, and FFmpeg frees it again with the frame: a double free that crashes the process
# at the next garbage collection. Only side data with metadata does this, and FFmpeg's decoders
# attach it in one place: the PNG decoder names the ICC profile of every PNG or APNG with an iCCP
# chunk (common: screenshots, exports). Frames of those codecs are never asked for
# ``vf.side_data``; their angle comes from PyAV's C-level rotation, a mirror from EXIF (Pillow).
UNSAFE_SIDE_DATA_CODECS = frozenset({"png", "apng"})


def frame_orientation(vf: Any, codec: str = "") -> Orientation:
    """The display orientation of a decoded ``av.VideoFrame`` (Note [display orientation]);
    ``codec`` is its decoder's name (Note [side data PyAV cannot read safely])."""
    if codec in UNSAFE_SIDE_DATA_CODECS:
        return Orientation.from_rotation(float(vf.rotation or 0))
    try:
        for sd in vf.side_data:
            if sd.type.name == "DISPLAYMATRIX":
                return Orientation.from_display_matrix(np.frombuffer(bytes(sd), dtype=np.int32, count=9))
        return IDENTITY
    except (ValueError, AttributeError, TypeError):  # a side-data type this PyAV does not know
        return Orientation.from_rotation(float(vf.rotation or 0))


EXIF_SCAN_BYTES = 256 * 1024  # JPEG APP1 and PNG eXIf sit in the headers, well inside this
_WEBP_EXIF_FLAG = 0x08         # VP8X flags byte: the file has an EXIF chunk (at its end)


def _may_hold_exif(fileobj: IO[bytes]) -> bool:
    """False when the file plainly has no EXIF block, so Pillow need not parse its headers (about
    30 us a JPEG): no ``Exif`` APP1 (JPEG) or ``eXIf`` chunk (PNG) in the first bytes, or a WebP
    without the VP8X EXIF flag. AVIF/HEIF always go to Pillow, which also reads their orientation
    properties."""
    fileobj.seek(0)
    head = fileobj.read(EXIF_SCAN_BYTES)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & _WEBP_EXIF_FLAG)
    if head[4:8] == b"ftyp":  # AVIF/HEIF: Pillow reports the irot/imir properties as EXIF too
        return True
    return b"Exif\x00\x00" in head or b"eXIf" in head


def exif_orientation(fileobj: IO[bytes]) -> Orientation | None:
    """The EXIF Orientation of a still image (JPEG, PNG, WebP: a seekable binary file object), read
    by Pillow from the headers without decoding pixels; None when it has none or it cannot be
    read."""
    try:
        if not _may_hold_exif(fileobj):
            return None
        from PIL import Image

        fileobj.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: sizes are checked by Limits
            with Image.open(fileobj) as im:
                raw = im.info.get("exif")
                if not raw:
                    return None
                exif = Image.Exif()
                exif.load(raw)
                value = exif.get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - damaged metadata: FFmpeg's reading stands
        return None
    return _EXIF.get(value) if isinstance(value, int) else None
