"""Synthetic test media encoded with PyAV (no external tools, nothing copyrighted).

Used by ``scripts/make_samples.py``, ``bench/decode.py`` and the tests.  Every video frame carries its
own index as a row of black/white blocks (:func:`read_index` recovers it from the luma plane), so a
test can tell exactly which source frame a decoder returned.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

__all__ = [
    "INDEX_BITS", "pattern_rgb", "read_index", "encode_video", "encode_picture", "encode_audio", "encode_image",
    "ScaleGraph", "FFMPEG_TO_SDR",
    "display_matrix", "set_mp4_rotation", "hls_playlist", "ffconcat_list", "tone", "cache_dir",
]

INDEX_BITS = 12


def pattern_rgb(i: int, width: int, height: int, fps: float = 30.0) -> np.ndarray:
    """A moving colour test pattern with frame index ``i`` coded in the top quarter."""
    y = np.arange(height)[:, None]
    x = np.arange(width)[None, :]
    t = i / fps
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1) + int(40 * t)) % 256
    img[..., 1] = y * 255 // max(height - 1, 1)
    img[..., 2] = (128 + 100 * np.sin((x + y) / np.float32(23.0) + np.float32(2 * t))).astype(np.uint8)
    # a moving white square
    s = max(4, min(width, height) // 8)
    cx = int((width - s) * (0.5 + 0.5 * math.sin(t * 1.7)))
    cy = int(height // 4 + (height * 3 // 4 - s) * (0.5 + 0.5 * math.cos(t * 1.3)))
    img[cy:cy + s, cx:cx + s] = 255
    # frame index: INDEX_BITS blocks across the top quarter, MSB first
    bh = max(2, height // 4)
    bw = width // INDEX_BITS
    for bit in range(INDEX_BITS):
        on = (i >> (INDEX_BITS - 1 - bit)) & 1
        img[:bh, bit * bw:(bit + 1) * bw] = 235 if on else 16
    return img


def read_index(luma: np.ndarray) -> int:
    """Frame index coded by :func:`pattern_rgb`, read from a luma (or grey) plane in display
    orientation (8- or 10-bit)."""
    y = np.asarray(luma, dtype=np.float32)
    if y.max() > 255:
        y = y / 4.0
    h, w = y.shape[:2]
    bh = max(2, h // 4)
    bw = w // INDEX_BITS
    v = 0
    for bit in range(INDEX_BITS):
        blk = y[bh // 4: bh * 3 // 4, bit * bw + bw // 4: bit * bw + bw * 3 // 4]
        v = (v << 1) | int(blk.mean() > 128)
    return v


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """Float32 sine ``(channels, n)`` with amplitude 0.5."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[None, :], channels, axis=0)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def _keeps_thread_scheduling(fn):
    """Restore the calling thread's scheduling policy and priority after ``fn``.

    SVT-AV1 (``libsvtav1``) switches the thread that opens the encoder to SCHED_FIFO priority 99
    whenever it is allowed to (as root), and every thread that thread starts afterwards inherits
    it. In a test run that was the pytest main thread, so every later Session's item workers,
    batchers and ONNX Runtime threads ran real-time on 2 cores: a busy thread of them starves the
    others (and the kernel threads) instead of sharing the core.
    """
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        except (AttributeError, OSError):  # no POSIX scheduling here
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        finally:
            try:
                if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
                    os.sched_setscheduler(0, policy, param)
            except OSError:
                pass

    return call


