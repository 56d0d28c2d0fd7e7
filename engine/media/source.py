"""Safe opening of media inputs with PyAV.

Rules
-----
* Accepted inputs: filesystem paths (``str`` or ``os.PathLike``), ``bytes``/``bytearray``/
  ``memoryview``, and binary file objects (``read``; ``seek``/``tell`` if available).
* A ``str`` that looks like a URL or an FFmpeg protocol (``http:``, ``rtmp:``, ``file:``,
  ``concat:``, ``pipe:``, ... any ``scheme:``) raises :class:`ForbiddenSourceError`.  Windows drive
  paths (``C:\\...``) are not schemes.  An ``os.PathLike`` is always a local file (opened by Python).
* Paths are opened by Python (regular files only: no FIFOs/devices) and FFmpeg only ever sees a file
  object, so it never resolves a URL.  Nested opens (HLS segments, concat entries, DASH, image
  sequences, ...) go through an ``io_open`` hook that always refuses, and the container's
  ``format_whitelist`` only names the demuxers below; the sniffer additionally recognises playlists
  and concat lists and reports them as :class:`ForbiddenSourceError`.
* Size (``Limits.max_bytes``) is checked before any decoding; empty input -> EmptyMediaError;
  a missing path -> MediaNotFoundError (also a FileNotFoundError), an unreadable one ->
  UnreadableMediaError.
* Every PyAV/FFmpeg error is wrapped: garbage or truncated input -> :class:`CorruptMediaError`.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Iterator, Union

import av

from engine.errors import (
    CorruptMediaError, EmptyMediaError, EngineError, ForbiddenSourceError, MediaError, MediaLimitError,
    MediaNotFoundError, UnreadableMediaError, UnsupportedMediaError,
)

from .limits import DEFAULT_LIMITS, Limits

__all__ = [
    "MediaInput", "ALLOWED_DEMUXERS", "IMAGE_DEMUXERS", "VIDEO_CODECS", "AUDIO_CODECS",
    "IMAGE_CODECS", "open_container", "read_source", "check_codec", "wrap_av_error",
]

MediaInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

# demuxer names as FFmpeg reports them (container.format.name is a comma list for mov/matroska)
ALLOWED_DEMUXERS = frozenset({
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2",
    "matroska", "webm",
    "avi", "mpegts", "flv", "ogg", "wav", "mp3", "flac", "aac", "amr",
    "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "apng", "bmp_pipe",
})
IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "bmp_pipe"})
VIDEO_CODECS = frozenset({
    "h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg", "mpeg2video", "mpeg1video", "prores", "h263",
    "png", "webp", "gif", "apng", "bmp",
})
IMAGE_CODECS = frozenset({"mjpeg", "png", "webp", "gif", "apng", "bmp"})
# + every pcm_*; Dolby AC-3 and E-AC-3 carry the sound of broadcast and film, ALAC Apple's lossless
# files, AMR-NB phone voice recordings (3GP, .amr). Each has a test that encodes and decodes it here.
AUDIO_CODECS = frozenset({"aac", "mp3", "mp2", "opus", "vorbis", "flac", "ac3", "eac3", "alac",
                          "amr_nb"})

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_OPTS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*,")  # FFmpeg "subfile,,opts,:url" form
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_SNIFF = 4096
_FORBIDDEN_SIGNATURES = (
    (b"#EXTM3U", "HLS/M3U playlist"),
    (b"ffconcat", "ffconcat list"),
    (b"[playlist]", "PLS playlist"),
)


def _refuse_io_open(url, flags, options):  # called by FFmpeg for any nested open
    raise ForbiddenSourceError(f"media tried to open another resource ({url!r}); refused")


def wrap_av_error(e: BaseException, what: str = "media") -> MediaError:
    """Map a PyAV/FFmpeg exception to a typed engine error."""
    if isinstance(e, MediaError):
        return e
    msg = str(e) or type(e).__name__
    low = msg.lower()
    if "whitelist" in low or "not on" in low:
        return UnsupportedMediaError(f"{what}: container not allowed ({msg})")
    if isinstance(e, av.error.PermissionError):  # only our io_open hook says EPERM
        return ForbiddenSourceError(f"{what} refers to another resource; refused ({msg})")
    if isinstance(e, (av.error.PatchWelcomeError, av.error.DecoderNotFoundError,
                      av.error.DemuxerNotFoundError)):
        return UnsupportedMediaError(f"{what}: {msg}")
    return CorruptMediaError(f"{what} does not decode: {msg}")


@contextmanager
def pillow_errors(what: str) -> Iterator[None]:
    """media_errors' twin for inputs Pillow decodes: engine errors pass through, a picture past
    Pillow's own size bound (with ``max_pixels`` off) is a MediaLimitError, anything else Pillow
    raises on hostile input a CorruptMediaError; its DecompressionBombWarning is silenced (sizes
    are checked by Limits)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except MediaError:
        raise
    except Image.DecompressionBombError as e:
        raise MediaLimitError(f"{what}: {e}") from None
    except Exception as e:  # noqa: BLE001 - hostile input: whatever the decoder raises is a bad file
        raise CorruptMediaError(f"{what} does not decode: {e}") from None


