"""The ``Frame`` passed from media decoding to preprocessing, and its construction from PyAV.

Planes are zero-copy, read-only numpy views of the FFmpeg frame buffers: each YUV plane is a 2-D
array sliced to the visible width out of a ``(height, line_size)`` buffer, so rows keep FFmpeg's
padded stride (``planes[i].strides[0] == line_size``).  The arrays hold a reference to the PyAV
plane (and through it to the AVFrame), so the pixels stay valid as long as the Frame lives.

Pixel formats
-------------
=================  =========  ===========================================================
FFmpeg pix_fmt      Frame      notes
=================  =========  ===========================================================
yuv420p/yuvj420p    i420       yuvj* are full range
nv12                nv12       plane 1 is interleaved UV, shape (H/2, W) uint8
yuv422p/yuvj422p    i422
yuv444p/yuvj444p    i444
yuv420p10le         i420_10    uint16 samples, 0..1023
yuv422p10le         i422_10
yuv444p10le         i444_10
rgb24 / bgr24       rgb24 /    one plane of shape (H, W, 3) (row stride may be padded)
                    bgr24
anything else       converted by FFmpeg (swscale) first, see :func:`_conversion_target`:
                    >8-bit YUV -> the 10-bit variant with the same subsampling, other YUV ->
                    yuv420p/yuv422p/yuv444p, RGB/palette/gray formats -> rgb24; formats with
                    alpha (and palettes) -> rgba, composited over white into rgb24 (Note
                    [transparent pictures] in alpha.py).  Frames whose colour matrix is neither BT.601 nor BT.709 (BT.2020,
                    SMPTE-240M, YCgCo, ...) are converted to rgb24 by swscale with their own matrix.
=================  =========  ===========================================================

HDR and wide gamut: a Y'CbCr frame tagged PQ or HLG, or with BT.2020 primaries, becomes an rgb24
Frame of the SDR BT.709 picture (``engine/media/hdr.py``, Note [HDR to SDR]): phones' HDR video
looks as it does on an SDR screen instead of dim and washed out.

Colour matrix: ``frame.colorspace`` BT709 -> "bt709"; BT470BG / SMPTE170M / FCC -> "bt601";
UNSPECIFIED -> "bt709" when the coded height is >= 720 else "bt601" (the usual HD/SD rule that
players apply to untagged video).  Range: ``color_range == JPEG`` or a ``yuvj*`` pix_fmt -> full.

Orientation: the display matrix (or a still image's EXIF orientation) is honoured (Note [display
orientation] in ``orientation.py``): the frame is returned upright, turned and mirrored with numpy
views (non-contiguous; the preprocessing wrapper copies them).  Because turning or mirroring a
subsampled chroma plane swaps the subsampling axes or moves the chroma siting, such YUV frames are
first converted by swscale to 4:4:4 (``i444`` / ``i444_10``, same matrix and range); RGB frames
are transformed directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from engine.errors import InputError, UnsupportedMediaError

from .alpha import BACKGROUNDS, WHITE, flattened, format_has_alpha
from .hdr import SdrConversion, sdr_conversion
from .orientation import Orientation, frame_orientation

__all__ = [
    "Frame", "FRAME_FORMATS", "frame_from_av", "frame_from_array", "frame_to_rgb",
    "matrix_for", "full_range_for", "stream_sar", "frame_sdr",
]


@dataclass(frozen=True)
class Frame:
    format: str            # "i420" | "nv12" | "i422" | "i444" | "rgb24" | "bgr24"  (+ "_10" suffix
                           # for 10-bit little-endian uint16 samples, e.g. "i420_10")
    planes: tuple[np.ndarray, ...]   # 2-D arrays, one per plane, uint8 (or uint16 for 10-bit);
                           # rows may be padded (strides[0] >= width*itemsize*channels);
                           # for rgb24/bgr24 one plane of shape (H, W*3) or (H, W, 3)
    width: int             # luma width in pixels (display orientation already applied)
    height: int
    matrix: str            # "bt601" | "bt709"   (colour matrix for YUV formats; ignored for RGB)
    full_range: bool       # True = JPEG/full range, False = limited (16-235/240)
    pts: float             # presentation time in seconds (0.0 for images)
    sar: tuple[int, int] = (1, 1)  # sample aspect ratio, pixel width:height in display orientation
                           # (anamorphic video; Note [sample aspect ratio] in resample.h)


# FFmpeg pix_fmt -> (Frame.format, forced full range)
_PIX_FMTS: dict[str, tuple[str, bool]] = {
    "yuv420p": ("i420", False), "yuvj420p": ("i420", True),
    "nv12": ("nv12", False),
    "yuv422p": ("i422", False), "yuvj422p": ("i422", True),
    "yuv444p": ("i444", False), "yuvj444p": ("i444", True),
    "yuv420p10le": ("i420_10", False),
    "yuv422p10le": ("i422_10", False),
    "yuv444p10le": ("i444_10", False),
    "rgb24": ("rgb24", False), "bgr24": ("bgr24", False),
}
FRAME_FORMATS = ("i420", "nv12", "i422", "i444", "i420_10", "i422_10", "i444_10", "rgb24", "bgr24")

# AVColorSpace values (libavutil/pixfmt.h)
_CS_BT709, _CS_UNSPECIFIED, _CS_FCC, _CS_BT470BG, _CS_SMPTE170M = 1, 2, 4, 5, 6
_SUPPORTED_CS = {_CS_BT709: "bt709", _CS_FCC: "bt601", _CS_BT470BG: "bt601", _CS_SMPTE170M: "bt601"}
_COLOR_RANGE_JPEG = 2


def matrix_for(colorspace: int, coded_height: int) -> str | None:
    """Frame.matrix for an AVColorSpace; None when the matrix is not BT.601/BT.709."""
    cs = int(colorspace)
    if cs in _SUPPORTED_CS:
        return _SUPPORTED_CS[cs]
    if cs in (_CS_UNSPECIFIED, 3):  # 3 = reserved, treated like unspecified by FFmpeg
        return "bt709" if coded_height >= 720 else "bt601"
    if cs == 0:  # RGB / GBR "matrix" (identity) only occurs on gbrp-like formats
        return None
    return None


def full_range_for(pix_fmt: str, color_range: int) -> bool:
    return pix_fmt.startswith("yuvj") or int(color_range) == _COLOR_RANGE_JPEG


def _conversion_target(fmt) -> str:
    """Nearest supported pix_fmt for an FFmpeg VideoFormat that is not supported directly."""
    name = fmt.name
    comps = fmt.components
    is_yuv = (not fmt.is_rgb and not fmt.has_palette and len(comps) >= 3
              and not name.startswith(("gray", "ya", "gbr", "xyz", "bayer")))
    if not is_yuv:
        return "rgb24"
    bits = max(c.bits for c in comps)
    # chroma subsampling from the chroma plane size of a 16x16 picture
    cw, ch = fmt.chroma_width(16), fmt.chroma_height(16)
    if cw >= 16 and ch >= 16:
        sub = "444"
    elif ch >= 16:
        sub = "422"
    else:
        sub = "420"
    return f"yuv{sub}p10le" if bits > 8 else f"yuv{sub}p"


def _plane_view(plane, rows: int, row_elems: int, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    stride = plane.line_size // itemsize
    buf = np.frombuffer(plane, dtype=dtype, count=rows * stride)
    arr = buf.reshape(rows, stride)[:, :row_elems]
    arr.flags.writeable = False
    return arr


def _views(vf, fmt: str) -> tuple[np.ndarray, ...]:
    w, h = vf.width, vf.height
    if fmt in ("rgb24", "bgr24"):
        p = _plane_view(vf.planes[0], h, w * 3, np.uint8)
        return (p.reshape(h, w, 3),)
    dtype = np.dtype("<u2") if fmt.endswith("_10") else np.uint8
    base = fmt[:4]
    cw, ch = {"i420": ((w + 1) // 2, (h + 1) // 2), "nv12": ((w + 1) // 2, (h + 1) // 2),
              "i422": ((w + 1) // 2, h), "i444": (w, h)}[base]
    y = _plane_view(vf.planes[0], h, w, dtype)
    if base == "nv12":
        return (y, _plane_view(vf.planes[1], ch, cw * 2, dtype))
    return (y, _plane_view(vf.planes[1], ch, cw, dtype), _plane_view(vf.planes[2], ch, cw, dtype))


def frame_from_av(vf, *, pts: float | None = None, orientation: Orientation | None = None,
                  sar: tuple[int, int] = (1, 1), fields: bool = False,
                  background: int = WHITE) -> Frame:
    """Wrap a decoded ``av.VideoFrame`` as a :class:`Frame` (zero-copy when the format is supported).

    ``pts`` defaults to ``vf.time`` (0.0 when unknown); ``orientation`` (coded -> display) to the
    frame's own display matrix (:func:`frame_orientation`: pass it for PNG/APNG frames, Note [side
    data PyAV cannot read safely]); ``IDENTITY`` keeps the coded picture.
    ``sar`` is the coded picture's sample aspect ratio (:func:`stream_sar`; PyAV does not expose
    the frame's own), turned with the picture. ``fields``: an interlaced frame is two fields (a
    video codec's frame), so it is judged by its top field (Note [interlaced frames]); a still
    image's interlacing (PNG's Adam7) is a transmission order and FFmpeg flags it the same way.
    ``background``: the grey level of the page a transparent frame is composited over (Note
    [transparent pictures]).
    """
    pix = vf.format.name
    coded_h = vf.height
    try:
        cs = int(vf.colorspace)
        cr = int(vf.color_range)
    except Exception:  # pragma: no cover - very old PyAV
        cs, cr = _CS_UNSPECIFIED, 0
    full = full_range_for(pix, cr)
    matrix = matrix_for(cs, coded_h)
    if orientation is None:
        orientation = frame_orientation(vf)
    interlaced = fields and bool(getattr(vf, "interlaced_frame", False)) and vf.height > 1
    sdr = frame_sdr(vf)
    if sdr is not None:  # HDR / BT.2020: the SDR BT.709 picture (engine/media/hdr.py)
        rgb, height, sar = _to_sdr(vf, pix, full, sdr, interlaced, sar)
        return _oriented(("rgb24", (rgb,), vf.width, height, sar), orientation, vf, pts, "bt601", True)

    if pix not in _PIX_FMTS or (matrix is None and not _PIX_FMTS[pix][0].startswith(("rgb", "bgr"))):
        target = "rgb24" if matrix is None else _conversion_target(vf.format)
        if format_has_alpha(vf.format):  # composited over white below (Note [transparent pictures])
            target = "rgba"
        src_cs = None
        if matrix is None and cs not in (0, 2, 3):
            src_cs = cs  # swscale applies the tagged matrix (BT.2020, SMPTE240M, ...)
        elif cs in (_CS_UNSPECIFIED, 3) and not vf.format.is_rgb:
            src_cs = 1 if coded_h >= 720 else 5  # our convention for untagged video
        src_range = 2 if full else 1
        try:
            if target in ("rgb24", "rgba"):
                vf = vf.reformat(format=target, src_colorspace=src_cs, src_color_range=src_range,
                                 dst_color_range=2)
            else:
                vf = vf.reformat(format=target, src_color_range=src_range, dst_color_range=src_range)
        except Exception as e:  # noqa: BLE001 - swscale refuses exotic formats
            raise UnsupportedMediaError(f"pixel format {pix!r} cannot be converted: {e}") from e
        if target == "rgba":
            planes, height, sar = _field(((flattened(vf.to_ndarray(), background),), vf.height, sar),
                                          interlaced)
            return _oriented(("rgb24", planes, vf.width, height, sar), orientation, vf, pts, "bt601", True)
        pix = vf.format.name
        if matrix is None:
            matrix = "bt709"  # irrelevant for rgb24
    fmt, forced_full = _PIX_FMTS[pix]
    full = full or forced_full
    if fmt in ("rgb24", "bgr24"):
        matrix, full = matrix or "bt601", True  # ignored for RGB; RGB samples are full range

    if not orientation.is_identity and not fmt.startswith(("rgb", "bgr")) and fmt[:4] != "i444":
        target = "yuv444p10le" if fmt.endswith("_10") else "yuv444p"
        rng = 2 if full else 1
        vf = vf.reformat(format=target, src_color_range=rng, dst_color_range=rng)
        fmt = "i444_10" if fmt.endswith("_10") else "i444"
    planes, height, sar = _field((_views(vf, fmt), vf.height, sar), interlaced)
    return _oriented((fmt, planes, vf.width, height, sar), orientation, vf, pts, matrix, full)


def frame_sdr(vf) -> SdrConversion | None:
    """How :func:`frame_from_av` maps the Y'CbCr frame ``vf`` to SDR BT.709, or None when it
    does not (SDR BT.709/BT.601, RGB formats)."""
    if vf.format.is_rgb:
        return None
    return sdr_conversion(vf, matrix_for(int(vf.colorspace), vf.height))


def _field(picture: tuple, interlaced: bool) -> tuple:
    """(planes, height, sar) of a coded picture, or of its top field when ``interlaced``.

    Note [interlaced frames]
    An interlaced frame weaves two fields taken 1/50 or 1/60 s apart: anything that moves shows
    as combs, which players remove by deinterlacing. A sampled frame is judged by its top field
    alone: every other row of every plane (4:2:0 chroma rows alternate between the fields too),
    a zero-copy view with twice the row stride, whose pixels are twice as tall (sar num:2 den;
    Note [sample aspect ratio] keeps the shown shape). Half the rows of a 480-1080 line frame still
    outnumber the model's 224, and nothing is interpolated.
    """
    planes, height, sar = picture
    if not interlaced:
        return picture
    g = math.gcd(sar[0], 2 * sar[1])
    return tuple(p[0::2] for p in planes), (height + 1) // 2, (sar[0] // g, 2 * sar[1] // g)


def _oriented(picture: tuple, orientation: Orientation, vf, pts: float | None, matrix: str,
              full: bool) -> Frame:
    """The Frame of ``picture`` = (format, planes, width, height, sar) turned upright (4:4:4 or RGB)."""
    fmt, planes, width, height, sar = picture
    if not orientation.is_identity:
        planes = tuple(orientation.apply(p) for p in planes)
        if orientation.transpose:
            width, height, sar = height, width, (sar[1], sar[0])
    if pts is None:
        t = vf.time
        pts = float(t) if t is not None else 0.0
    return Frame(format=fmt, planes=planes, width=width, height=height, matrix=matrix,
                 full_range=bool(full), pts=float(pts), sar=sar)


# Sample aspect ratios outside this range are taken for damage, not anamorphic video (the widest
# real ones are about 2:1, e.g. 1440x1080 HDV is 4:3).
SAR_RANGE = (Fraction(1, 4), Fraction(4, 1))


def stream_sar(stream) -> tuple[int, int]:
    """The sample aspect ratio of a PyAV video stream as (num, den), as FFmpeg's player takes it
    (the container's, else the codec's); (1, 1) when unknown or implausible (see SAR_RANGE)."""
    for owner in (stream, getattr(stream, "codec_context", None)):
        try:
            r = owner.sample_aspect_ratio
        except Exception:  # noqa: BLE001 - PyAV raises on some codecs' contexts
            continue
        if r is not None and r.numerator > 0 and r.denominator > 0:
            r = Fraction(r).limit_denominator(65535)
            if SAR_RANGE[0] <= r <= SAR_RANGE[1] and r.numerator <= 65535:
                return r.numerator, r.denominator
            return 1, 1
    return 1, 1


def _to_sdr(vf, pix: str, full: bool, sdr: SdrConversion, interlaced: bool,
            sar: tuple[int, int]) -> tuple[np.ndarray, int, tuple[int, int]]:
    """(H, W, 3) uint8 RGB: the SDR BT.709 picture of an HDR / BT.2020 frame (Note [HDR to SDR]),
    of its top field when interlaced (Note [interlaced frames]), with its height and sar."""
    from engine.ops.sdr import to_sdr

    if pix not in _PIX_FMTS:  # e.g. p010le, 12-bit: planar 4:2:0 / 4:2:2 / 4:4:4 at 8 or 10 bits
        rng = 2 if full else 1
        try:
            vf = vf.reformat(format=_conversion_target(vf.format), src_color_range=rng, dst_color_range=rng)
        except Exception as e:  # noqa: BLE001 - swscale refuses exotic formats
            raise UnsupportedMediaError(f"pixel format {pix!r} cannot be converted: {e}") from e
    fmt = _PIX_FMTS[vf.format.name][0]
    planes, height, sar = _field((_views(vf, fmt), vf.height, sar), interlaced)
    frame = Frame(format=fmt, planes=planes, width=vf.width, height=height, matrix=sdr.matrix,
                  full_range=bool(full), pts=0.0)
    return to_sdr(frame, transfer=sdr.transfer, primaries=sdr.primaries), height, sar


def frame_from_array(arr, *, pts: float = 0.0, channels: str = "rgb") -> Frame:
    """Wrap an ``(H, W, 3)`` uint8 RGB (or BGR with ``channels="bgr"``) array without copying."""
    if not isinstance(arr, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise InputError(f"image array must be uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image array must have shape (H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image array is empty: shape {arr.shape}")
    if channels not in ("rgb", "bgr"):
        raise InputError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    view = arr.view()
    view.flags.writeable = False
    return Frame(format=f"{channels}24", planes=(view,), width=int(arr.shape[1]),
                 height=int(arr.shape[0]), matrix="bt601", full_range=True, pts=float(pts))


_COEFFS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def page_views(first: list[Frame], pages: Sequence[str],
               build: Callable[[int], list[Frame]]) -> list[tuple[str, list[Frame]]]:
    """The same pictures over each page of ``pages`` (Note [transparent pictures]): ``first`` is
    them over ``pages[0]``, ``build(level)`` decodes them over the page of that grey level.
    ``[(page, frames), ...]`` when a page changes them (they are transparent), else ``[("",
    first)]``."""
    views = [(pages[0], first)] + [(page, build(BACKGROUNDS[page])) for page in pages[1:]]
    same = all(len(a.planes) == len(b.planes) and all(np.array_equal(p, q) for p, q in zip(a.planes, b.planes))
               for _, frames in views[1:] for a, b in zip(first, frames))
    return [("", first)] if same else views


def frame_to_rgb(frame: Frame) -> np.ndarray:
    """Reference (slow, numpy) conversion of a Frame to ``(H, W, 3)`` uint8 RGB.

    Chroma is upsampled by sample replication; meant for tests and debugging, not for inference.
    """
    fmt = frame.format
    if fmt in ("rgb24", "bgr24"):
        p = frame.planes[0].reshape(frame.height, frame.width, 3)
        return np.ascontiguousarray(p if fmt == "rgb24" else p[..., ::-1])
    ten = fmt.endswith("_10")
    scale = 4.0 if ten else 1.0
    y = frame.planes[0].astype(np.float32) / scale
    if fmt.startswith("nv12"):
        uv = frame.planes[1]
        u, v = uv[:, 0::2].astype(np.float32), uv[:, 1::2].astype(np.float32)
    else:
        u = frame.planes[1].astype(np.float32) / scale
        v = frame.planes[2].astype(np.float32) / scale
    H, W = y.shape
    ry, rx = -(-H // u.shape[0]), -(-W // u.shape[1])
    u = np.repeat(np.repeat(u, ry, axis=0), rx, axis=1)[:H, :W]
    v = np.repeat(np.repeat(v, ry, axis=0), rx, axis=1)[:H, :W]
    if frame.full_range:
        yn, un, vn = y / 255.0, (u - 128.0) / 255.0, (v - 128.0) / 255.0
    else:
        yn, un, vn = (y - 16.0) / 219.0, (u - 128.0) / 224.0, (v - 128.0) / 224.0
    kr, kb = _COEFFS[frame.matrix]
    kg = 1.0 - kr - kb
    r = yn + 2 * (1 - kr) * vn
    b = yn + 2 * (1 - kb) * un
    g = (yn - kr * r - kb * b) / kg
    rgb = np.stack([r, g, b], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
