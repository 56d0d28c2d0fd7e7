"""Cheap inspection of a media input: modality, size, duration, codecs (no full decode).

Modality rules: ``"image"`` when the demuxer is an image demuxer (``jpeg_pipe``, ``png_pipe``,
``webp_pipe``, ``image2``), or the only video stream uses an image codec (GIF, APNG, ...) and holds a
single packet (HEIF/AVIF stills too), or an animated WebP holds a single frame, or a HEIF/AVIF
picture is tiled; ``"video"`` when there is a video stream that is not cover art
(``attached_pic`` disposition), animated GIF, APNG and WebP included; ``"audio"`` when there are
only audio streams.  Anything else (no usable stream) raises EmptyMediaError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av

from engine.errors import CorruptMediaError, EmptyMediaError, MediaError

from .heif_stills import is_still_image, pillow_decodes, pillow_size
from .limits import DEFAULT_LIMITS, Limits
from .source import (IMAGE_CODECS, IMAGE_DEMUXERS, check_codec, codec_name, demuxer_names, is_cover,
                     media_errors, open_container, read_source)
from .subtitles import TEXT_SUBTITLE_CODECS
from .webp_animation import is_animated_webp, probe_webp_animation

__all__ = ["MediaInfo", "probe"]


@dataclass(frozen=True)
class MediaInfo:
    kind: str                   # "video" | "image" | "audio"
    container: str              # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    width: int = 0              # coded size of the video/image stream (0 for audio)
    height: int = 0
    duration: float = 0.0       # seconds (0.0 for images or unknown)
    fps: float = 0.0
    has_video: bool = False
    has_audio: bool = False
    video_codec: str | None = None
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: int = 0
    cover: bool = False         # a picture stored with the media (album art: an attached picture),
                                # which players show; decode_image of a sound file gives it
    subtitles: int = 0          # text subtitle tracks (decode_subtitles; Note [subtitles])
    audio_tracks: int = 0       # audio streams (decode_audio's ``track``), decodable or not


def _count_packets(c, vs, cap: int = 2) -> int:
    n = 0
    try:
        for p in c.demux(vs):
            if p.size:
                n += 1
                if n >= cap:
                    break
    except av.error.FFmpegError:
        pass
    return n


def probe(source: Any, limits: Limits | None = None) -> MediaInfo:
    """Inspect ``source`` (path, bytes or binary file object) after the safety checks."""
    limits = limits or DEFAULT_LIMITS
    opened = read_source(source, limits)
    if is_animated_webp(opened.fileobj):
        with opened, media_errors("media", "open"):
            return _probe_webp_animation(opened.fileobj, limits)
    with media_errors("media", "open"), open_container(opened, limits) as c:
        if pillow_decodes(c):  # Note [HEIF and AVIF stills]: the whole, upright picture's size
            width, height = pillow_size(opened.fileobj, limits)
            return MediaInfo(kind="image", container=c.format.name, width=width, height=height,
                             has_video=True, video_codec=codec_name(c.streams.video[0]))
        return _probe(c, limits)


def _probe_webp_animation(f, limits: Limits) -> MediaInfo:
    """An animated WebP (Note [animated WebP]): a video when it holds more than one frame."""
    width, height, bounds = probe_webp_animation(f, limits)
    frames, duration = len(bounds) - 1, bounds[-1]
    video = frames > 1
    return MediaInfo(kind="video" if video else "image", container="webp_pipe", width=width,
                     height=height, duration=duration if video else 0.0,
                     fps=frames / duration if video and duration else 0.0, has_video=True,
                     video_codec="webp")


def _probe(c, limits: Limits) -> MediaInfo:
    if not c.streams:
        raise CorruptMediaError("no streams found (truncated or not media)")
    names = demuxer_names(c)
    videos = [s for s in c.streams.video if not is_cover(s)]
    audios = list(c.streams.audio)
    vs = videos[0] if videos else None
    as_ = audios[0] if audios else None
    vcodec = check_codec(vs) if vs is not None else None
    acodec = None
    audio_usable = False
    if as_ is not None:
        try:
            acodec = check_codec(as_)
            audio_usable = True
        except MediaError:
            if vs is None:
                raise
            acodec = codec_name(as_)  # unusable audio next to a usable video: reported, not decoded
    if vs is None and as_ is None:
        raise EmptyMediaError("input has no video, image or audio stream")
    duration = c.duration / 1_000_000 if c.duration else 0.0
    width = height = 0
    fps = 0.0
    if vs is not None:
        width, height = vs.codec_context.width, vs.codec_context.height
        limits.check_pixels(width, height)
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        if vs.duration is not None and vs.time_base:
            duration = float(vs.duration * vs.time_base)
    limits.check_duration(duration or None)
    kind = "audio"
    if vs is not None:
        kind = "video"
        if names & IMAGE_DEMUXERS and "gif" not in names:
            kind = "image"
        elif (vcodec in IMAGE_CODECS or is_still_image(c)) and _count_packets(c, vs) <= 1:
            kind = "image"
    if kind == "image":
        duration, fps = 0.0, 0.0
    sr = ch = 0
    acc = getattr(as_, "codec_context", None)  # None: a stream FFmpeg has no decoder for
    if acc is not None:
        sr = acc.sample_rate or 0
        ch = getattr(acc, "channels", 0)
    return MediaInfo(kind=kind, container=c.format.name, width=width, height=height,
                     duration=float(duration), fps=fps, has_video=vs is not None,
                     has_audio=audio_usable, video_codec=vcodec, audio_codec=acodec,
                     sample_rate=sr, channels=ch, cover=any(is_cover(s) for s in c.streams.video),
                     subtitles=sum(codec_name(s) in TEXT_SUBTITLE_CODECS for s in c.streams.subtitles),
                     audio_tracks=len(audios))