@contextmanager
def media_errors(what: str, action: str = "decode") -> Iterator[None]:
    """Everything a decode can raise comes out typed: engine errors pass through, FFmpeg's are
    mapped by wrap_av_error, and Python errors from PyAV's internals become CorruptMediaError."""
    try:
        yield
    except EngineError:  # InputError is a ValueError too: not a decoding failure
        raise
    except av.error.FFmpegError as e:
        raise wrap_av_error(e, what) from None
    except (ValueError, RuntimeError, OSError, MemoryError) as e:
        raise CorruptMediaError(f"{what} does not {action}: {e}") from None


@dataclass
class _Opened:
    fileobj: IO[bytes]
    size: int
    name: str
    close: bool  # the file object is ours: closed on leaving a ``with`` block

    def __enter__(self) -> "_Opened":
        return self

    def __exit__(self, *exc) -> None:
        if self.close:
            self.fileobj.close()


def read_source(source: Any, limits: Limits = DEFAULT_LIMITS) -> _Opened:
    """Validate ``source`` and return a seekable binary file object for it (size checked); a
    source read before is returned as it is."""
    if isinstance(source, _Opened):
        return source
    if isinstance(source, str):
        if (_SCHEME.match(source) and not _DRIVE.match(source)) or (
                _OPTS_SCHEME.match(source) and ":" in source):
            raise ForbiddenSourceError(
                f"URLs and protocols are not accepted ({source[:40]!r}); pass a local path, bytes "
                "or a file object")
        if "\x00" in source:
            raise ForbiddenSourceError("path contains a NUL byte")
        return _open_path(source, limits)
    if isinstance(source, os.PathLike):
        return _open_path(os.fspath(source), limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source) if not isinstance(source, bytes) else source
        if not data:
            raise EmptyMediaError("input holds no data (0 bytes)")
        limits.check_bytes(len(data))
        return _Opened(io.BytesIO(data), len(data), "<bytes>", True)
    if hasattr(source, "read"):
        return _wrap_fileobj(source, limits)
    raise UnsupportedMediaError(
        f"unsupported input kind {type(source).__name__}: pass a path, bytes or a binary file object")