@_keeps_thread_scheduling
def encode_video(
    out: str | os.PathLike | None = None,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    frames: int | None = None,
    duration: float = 2.0,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    gop: int | None = None,
    bframes: int | None = None,
    pts: Sequence[float] | None = None,
    audio: bool = False,
    audio_codec: str = "aac",
    audio_rate: int = 48000,
    audio_freq: float = 440.0,
    options: dict | None = None,
    colorspace: int | None = None,
    color_range: int | None = None,
    preset: str = "ultrafast",
    container_options: dict | None = None,
    grain: int = 0,
) -> bytes:
    """Encode the test pattern; returns the bytes (and writes ``out`` if given).

    ``pts`` (seconds, increasing) makes a variable-frame-rate clip with those presentation times;
    ``gop`` is the keyframe interval in frames (x264/x265 ``keyint``, scene cut disabled).
    ``container_options`` go to the muxer (e.g. ``{"movflags": "faststart"}``).
    ``grain`` adds per-frame random noise of that amplitude (camera-like texture, so that
    predicted frames carry real residual and decode costs resemble natural video).
    """
    n = frames if frames is not None else int(round(duration * fps))
    if pts is not None:
        n = len(pts)
    copts = dict(container_options or {})
    tmp = None
    if "faststart" in copts.get("movflags", ""):
        # the faststart pass re-reads the output, which needs a real file
        import tempfile
        fd, tmp = tempfile.mkstemp(suffix="." + container)
        os.close(fd)
        oc = av.open(tmp, "w", format=container, options=copts)
    else:
        buf = io.BytesIO()
        oc = av.open(buf, "w", format=container, options=copts)
    tb = Fraction(1, 90000) if pts is not None else Fraction(1, fps)
    vs = oc.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    vs.time_base = tb
    vs.codec_context.time_base = tb
    opts = {}
    if codec == "libx264":
        opts["preset"] = preset
        params = ["scenecut=0"]
        if gop is not None:
            params += [f"keyint={gop}", f"min-keyint={gop}"]
        if bframes is not None:
            params.append(f"bframes={bframes}")
        opts["x264-params"] = ":".join(params)
    elif codec == "libx265":
        opts["preset"] = preset
        params = ["log-level=error", "scenecut=0"]
        if gop is not None:
            params += [f"keyint={gop}", f"min-keyint={gop}"]
        opts["x265-params"] = ":".join(params)
    elif gop is not None:
        vs.codec_context.gop_size = gop
    if codec in ("libvpx", "libvpx-vp9"):
        opts.setdefault("deadline", "realtime")
        opts.setdefault("cpu-used", "8")
    opts.update(options or {})
    vs.options = opts
    if colorspace is not None:
        vs.codec_context.colorspace = colorspace
    if color_range is not None:
        vs.codec_context.color_range = color_range
    as_ = None
    if audio:
        as_ = oc.add_stream(audio_codec, rate=audio_rate)
        as_.layout = "mono"
    rng = np.random.default_rng(1234)
    for i in range(n):
        img = pattern_rgb(i, width, height, fps)
        if grain:
            noise = rng.integers(-grain, grain + 1, size=(height, width, 1), dtype=np.int16)
            img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if pix_fmt != "rgb24":
            kw = {}
            if colorspace is not None:
                kw["dst_colorspace"] = colorspace
            if color_range is not None:
                kw["dst_color_range"] = color_range
            frame = frame.reformat(format=pix_fmt, **kw)
        frame.pts = int(round(pts[i] / tb)) if pts is not None else i
        frame.time_base = tb
        for p in vs.encode(frame):
            oc.mux(p)
    for p in vs.encode():
        oc.mux(p)
    if as_ is not None:
        seconds = (pts[-1] + 1.0 / fps) if pts is not None else n / fps
        _encode_audio_stream(oc, as_, tone(seconds, audio_rate, audio_freq), audio_rate)
    oc.close()
    if tmp is not None:
        data = Path(tmp).read_bytes()
        os.unlink(tmp)
    else:
        data = buf.getvalue()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def encode_picture(rgb: np.ndarray | av.VideoFrame, *, frames: int = 2, codec: str = "libx264",
                   pix_fmt: str = "yuv420p", options: dict | None = None, colorspace: int | None = None,
                   color_range: int | None = None, sar: Fraction | None = None) -> bytes:
    """``frames`` copies of one (H, W, 3) uint8 RGB picture as an MP4 clip (25 fps), converted to
    ``pix_fmt`` with the given matrix and range tags (or of a VideoFrame already in ``pix_fmt``);
    ``sar`` is written as the sample aspect ratio."""
    h, w = (rgb.height, rgb.width) if isinstance(rgb, av.VideoFrame) else rgb.shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as oc:
        vs = oc.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.options = dict(options or {})
        cc = vs.codec_context
        if colorspace is not None:
            cc.colorspace = colorspace
        if color_range is not None:
            cc.color_range = color_range
        if sar is not None:
            cc.sample_aspect_ratio = sar
        kw = {k: v for k, v in (("dst_colorspace", colorspace), ("dst_color_range", color_range)) if v is not None}
        for i in range(frames):
            f = rgb if isinstance(rgb, av.VideoFrame) else av.VideoFrame.from_ndarray(
                rgb, format="rgb24").reformat(format=pix_fmt, **kw)
            f.pts = i
            for p in vs.encode(f):
                oc.mux(p)
        for p in vs.encode():
            oc.mux(p)
    return buf.getvalue()


