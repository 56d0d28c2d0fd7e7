"""Video decoding with sparse frame sampling.

Strategies (``DecodedVideo.strategy``)
--------------------------------------
``"all"``        decode every frame (``Sampling(mode="all")``), up to ``Sampling.max_frames``.
``"keyframes"``  decode only keyframes (``codec_context.skip_frame = "NONKEY"`` and only the chosen
                 keyframe packets are sent to the decoder).  Used for ``mode="keyframes"`` and for
                 ``fps``/``uniform`` sampling when the measured keyframe spacing is at least as
                 dense as the sampling interval: each target time then takes its nearest keyframe
                 (at most half a GOP away).
``"seek"``       keyframes are sparser than the sampling interval: for each target the demuxer
                 seeks (``backward=True, any_frame=False``) to the keyframe before it, unless the
                 decoder is already between that keyframe and the target, and decodes forward to
                 the frame on screen at the target: the last one with ``pts <= target`` (exact
                 sampling; a frame held for seconds, as animations and screen recordings hold
                 them, is judged at every target it covers).  On the way the decoder skips the
                 frames nothing refers to (Note [skipping non-reference frames]).

The keyframe spacing and every frame's presentation time are measured by a demux-only pass over the
packets (``packet.is_keyframe``/``packet.pts``), which costs no decoding.  Timestamps are
``frame.time`` (correct for variable frame rate) minus the stream's start time, i.e. the pts that
was actually decoded, so ``timestamps[i] == frames[i].pts``.

``DecodedVideo.decoded_frames`` counts the frames FFmpeg decoded: packets handed to the decoder,
including frames still in flight when a seek discards them and non-reference frames it skipped
(tests use it to prove that sparse sampling does not decode the whole clip).
``Limits.max_frames`` bounds that count.
Memory: each returned Frame keeps its decoded picture alive (about 3 MB per 1080p frame).

Note [seeking by decode time]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
A seek asks for the keyframe at or before a time. MPEG-TS has no index: FFmpeg searches the file
for a packet by its decode time and does not check that it is a keyframe, so seeking to a
keyframe's presentation time (later than its decode time when frames are reordered) landed on the
packet after it, and the decoder, without its keyframe, dropped that GOP. H.264 with B-frames in
MPEG-TS (broadcast, IPTV, HLS segments) then failed whole ("no frame could be decoded"), and MPEG-2
in MPEG-TS lost frames and was reported incomplete. For such demuxers (:data:`SEEK_BY_DECODE_TIME`)
seeks go to the keyframe's decode time, from the index pass (``StreamIndex.seek_time``). Indexed
containers (MP4, MOV, Matroska, AVI) keep presentation times: there a decode time would land on the
keyframe before (2.3x the frames decoded for 4 exact samples of a B-frame clip, measured).

Note [skipping non-reference frames]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Seeking decodes every frame from the keyframe before a target up to the target, though only the
target is kept. Most of those frames are needed as references by the frames after them, but
B-frames usually are not (131 of the 300 frames of the decode suite's x264 clip; none in streams
without B-frames).
While seeking, the decoder is told to skip non-reference frames (``skip_frame = "NONREF"``) for
every packet except those of the wanted frames, whose pts the index pass knows (each packet's mode
is set before it is sent, so frame threading sees it; a packet without a pts keeps the mode of the
one before, e.g. the second field of an interlaced frame). Every reference frame is still decoded,
so the wanted frames come out bit-identical. Only for H.264 and HEVC (:data:`SKIPS_NONREF`), where
it was tested and measured: AV1 (libdav1d) lost sampled frames with it (a shown frame can repeat a
hidden one; VP8/VP9 have the same kind of frames), and the MPEG-2 and MPEG-4 Part 2 decoders skipped
nothing in the tests. Measured on the 2-core VM: the decode suite's
``8-exact÷8-exact-loop`` (the engine against the seek-and-decode loop a PyAV user writes, same
frames; quick, 480p) H.264 1.88x, HEVC 1.14x, and VP9 1.08x, AV1 1.00x without skipping (the engine
also stops feeding the decoder at the target); a one-off interleaved A/B against the build before
this change, 8 and 10 exact frames of 10 s 1080p clips: H.264 1.33-1.44x, HEVC 1.19-1.49x.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import av

from engine.errors import CorruptMediaError, EmptyMediaError, InputError, UnsupportedMediaError

from .alpha import BACKGROUNDS, format_has_alpha
from .frame import Frame, frame_from_av, frame_sdr, page_views, stream_sar
from .heif_stills import is_tiled
from .limits import DEFAULT_LIMITS, Deadline, Limits
from .orientation import frame_orientation
from .source import (Packets, check_codec, demuxer_names, is_cover, media_errors, open_container,
                     read_source, wrap_av_error)
from .webp_animation import decode_webp_animation, is_animated_webp

__all__ = ["Sampling", "DecodedVideo", "decode_video", "SAMPLING_MODES", "open_video_stream", "StreamIndex",
           "index_stream", "SamplePlan", "plan_samples", "shot_starts", "FrameDecoder"]

SAMPLING_MODES = ("fps", "uniform", "keyframes", "all")


@dataclass(frozen=True)
class Sampling:
    """Which frames to take.

    mode "fps": ``value`` frames per second (targets at ``k / value`` s);
    "uniform": ``value`` frames at the centres of equal segments of the clip;
    "keyframes": every keyframe; "all": every frame.
    ``max_frames`` caps the frames returned: fps/uniform/keyframe schedules longer than that are
    thinned evenly over the whole clip (coverage is kept); "all" stops after ``max_frames``.
    ``exact=True`` (fps/uniform) always takes the frame on screen at each target time (seek
    strategy) instead of the nearest keyframe, at the cost of decoding inside GOPs.
    ``shots=True`` (fps/uniform) also takes the keyframes that start a shot (Note [shot starts]),
    within ``max_frames``.
    """

    mode: str = "fps"
    value: float = 1.0
    max_frames: int | None = None
    exact: bool = False
    shots: bool = True

    def __post_init__(self):
        if self.mode not in SAMPLING_MODES:
            raise InputError(f"sampling mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        if self.mode in ("fps", "uniform"):
            if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
                raise InputError(f"sampling value must be > 0 for mode {self.mode!r}, got {self.value!r}")
            if self.mode == "uniform" and int(self.value) != self.value:
                raise InputError(f"uniform sampling needs an integer frame count, got {self.value!r}")
        if self.max_frames is not None and (int(self.max_frames) != self.max_frames or self.max_frames < 1):
            raise InputError(f"max_frames must be a positive integer or None, got {self.max_frames!r}")


@dataclass
class DecodedVideo:
    frames: list[Frame]
    timestamps: list[float]         # pts (s, from the stream start) of the frames actually used
    duration: float                 # seconds (0.0 when unknown)
    fps: float                      # average frame rate (0.0 when unknown)
    width: int                      # display orientation
    height: int
    rotation: int                   # degrees counter-clockwise applied for display (0/90/180/270),
                                    # then mirrored left-right when `mirrored` (Note [display
                                    # orientation])
    decoded_frames: int             # frames FFmpeg decoded (packets sent to the decoder)
    strategy: str                   # "all" | "keyframes" | "seek"
    codec: str = ""
    keyframe_interval: float | None = None   # largest gap between keyframes (s), when measured
    decode_errors: int = 0          # packets that failed to demux/decode (frames still returned)
    targets: list[float] = field(default_factory=list)  # requested sample times (fps/uniform)
    complete: bool = True           # False when frames the index promised did not decode
                                    # (truncated/damaged input): callers may reject partial media
    keepalive: Any = None           # what the frames' memory belongs to (the NVDEC decoder and its
                                    # frames: engine.media.nvdec), held as long as the result
    mirrored: bool = False
    sar: tuple[int, int] = (1, 1)   # sample aspect ratio of the frames (anamorphic video: pixels
                                    # sar[0]:sar[1] wide:high, the preprocessing keeps the shown shape)
    interlaced: bool = False        # the frames are the top fields of interlaced pictures (Note
                                    # [interlaced frames]: half the rows, sar with twice the height)
    hdr: str = ""                   # "pq" | "hlg" | "sdr" (an SDR signal in BT.2020): the frames
                                    # were mapped to SDR BT.709 (Note [HDR to SDR]); "" otherwise
    pages: list[tuple[str, list[Frame]]] = field(default_factory=list)
                                    # transparent frames over each page asked for, [(page, frames)]
                                    # (the first: ``frames``); empty for opaque ones (Note
                                    # [transparent pictures])
    shots: list[float] = field(default_factory=list)  # timestamps of shot starts sampled besides
                                    # the targets (Note [shot starts])

    def picture_facts(self) -> dict[str, Any]:
        """What decoding did to the pictures, the defaults left out: ``rotation`` (degrees),
        ``mirrored``, ``sar`` [num, den], ``interlaced``, ``hdr`` (for a Verdict's ``media``)."""
        facts = {"rotation": self.rotation, "mirrored": self.mirrored, "sar": list(self.sar),
                 "interlaced": self.interlaced, "hdr": self.hdr}
        default = {"rotation": 0, "mirrored": False, "sar": [1, 1], "interlaced": False, "hdr": ""}
        return {k: v for k, v in facts.items() if v != default[k]}


SEEK_BY_DECODE_TIME = frozenset({"mpegts"})  # demuxers without a seek index (Note [seeking by decode time])
# decoders whose non-reference frames are skipped on the way to a target (Note [skipping
# non-reference frames]); not AV1, VP8, VP9: a shown frame there may be a hidden one's repeat
SKIPS_NONREF = frozenset({"h264", "hevc"})
# codecs whose "interlaced" frames are whole pictures sent in an interleaved order (PNG's Adam7,
# GIF's row passes), not two fields (Note [interlaced frames])
STILL_INTERLACE = frozenset({"png", "apng", "gif"})


def _video_stream(container):
    if not container.streams:
        raise CorruptMediaError("no streams found (truncated or not media)")
    if is_tiled(container):
        raise UnsupportedMediaError("a tiled HEIF/AVIF still image, not a video: decode it as an image "
                                    "(Note [HEIF and AVIF stills])")
    for s in container.streams.video:
        if not is_cover(s):
            return s
    raise EmptyMediaError("input has no video stream")


def _stream_times(c, vs) -> tuple[float, float, float]:
    tb = vs.time_base
    start = float(vs.start_time * tb) if vs.start_time is not None and tb else 0.0
    tagged = _tagged_duration(vs)
    if vs.duration is not None and tb:
        dur = float(vs.duration * tb)
    elif tagged is not None:  # Matroska keeps each stream's length in a tag; the container's
        dur = tagged          # runs on with a longer sound track, which made a whole video "truncated"
    elif c.duration:
        dur = c.duration / 1_000_000
    else:
        dur = 0.0
    rate = vs.average_rate or vs.guessed_rate or vs.base_rate
    fps = float(rate) if rate else 0.0
    return start, dur, fps


def _tagged_duration(vs) -> float | None:
    """A stream's ``DURATION`` tag ("HH:MM:SS.fraction", Matroska) in seconds, else None."""
    try:
        h, m, s = str(vs.metadata.get("DURATION", "")).split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except (ValueError, TypeError, AttributeError):
        return None


def _scan(c, vs, deadline: Deadline) -> tuple[list[float], list[float], list[float], dict[float, float],
                                             float | None, int]:
    """Demux-only pass: sorted presentation times of all frames and of the keyframes, the sorted
    decode times, each keyframe's decode time by its presentation time (seconds), and when the
    last frame stops being shown (from the packets' durations; None without them)."""
    tb = vs.time_base
    times: list[float] = []
    keys: list[float] = []
    decode: list[float] = []
    key_decode: dict[float, float] = {}
    shown_until: float | None = None
    packets = Packets(c, vs, deadline)
    for p in packets:
        t = p.pts if p.pts is not None else p.dts
        if t is None or p.size == 0:
            continue
        ts = float(t * tb)
        if p.duration:
            shown_until = max(shown_until or ts, float((t + p.duration) * tb))
        times.append(ts)
        decode.append(float(p.dts * tb) if p.dts is not None else ts)
        if p.is_keyframe:
            keys.append(ts)
            key_decode[ts] = decode[-1]
    times.sort()
    keys.sort()
    decode.sort()
    return times, keys, decode, key_decode, shown_until, packets.errors


def _thin(items: Sequence, cap: int | None) -> Sequence:  # a list, or a range of indices
    if cap is None or len(items) <= cap:
        return items
    if cap == 1:
        return [items[len(items) // 2]]
    n = len(items)
    idx = sorted({round(i * (n - 1) / (cap - 1)) for i in range(cap)})
    return [items[i] for i in idx]


def _targets(sampling: Sampling, first: float, last: float, frame_dur: float,
             end: float | None = None) -> tuple[list[float], float]:
    """Target times (absolute stream seconds), at most ``sampling.max_frames`` of them spread as
    :func:`_thin` spreads a list (picked by index: the whole schedule is never built), and the
    sampling interval. ``first``/``last``: the first and last frame's start; ``end``: when the
    last frame stops being shown, if known. fps targets run on while the last frame is shown, not
    only up to where it starts: a GIF holds its last frame, often for seconds (judged up to one
    interval past its start)."""
    if sampling.mode == "fps":
        interval = 1.0 / sampling.value
        hold = min(max(end - last, 0.0) if end is not None else frame_dur, interval)  # last frame on screen
        n = max(int(math.floor((last - first) / interval + 1e-9)) + 1,  # targets up to the last start
                # and on while it is shown, but for the last quarter frame (timestamp rounding)
                int(math.ceil((last + hold - 0.25 * frame_dur - first) / interval)))
        return [first + k * interval for k in _thin(range(max(n, 1)), sampling.max_frames)], interval
    k = int(sampling.value)
    span = max(last + frame_dur - first, frame_dur)
    interval = span / k
    return [first + (i + 0.5) * interval for i in _thin(range(k), sampling.max_frames)], interval


class FrameDecoder:
    """Sends packets of one stream to its decoder, counting packets, frames and errors, honouring
    limits.  ``sent`` (packets handed to the decoder, i.e. frames decoded, including frames still
    in flight when a seek or drain discards them) is reported as ``decoded_frames``."""

    def __init__(self, c, vs, limits: Limits, deadline: Deadline):
        self.c, self.vs, self.limits, self.deadline = c, vs, limits, deadline
        self.sent = 0
        self.decoded = 0
        self.errors = 0
        # pts of the frames to output; the decoder may skip other non-reference frames (Note
        # [skipping non-reference frames]). None: decode every packet sent.
        self.wanted: set[int] | None = None
        self._skip = "DEFAULT"

    def _set_skip(self, mode: str) -> None:
        if mode != self._skip:
            self.vs.codec_context.skip_frame = mode
            self._skip = mode

    def _decode(self, packet) -> list:
        self.sent += 1
        self.limits.check_frames(self.sent)
        if self.wanted is not None and packet.pts is not None:
            self._set_skip("DEFAULT" if packet.pts in self.wanted else "NONREF")
        try:
            out = self.vs.decode(packet)
        except av.error.FFmpegError:
            self.errors += 1
            return []
        self.decoded += len(out)
        return out

    def frames(self, want=None, done=None) -> Iterator[Any]:
        """Decode forward from the current demuxer position.  ``want(packet)`` filters packets;
        ``done(packet)`` (checked after each packet sent) ends the pass by draining the decoder."""
        packets = Packets(self.c, self.vs, self.deadline)
        for p in packets:
            if p.size == 0 and p.pts is None and p.dts is None:
                yield from self.flush()
                return
            if want is not None and not want(p):
                continue
            yield from self._decode(p)
            if done is not None and done(p):
                yield from self.flush()
                return
        if packets.errors:  # the demuxer gave up: drain what the decoder holds
            self.errors += packets.errors
            yield from self.flush()

    def flush(self) -> list:
        try:
            out = self.vs.decode(None)
        except av.error.FFmpegError:
            self.errors += 1
            return []
        self.decoded += len(out)
        return out

    def seek(self, t: float) -> None:
        """Seek to the keyframe at or before ``t`` (s); PyAV flushes the decoder."""
        tb = self.vs.time_base
        try:
            self.c.seek(int(math.floor(t / tb)), stream=self.vs, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise wrap_av_error(e, "seek") from None


def first_picture(c, vs, t: float, limits: Limits, deadline: Deadline) -> Any:
    """The first picture decoded from the keyframe at or before ``t`` (s; an ``av.VideoFrame``),
    None when nothing decodes."""
    dec = FrameDecoder(c, vs, limits, deadline)
    dec.seek(t)
    frames = dec.frames()
    try:
        return next(frames, None)
    finally:
        frames.close()


def _ftime(f, tb, fallback: float) -> float:
    """Presentation time of a decoded frame in seconds (pts, else dts, else ``fallback``)."""
    ftb = f.time_base or tb
    if f.pts is not None:
        return float(f.pts * ftb)
    if f.dts is not None:
        return float(f.dts * ftb)
    return fallback


def decode_video(source: Any, sampling: Sampling | None = None, limits: Limits | None = None, *,
                 backend: str = "pyav", backgrounds: tuple[str, ...] = ("white",)) -> DecodedVideo:
    """Decode sampled frames of the first video stream of ``source``.

    ``backend="decord"`` uses the optional decord reader (rgb24 frames, exact seeking).
    Transparent frames (animated stickers) are composited over the first page of ``backgrounds``
    ("white", "black"); with more than one, ``DecodedVideo.pages`` holds them over each (Note
    [transparent pictures]).
    """
    sampling = sampling or Sampling()
    limits = limits or DEFAULT_LIMITS
    if backend == "decord":
        from .decord_source import decode_video_decord
        return decode_video_decord(source, sampling, limits)
    if backend != "pyav":
        raise InputError(f"unknown video backend {backend!r} (use 'pyav' or 'decord')")
    deadline = limits.deadline()
    opened = read_source(source, limits)
    if is_animated_webp(opened.fileobj):
        with opened, media_errors("video"):
            return decode_webp_animation(opened.fileobj, sampling, limits, deadline, backgrounds)
    with media_errors("video"), open_container(opened, limits) as c:
        return _decode(c, sampling, limits, deadline, backgrounds)


def open_video_stream(c, limits: Limits):
    """The first video stream of an open container, with the checks every decoder applies before
    decoding: codec allow-list, picture size and duration limits. Returns
    ``(stream, codec, start, duration, fps)``."""
    vs = _video_stream(c)
    codec = check_codec(vs)
    cc = vs.codec_context
    limits.check_pixels(cc.width, cc.height)
    start, duration, fps = _stream_times(c, vs)
    limits.check_duration(duration or None)
    return vs, codec, start, duration, fps


@dataclass(frozen=True)
class StreamIndex:
    """What the demux-only pass (:func:`index_stream`) measured of one video stream."""

    times: list[float]             # sorted presentation times of every frame (stream seconds)
    keys: list[float]              # sorted presentation times of the keyframes
    errors: int                    # demuxer errors (the pass ended early)
    frame_dur: float               # seconds per frame (from the rate, else measured)
    duration: float                # the declared duration, else the measured one
    short: bool                    # packets end well before the declared duration: truncated
    key_gap: float | None          # largest gap between keyframes (s)
    decode_times: list[float]      # sorted decode times (dts, else pts) of the same packets
    key_decode: dict[float, float] = field(default_factory=dict)  # keyframe pts -> its dts
    seek_by_decode: bool = False   # the demuxer searches by decode time (Note [seeking by decode time])
    end: float | None = None       # when the last frame stops being shown (stream seconds), if known

    def seek_time(self, key: float) -> float:
        """Where to seek for the keyframe presented at ``key`` (Note [seeking by decode time])."""
        return min(key, self.key_decode.get(key, key)) if self.seek_by_decode else key

    def first_seek_time(self) -> float:
        """Where to seek to decode from the stream's first keyframe (its first frame without one)."""
        return self.seek_time(self.keys[0]) if self.keys else self.times[0]


def index_stream(c, vs, start: float, duration: float, fps: float, limits: Limits,
                 deadline: Deadline) -> StreamIndex:
    """Demux-only pass over the packets of ``vs`` (no decoding): frame and keyframe times.
    ``start``, ``duration``, ``fps``: from :func:`open_video_stream`."""
    times, keys, decode, key_decode, shown_until, scan_err = _scan(c, vs, deadline)
    if keys and times and times[0] < keys[0]:
        # frames shown before the first keyframe cannot be decoded (a recording or capture cut
        # mid-GOP): sampling starts at the first keyframe instead of calling the video incomplete
        times = times[bisect.bisect_left(times, keys[0]):]
    if not times:
        raise CorruptMediaError("video stream holds no packets")
    frame_dur = (1.0 / fps) if fps else ((times[-1] - times[0]) / max(len(times) - 1, 1) or 0.04)
    # the timestamps are data too: one damaged in a 1 s clip put a frame 17 years on, and sampling
    # at 1 fps then planned 536 million targets (85 s, gigabytes) before it failed
    span = times[-1] + frame_dur - times[0]
    limits.check_duration(span, "frame timestamps span")
    if duration <= 0:
        duration = span
    # packets end well before the declared duration: truncated file
    slack = 2.0 * frame_dur + 0.1 if vs.duration is not None else max(0.5, 0.05 * duration)
    short = times[-1] + frame_dur + slack < start + duration
    key_gap = None
    if len(keys) >= 2:
        key_gap = max(b - a for a, b in zip(keys, keys[1:]))
    elif len(keys) == 1:
        key_gap = max(times[-1] - keys[0], frame_dur)
    return StreamIndex(times, keys, scan_err, frame_dur, duration, short, key_gap, decode, key_decode,
                       bool(demuxer_names(c) & SEEK_BY_DECODE_TIME),
                       # a container's duration may run on with the sound track: not the picture's
                       end=shown_until if shown_until and shown_until > times[-1] else times[-1] + frame_dur)


@dataclass(frozen=True)
class SamplePlan:
    """Which frames fps/uniform/keyframes sampling takes (:func:`plan_samples`)."""

    strategy: str                  # "keyframes" | "seek"
    frames: list[float]            # sorted times of the frames to return (from StreamIndex.times)
    targets: list[float]           # requested sample times (fps/uniform; empty for keyframes)
    shots: list[float] = field(default_factory=list)  # shot-start keyframes among frames, not at targets


# Note [shot starts]
# Sampling at 1 fps misses what is on screen between samples: a shot of 0.4 s spliced into a video
# at 2.3 s is never judged by the samples at 2 s and 3 s. Encoders mark shots for us: x264 (all
# presets but the fastest), x265 and most editors start a new GOP at a scene cut, sooner than their
# keyframe interval. So fps/uniform sampling also takes every keyframe that comes sooner than the
# stream's keyframe interval after the keyframe before it - under 0.9 of the longest keyframe
# gap, the run from the last keyframe to the end included, in frames - when it is not a frame the
# targets took already, within max_frames (spread evenly when they do not all fit). A stream of
# regular GOPs has none; a keyframe is decoded from the seek it needs anyway, so the cost is the
# model's, one frame per shot. A stream whose encoder places keyframes on a fixed cadence only
# (fixed GOP, scene cut off: x264 ultrafast) has none to offer; frames between samples are not
# compared for cuts (a CPU cost on every frame).
SHOT_GAP = 0.9


def shot_starts(times: list[float], keys: list[float]) -> list[float]:
    """Keyframes (of the sorted frame ``times``) that start a shot (Note [shot starts]): sooner
    than the stream's keyframe interval after the keyframe before them."""
    if len(keys) < 2 or len(keys) >= len(times):
        return []
    at = [bisect.bisect_left(times, k) for k in keys]
    gaps = [b - a for a, b in zip(at, at[1:])]
    interval = max(*gaps, len(times) - at[-1])
    return [k for k, gap in zip(keys[1:], gaps) if gap < SHOT_GAP * interval]


def plan_samples(sampling: Sampling, index: StreamIndex) -> SamplePlan:
    """The frames ``sampling`` (not mode "all") takes from a stream: a pure function of the index,
    shared by every decoder so they return the same frames.

    "keyframes" (and fps/uniform when the keyframes are at least as dense as the sampling
    interval): the nearest keyframe of each target, the frame on screen when every frame is a
    keyframe; "seek": the frame on screen at each target,
    the last one starting at or before it (or within a quarter frame after it: timestamp jitter).
    """
    times, keys, frame_dur, key_gap = index.times, index.keys, index.frame_dur, index.key_gap
    targets: list[float] = []
    if sampling.mode == "keyframes":
        chosen = _thin(keys, sampling.max_frames)
        strategy = "keyframes"
    else:
        targets, interval = _targets(sampling, times[0], times[-1], frame_dur, index.end)
        eff_interval = interval
        if sampling.max_frames is not None and len(targets) > 1:
            eff_interval = max(interval, (targets[-1] - targets[0]) / (len(targets) - 1))
        dense = not sampling.exact and bool(keys) and keys[0] <= times[0] + 1e-6 and key_gap is not None and \
            key_gap <= eff_interval + 0.5 * frame_dur + 1e-6
        strategy = "keyframes" if dense else "seek"
        if dense and len(keys) < len(times):
            chosen = []
            for t in targets:
                i = bisect.bisect_left(keys, t)
                cands = keys[max(i - 1, 0): i + 1]
                k = min(cands, key=lambda x: (abs(x - t), x))
                if not chosen or chosen[-1] != k:
                    chosen.append(k)
            chosen = sorted(set(chosen))
        else:  # seeking, or every frame a keyframe (GIF, APNG, MJPEG, ...): the frame on screen
            eps = min(frame_dur * 0.25, 1e-3)
            chosen = sorted({times[_on_screen(times, t, eps)] for t in targets})
    if strategy == "keyframes" and not chosen:
        raise CorruptMediaError("video stream has no keyframes")
    shots = with_shots(sampling, chosen, times, keys) if sampling.mode != "keyframes" else []
    return SamplePlan(strategy, sorted(chosen + shots), targets, shots)


def with_shots(sampling: Sampling, chosen: list[float], times: list[float], keys: list[float]) -> list[float]:
    """The shot starts (Note [shot starts]) fps/uniform sampling takes besides the frames
    ``chosen`` for its targets, within ``sampling.max_frames``."""
    if not sampling.shots:
        return []
    taken = set(chosen)
    shots = [k for k in shot_starts(times, keys) if k not in taken]
    budget = None if sampling.max_frames is None else max(sampling.max_frames - len(chosen), 0)
    return _thin(shots, budget) if budget != 0 else []


def _decode(c, sampling: Sampling, limits: Limits, deadline: Deadline,
            backgrounds: tuple[str, ...] = ("white",)) -> DecodedVideo:
    vs, codec, start, duration, fps = open_video_stream(c, limits)
    cc = vs.codec_context
    vs.thread_type = "AUTO"
    tb = vs.time_base
    dec = FrameDecoder(c, vs, limits, deadline)

    complete = True
    picked: list[tuple[float, Any]] = []   # (absolute seconds, av frame)
    targets: list[float] = []
    shots: list[float] = []
    key_gap = None

    if sampling.mode == "all":
        strategy = "all"
        for f in dec.frames():
            limits.check_pixels(f.width, f.height)
            picked.append((_ftime(f, tb, start + len(picked) / (fps or 1.0)), f))
            if sampling.max_frames is not None and len(picked) >= sampling.max_frames:
                break
        capped = sampling.max_frames is not None and len(picked) >= sampling.max_frames
        if picked and not capped and duration > 0 and fps > 0:
            expected = start + duration - 1.5 / fps
            complete = max(t for t, _ in picked) >= expected
    else:
        index = index_stream(c, vs, start, duration, fps, limits, deadline)
        dec.errors += index.errors
        duration, short, key_gap = index.duration, index.short, index.key_gap
        plan = plan_samples(sampling, index)
        strategy, chosen, targets, shots = plan.strategy, plan.frames, plan.targets, plan.shots
        if strategy == "keyframes":
            want_ticks = {int(round(t / tb)) for t in chosen}
            try:
                cc.skip_frame = "NONKEY"
            except Exception:  # noqa: BLE001 - the packet filter below already skips non-keys
                pass
            dec.seek(index.first_seek_time())
            seen = 0

            def want(p) -> bool:
                nonlocal seen
                t = p.pts if p.pts is not None else p.dts
                if t is not None and p.is_keyframe and t in want_ticks:
                    seen += 1
                    return True
                return False

            for f in dec.frames(want, done=lambda p: seen >= len(want_ticks)):
                picked.append((_ftime(f, tb, 0.0), f))
            complete = len(picked) >= len(want_ticks) and not short
        else:  # exact seeking
            if codec in SKIPS_NONREF:  # Note [skipping non-reference frames]
                dec.wanted = {int(round(t / tb)) for t in chosen}
            picked = _seek_decode(dec, sorted(targets + shots), index, tb)
            complete = len(picked) >= len(chosen) and not short

    if not picked:
        raise CorruptMediaError("no frame could be decoded")
    picked.sort(key=lambda x: x[0])
    stamps = [round(t - start, 6) for t, _ in picked]
    sar, fields = stream_sar(vs), codec not in STILL_INTERLACE
    for _, f in picked:
        limits.check_pixels(f.width, f.height)  # streams may change size mid-way

    def over(background: int) -> list[Frame]:
        return [frame_from_av(f, pts=rel, sar=sar, fields=fields, orientation=frame_orientation(f, codec),
                              background=background) for (_, f), rel in zip(picked, stamps)]

    frames = over(BACKGROUNDS[backgrounds[0]])
    pages = []
    if len(backgrounds) > 1 and format_has_alpha(picked[0][1].format):
        views = page_views(frames, backgrounds, over)
        pages = views if len(views) > 1 else []
    rotation, mirrored = frame_orientation(picked[0][1], codec).as_rotation()
    w, h = frames[0].width, frames[0].height
    return DecodedVideo(
        frames=frames, timestamps=stamps, duration=float(duration), fps=float(fps), width=w,
        height=h, rotation=rotation, decoded_frames=max(dec.sent, dec.decoded), strategy=strategy, codec=codec,
        keyframe_interval=key_gap, decode_errors=dec.errors, complete=bool(complete and not dec.errors),
        targets=[round(t - start, 6) for t in targets], shots=[round(t - start, 6) for t in shots],
        mirrored=mirrored, sar=frames[0].sar,
        interlaced=fields and bool(getattr(picked[0][1], "interlaced_frame", False)),
        hdr=getattr(frame_sdr(picked[0][1]), "transfer", ""), pages=pages)


def _on_screen(times: list[float], t: float, eps: float) -> int:
    """Index of the frame shown at time ``t``: the last of the sorted start ``times`` at or before
    ``t + eps`` (the first frame for a target before it)."""
    return max(bisect.bisect_right(times, t + eps) - 1, 0)


def _seek_decode(dec: FrameDecoder, targets: list[float], index: StreamIndex, tb) -> list[tuple[float, Any]]:
    """Exact sampling: the frame on screen at each target.

    Seeks to the keyframe before a target unless the decoder is already between that keyframe and
    the target; when the next target lies in a later GOP, packets stop at the target's packet (in
    decode order) and the decoder is drained, so no frame after the target is decoded.
    """
    times, keys, frame_dur = index.times, index.keys, index.frame_dur
    eps = min(frame_dur * 0.25, 1e-3) if frame_dur else 1e-6
    plan: list[tuple[float, float]] = []          # (frame time wanted, its keyframe time)
    for target in targets:
        want_t = times[_on_screen(times, target, eps)]
        if plan and plan[-1][0] >= want_t - eps:
            continue
        ki = bisect.bisect_right(keys, want_t + eps) - 1
        plan.append((want_t, keys[ki] if ki >= 0 else times[0]))

    picked: list[tuple[float, Any]] = []
    it: Iterator[Any] | None = None
    last_t: float | None = None                   # pts of the last frame the decoder produced
    state = {"drain": None}

    def done(p) -> bool:
        t = p.pts if p.pts is not None else p.dts
        return state["drain"] is not None and t == state["drain"]

    for n, (want_t, key_t) in enumerate(plan):
        if it is None or last_t is None or key_t > last_t + eps or want_t < last_t - eps:
            dec.seek(index.seek_time(key_t))
            it = dec.frames(done=done)
            last_t = None
        # keep the session open only when the next target continues in it
        nxt = plan[n + 1] if n + 1 < len(plan) else None
        state["drain"] = None if (nxt is not None and nxt[1] <= want_t + eps) else int(round(want_t / tb))
        got = None
        for f in it:
            t = _ftime(f, tb, 0.0)
            last_t = t
            if t >= want_t - eps:
                got = (t, f)
                break
        if state["drain"] is not None:
            it = None                             # drained: the next target seeks
        if got is None:
            it = None
            continue
        picked.append(got)
    return picked