def _open_path(path: str, limits: Limits) -> _Opened:
    if isinstance(path, bytes):  # os.fspath may return bytes
        path = os.fsdecode(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise MediaNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise UnreadableMediaError(f"{path}: cannot stat: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ForbiddenSourceError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise EmptyMediaError(f"{path}: file is empty")
    limits.check_bytes(st.st_size, path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UnreadableMediaError(f"{path}: cannot open: {e.strerror or e}") from None
    return _Opened(f, st.st_size, path, True)


def _wrap_fileobj(f: Any, limits: Limits) -> _Opened:
    try:
        probe = f.read(0)
    except Exception as e:  # noqa: BLE001
        raise UnsupportedMediaError(f"file object cannot be read: {e}") from None
    if not isinstance(probe, (bytes, bytearray)):
        raise UnsupportedMediaError("file object must be opened in binary mode")
    seekable = False
    try:
        seekable = bool(f.seekable()) if hasattr(f, "seekable") else hasattr(f, "seek")
    except Exception:  # noqa: BLE001
        seekable = False
    if seekable:
        try:
            start = f.tell()
            end = f.seek(0, io.SEEK_END)
            f.seek(start)
            size = end - start
        except Exception:  # noqa: BLE001
            seekable = False
    if seekable and start == 0:
        if size <= 0:
            raise EmptyMediaError("input holds no data (0 bytes)")
        limits.check_bytes(size)
        return _Opened(f, size, getattr(f, "name", "<file>") if isinstance(getattr(f, "name", None), str) else "<file>", False)
    # non-seekable (or positioned) stream: read it into memory, bounded by max_bytes
    cap = None if limits.max_bytes is None else limits.max_bytes + 1
    data = f.read() if cap is None else f.read(cap)
    if not data:
        raise EmptyMediaError("input holds no data (0 bytes)")
    limits.check_bytes(len(data))
    return _Opened(io.BytesIO(bytes(data)), len(data), "<stream>", True)


def _sniff(f: IO[bytes]) -> None:
    pos = f.tell()
    head = f.read(_SNIFF)
    f.seek(pos)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for sig, what in _FORBIDDEN_SIGNATURES:
        if text[: len(sig)].lower() == sig.lower():
            raise ForbiddenSourceError(f"input is a {what}; indirect sources are refused")
    if text.startswith(b"<?xml") and b"<MPD" in head:
        raise ForbiddenSourceError("input is a DASH manifest; indirect sources are refused")
    if text.startswith(b"v=0") and b"\nm=" in head:
        raise ForbiddenSourceError("input is an SDP description; network sources are refused")


def _identify(f: IO[bytes]) -> str | None:
    """Name of the demuxer FFmpeg would pick, opened without the whitelist but still unable to
    open anything else (io_open refuses, no protocols).  None if nothing recognises the data."""
    try:
        f.seek(0)
        with av.open(f, mode="r", container_options={"protocol_whitelist": "none"},
                     metadata_errors="replace", io_open=_refuse_io_open) as c:
            name = c.format.name
        return None if set(name.split(",")) & ALLOWED_DEMUXERS else name
    except av.error.PermissionError:  # the demuxer tried to open another resource
        raise ForbiddenSourceError("input refers to other resources (playlist/concat-like); "
                                   "indirect sources are refused") from None
    except Exception:  # noqa: BLE001
        return None


def demuxer_names(container) -> set[str]:
    return set(container.format.name.split(","))


@contextmanager
def open_container(source: Any, limits: Limits = DEFAULT_LIMITS) -> Iterator[Any]:
    """Open ``source`` with PyAV after all safety checks; yields an ``InputContainer``."""
    opened = read_source(source, limits)
    container = None
    try:
        _sniff(opened.fileobj)
        try:
            container = av.open(
                opened.fileobj, mode="r",
                container_options={
                    "format_whitelist": ",".join(sorted(ALLOWED_DEMUXERS)),
                    "protocol_whitelist": "none",
                },
                metadata_errors="replace",
                io_open=_refuse_io_open,
            )
        except MediaError:
            raise
        except av.error.FFmpegError as e:
            if getattr(e, "errno", None) == 22:  # EINVAL: the format whitelist refused it?
                other = _identify(opened.fileobj)
                if other is not None:
                    raise UnsupportedMediaError(f"container {other!r} is not allowed") from None
            raise wrap_av_error(e, opened.name) from None
        except (ValueError, OSError, RuntimeError, UnicodeError) as e:
            raise CorruptMediaError(f"{opened.name} does not open: {e}") from None
        names = demuxer_names(container)
        if not names & ALLOWED_DEMUXERS:
            raise UnsupportedMediaError(f"container {container.format.name!r} is not allowed")
        dur = container.duration
        if dur is not None and dur > 0:
            limits.check_duration(dur / 1_000_000)
        yield container
    finally:
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass
        if opened.close:
            try:
                opened.fileobj.close()
            except Exception:  # noqa: BLE001
                pass


def codec_name(stream) -> str:
    """Canonical codec name of a stream ("h264", "av1", ...), "unknown" without a decoder."""
    cc = getattr(stream, "codec_context", None)
    if cc is None:
        return "unknown"
    try:
        return cc.codec.canonical_name
    except Exception:  # noqa: BLE001
        return getattr(cc, "name", None) or "unknown"


def check_codec(stream) -> str:
    """Raise UnsupportedMediaError unless the stream's codec is on the allow-list."""
    name = codec_name(stream)
    if name == "unknown":
        raise UnsupportedMediaError(f"no decoder for this {stream.type} stream")
    if stream.type == "video":
        if name not in VIDEO_CODECS:
            raise UnsupportedMediaError(f"video codec {name!r} is not allowed")
    elif stream.type == "audio":
        if name not in AUDIO_CODECS and not name.startswith("pcm_"):
            raise UnsupportedMediaError(f"audio codec {name!r} is not allowed")
    else:
        raise UnsupportedMediaError(f"{stream.type} streams are not decoded")
    return name


def is_cover(stream) -> bool:
    """Whether a video stream is a picture stored with the media (album art, a video's
    thumbnail: AV_DISPOSITION_ATTACHED_PIC), not moving pictures."""
    try:
        return bool(int(getattr(stream, "disposition", 0)) & 1024)
    except Exception:  # noqa: BLE001
        return False


def cover_stream(container):
    """The first cover picture stream (:func:`is_cover`), codec checked; EmptyMediaError if none."""
    for s in container.streams.video:
        if is_cover(s):
            check_codec(s)
            return s
    raise EmptyMediaError("input holds no cover picture")


def first_stream(container, kind: str, missing: str):
    """The first ``kind`` ("audio" or "video") stream, codec checked against the allow-list.

    No streams at all means the bytes are not media (CorruptMediaError); none of this kind,
    EmptyMediaError(missing).
    """
    if not container.streams:
        raise CorruptMediaError("no streams found (truncated or not media)")
    streams = getattr(container.streams, kind)
    if not streams:
        raise EmptyMediaError(missing)
    check_codec(streams[0])
    return streams[0]


class Packets:
    """The packets of one stream, with the decode deadline checked before each.

    A demuxer error ends the stream (the rest of a damaged file is unreadable) and is counted in
    ``errors``, so callers can tell a clean end from a truncated one.
    """

    def __init__(self, container, stream, deadline) -> None:
        self.container, self.stream, self.deadline = container, stream, deadline
        self.errors = 0

    def __iter__(self) -> Iterator[Any]:
        it = self.container.demux(self.stream)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                return
            except av.error.FFmpegError:
                self.errors += 1
                return
            except IndexError:
                # PyAV 18 ends a demux with a flush packet per stream it was asked for, and takes
                # that flag for every stream the container now holds: a stream that appeared
                # mid-file (damaged or header-less containers such as FLV) is past its stream
                # list. Every packet has been read by then; the decoders are flushed by their
                # callers (video) or lose at most their delay (audio).
                return
            self.deadline.check()
            yield packet