# FFmpeg 8's colour-managed HDR -> SDR (relative colorimetric, its default intent): the reference
# that engine.ops.sdr is compared and timed against
FFMPEG_TO_SDR = "out_transfer=bt709:out_primaries=bt709:out_color_matrix=bt709"


class ScaleGraph:
    """FFmpeg's ``scale`` filter (colour managed in FFmpeg 8) as a PyAV user builds it: a filter
    graph for frames shaped like ``first``, into ``out_format``, reused for every frame pushed.
    The graph lives as long as this object (PyAV's filter contexts die with their graph)."""

    def __init__(self, first: av.VideoFrame, options: str, out_format: str) -> None:
        self.graph = av.filter.Graph()
        self.src = self.graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                                         time_base=Fraction(1, 30))
        scale, fmt = self.graph.add("scale", options), self.graph.add("format", out_format)
        self.sink = self.graph.add("buffersink")
        self.src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(self.sink)
        self.graph.configure()
        self._pts = 0

    def __call__(self, vf: av.VideoFrame) -> av.VideoFrame:
        vf.pts, vf.time_base = self._pts, Fraction(1, 30)
        self._pts += 1
        self.src.push(vf)
        return self.sink.pull()


def _encode_audio_stream(oc, stream, samples: np.ndarray, rate: int) -> None:
    """Encode float samples [channels, n] into ``stream`` of ``oc``, flushing resampler and encoder."""
    layout = _layout(samples.shape[0])
    cc = stream.codec_context
    fmt = cc.format.name if cc.format is not None else "fltp"
    fs = cc.frame_size or 1024
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)

    def mux(frames) -> None:
        for rf in frames:
            for p in stream.encode(rf):
                oc.mux(p)

    for pos in range(0, samples.shape[1], fs):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, pos:pos + fs]),
                                        format="fltp", layout=layout)
        af.sample_rate = rate
        af.pts = pos
        af.time_base = Fraction(1, rate)
        mux(resampler.resample(af))
    mux(resampler.resample(None))
    for p in stream.encode(None):
        oc.mux(p)


def encode_audio(
    out: str | os.PathLike | None = None,
    samples: np.ndarray | None = None,
    *,
    rate: int = 48000,
    seconds: float = 1.0,
    freq: float = 440.0,
    codec: str = "aac",
    container: str = "mp4",
    channels: int = 1,
) -> bytes:
    """Encode mono float samples (default: a sine tone) as an audio-only file."""
    if samples is None:
        samples = tone(seconds, rate, freq, 1)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.shape[0] != channels:
        samples = np.repeat(samples[:1], channels, axis=0)
    buf = io.BytesIO()
    oc = av.open(buf, "w", format=container)
    st = oc.add_stream(codec, rate=rate)
    st.layout = _layout(channels)
    _encode_audio_stream(oc, st, samples, rate)
    oc.close()
    data = buf.getvalue()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def encode_image(out: str | os.PathLike | None = None, *, width: int = 320, height: int = 240,
                 fmt: str = "JPEG", mode: str = "RGB", frames: int = 1, **save_kw) -> bytes:
    """Encode the test pattern as a still image with Pillow (JPEG, PNG, WEBP, GIF)."""
    from PIL import Image

    imgs = [Image.fromarray(pattern_rgb(i, width, height)).convert(mode) for i in range(frames)]
    buf = io.BytesIO()
    if frames > 1:
        save_kw.setdefault("save_all", True)
        save_kw.setdefault("append_images", imgs[1:])
        save_kw.setdefault("duration", 100)
    imgs[0].save(buf, format=fmt, **save_kw)
    data = buf.getvalue()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def display_matrix(degrees: float, hflip: bool = False, vflip: bool = False) -> list[int]:
    """FFmpeg's display matrix (9 ints, 16.16 fixed point, w 2.30) turning a picture ``degrees``
    counter-clockwise as ``frame.rotation`` reports it (av_display_rotation_set), then flipped as
    av_display_matrix_flip does (negating the first / second column)."""
    rad = math.radians(degrees)
    c, s = math.cos(rad), math.sin(rad)
    fx = lambda v: int(round(v * (1 << 16)))  # noqa: E731
    m = [fx(c), fx(-s), 0, fx(s), fx(c), 0, 0, 0, 1 << 30]
    for i in range(9):
        if (hflip and i % 3 == 0) or (vflip and i % 3 == 1):
            m[i] = -m[i]
    return m


def set_mp4_rotation(data: bytes, degrees: int = 0, matrix: Sequence[int] | None = None) -> bytes:
    """Patch the video track header (tkhd) matrix of an MP4 so players rotate it by ``degrees``
    counter-clockwise (FFmpeg's display-matrix convention, as ``frame.rotation`` reports), or
    write ``matrix`` (see :func:`display_matrix`)."""
    b = bytearray(data)
    pos = 0
    patched = False
    while True:
        i = b.find(b"tkhd", pos)
        if i < 0:
            break
        version = b[i + 4]
        # header: version/flags(4) + times/ids: v0 = 4+4+4+4+4, v1 = 8+8+4+4+8
        off = i + 4 + 4 + (20 if version == 0 else 32) + 8 + 2 + 2 + 2 + 2
        width = struct.unpack(">I", b[off + 36:off + 40])[0] >> 16
        if width:  # audio tracks have width 0
            vals = list(matrix) if matrix is not None else display_matrix(degrees)
            b[off:off + 36] = struct.pack(">9i", *vals)
            patched = True
        pos = i + 4
    if not patched:
        raise ValueError("no video tkhd box found")
    return bytes(b)


def _remuxed(sources: Sequence[tuple[object, list]]) -> bytes:
    """The listed streams of open input containers, ``[(container, [stream, ...]), ...]``,
    remuxed into one Matroska file (one demux pass per input)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as oc:
        outs = [{st.index: oc.add_stream_from_template(st) for st in streams} for _, streams in sources]
        for (c, streams), out in zip(sources, outs):
            for p in c.demux(*streams):
                if p.dts is not None:
                    p.stream = out[p.stream.index]
                    oc.mux(p)
    return buf.getvalue()


def with_subtitles(video: bytes, captions: Sequence[tuple[float, float, str]]) -> bytes:
    """``video`` (its video stream) remuxed into Matroska with a SubRip track of ``captions``
    ``(start s, end s, text)``."""
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    srt = "".join(f"{i + 1}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(captions))
    with av.open(io.BytesIO(video)) as src, av.open(io.BytesIO(srt.encode()), format="srt") as sub:
        return _remuxed([(src, [src.streams.video[0]]), (sub, [sub.streams.subtitles[0]])])


def with_audio_track(media: bytes, sound: bytes) -> bytes:
    """The streams of ``media`` remuxed into Matroska with the first sound stream of ``sound``
    added as one more audio track."""
    with av.open(io.BytesIO(media)) as a, av.open(io.BytesIO(sound)) as b:
        return _remuxed([(a, [*a.streams.video, *a.streams.audio]), (b, [b.streams.audio[0]])])


def hls_playlist(target: str) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n").encode()


def ffconcat_list(*targets: str) -> bytes:
    return ("ffconcat version 1.0\n" + "".join(f"file '{t}'\n" for t in targets)).encode()


def cache_dir() -> Path:
    """Cache folder for generated (uncommitted) media: $ENGINE_MEDIA_CACHE or ~/.cache/..."""
    d = Path(os.environ.get("ENGINE_MEDIA_CACHE",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                            / "moderation-engine" / "media"))
    d.mkdir(parents=True, exist_ok=True)
    return d
