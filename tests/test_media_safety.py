"""Typed errors for unsafe, broken or oversized inputs; every case ends quickly."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from engine.errors import (CorruptMediaError, EmptyMediaError, ForbiddenSourceError, MediaError,
                           MediaLimitError, MediaNotFoundError, UnreadableMediaError,
                           UnsupportedMediaError)
from engine.media import Limits, Sampling, decode_audio, decode_image, decode_video, probe
from engine.media.synthetic import encode_image, ffconcat_list, hls_playlist

import media_factory as mf

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ALL_DECODERS = {
    "video": lambda s, lim=None: decode_video(s, Sampling("fps", 1.0), lim),
    "image": decode_image,
    "audio": decode_audio,
    "probe": probe,
}


def _raises(exc, fn, *args, budget=5.0):
    t = time.monotonic()
    with pytest.raises(exc) as info:
        fn(*args)
    assert time.monotonic() - t < budget
    assert isinstance(info.value, MediaError)
    return info.value


@pytest.mark.parametrize("kind", ALL_DECODERS)
@pytest.mark.parametrize("url", [
    "http://example.com/a.mp4", "https://x/y.m3u8", "rtmp://host/live", "file:/etc/passwd",
    "file:///tmp/a.mp4", "concat:a.mp4|b.mp4", "pipe:0", "data:video/mp4;base64,AAAA", "tcp://1.2.3.4:5",
    "subfile,,start,0,end,10,,:x.mp4", "crypto:x", "ftp://h/f",
])
def test_url_and_protocol_strings_are_forbidden(kind, url):
    _raises(ForbiddenSourceError, ALL_DECODERS[kind], url)


@pytest.mark.parametrize("kind", ALL_DECODERS)
def test_hls_playlist_naming_a_local_file_is_refused(kind, tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(mf.clip(duration=1.0))
    playlist = tmp_path / "list.m3u8"
    playlist.write_bytes(hls_playlist(str(target)))
    _raises(ForbiddenSourceError, ALL_DECODERS[kind], str(playlist))
    _raises(ForbiddenSourceError, ALL_DECODERS[kind], playlist.read_bytes())
    # relative entry, leading blank lines and a BOM do not help
    _raises(ForbiddenSourceError, ALL_DECODERS[kind], b"\xef\xbb\xbf\n\n" + hls_playlist("clip.mp4"))


def test_hls_refused_even_without_the_sniffer(tmp_path, monkeypatch):
    """Defence in depth: the demuxer allow-list and the io_open hook also stop playlists."""
    import engine.media.source as source

    target = tmp_path / "clip.mp4"
    target.write_bytes(mf.clip(duration=1.0))
    monkeypatch.setattr(source, "_sniff", lambda f: None)
    for data in (hls_playlist(str(target)), ffconcat_list(str(target))):
        with pytest.raises((UnsupportedMediaError, CorruptMediaError, ForbiddenSourceError)):
            decode_video(data)
    with pytest.raises(ForbiddenSourceError):
        decode_video(ffconcat_list(str(target)))


@pytest.mark.parametrize("kind", ALL_DECODERS)
def test_ffconcat_list_is_refused(kind, tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(mf.clip(duration=1.0))
    lst = tmp_path / "list.txt"
    lst.write_bytes(ffconcat_list(str(target), str(target)))
    _raises(ForbiddenSourceError, ALL_DECODERS[kind], lst)


def test_dash_manifest_is_refused():
    mpd = b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>'
    _raises(ForbiddenSourceError, decode_video, mpd)


def test_special_files_are_refused():
    if os.path.exists("/dev/zero"):
        _raises(ForbiddenSourceError, decode_video, "/dev/zero")
    _raises(ForbiddenSourceError, decode_video, "/tmp")


@pytest.mark.parametrize("kind", ALL_DECODERS)
def test_empty_inputs(kind, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for src in (b"", bytearray(), empty, str(empty), io.BytesIO(b"")):
        _raises(EmptyMediaError, ALL_DECODERS[kind], src)


@pytest.mark.parametrize("kind", ALL_DECODERS)
def test_missing_and_unreadable_paths(kind, tmp_path, monkeypatch):
    for missing in (tmp_path / "missing.mp4", tmp_path / "no_dir" / "x.mp4"):
        e = _raises(MediaNotFoundError, ALL_DECODERS[kind], missing)
        assert isinstance(e, FileNotFoundError) and "no such file" in str(e)
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(b"\x00" * 64)
    real_open = open

    def deny(path, *args, **kw):  # chmod 0 does not stop root, so refuse the open itself
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr("builtins.open", deny)
    e = _raises(UnreadableMediaError, ALL_DECODERS[kind], locked)
    assert "Permission denied" in str(e) and not isinstance(e, MediaNotFoundError)


@pytest.mark.parametrize("kind", ALL_DECODERS)
@pytest.mark.parametrize("data", [b"\x00" * 4096, b"hello world, not media at all" * 50,
                                  os.urandom(20000)], ids=["zeros", "text", "random"])
def test_garbage_is_corrupt(kind, data):
    _raises((CorruptMediaError, UnsupportedMediaError), ALL_DECODERS[kind], data)


@pytest.mark.parametrize("cut", [16, 200, 2000, 0.5, 0.9])
def test_truncated_mp4_is_bounded(cut):
    data = mf.clip(duration=2.0, gop=30)
    n = cut if isinstance(cut, int) else int(len(data) * cut)
    t = time.monotonic()
    try:
        dv = decode_video(data[:n], Sampling("fps", 1.0))
    except (CorruptMediaError, EmptyMediaError):
        pass
    else:  # a readable prefix may yield the frames that survived
        assert all(0.0 <= ts <= 2.0 for ts in dv.timestamps)
    assert time.monotonic() - t < 5.0


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_faststart_mp4_returns_prefix_or_corrupt(cut):
    data = mf.clip(duration=2.0, gop=15, container_options=(("movflags", "faststart"),))
    data = data[: int(len(data) * cut)]
    for mode in ("all", "fps"):
        t = time.monotonic()
        try:
            dv = decode_video(data, Sampling(mode, 2.0))
            assert len(dv.frames) >= 1
            assert dv.complete is False      # the index promised more frames than decoded
        except CorruptMediaError:
            pass
        assert time.monotonic() - t < 5.0


def test_corrupted_payload_still_bounded():
    data = bytearray(mf.clip(duration=2.0, gop=30, container_options=(("movflags", "faststart"),)))
    for i in range(len(data) // 3, len(data), 97):
        data[i] ^= 0xFF
    t = time.monotonic()
    try:
        decode_video(bytes(data), Sampling("all"))
    except (CorruptMediaError, UnsupportedMediaError):
        pass
    assert time.monotonic() - t < 10.0


def test_truncated_image_and_audio():
    jpg = (SAMPLES / "image.jpg").read_bytes()
    _raises(CorruptMediaError, decode_image, jpg[:100])
    wav = mf.tone_file()
    _raises((CorruptMediaError, EmptyMediaError), decode_audio, wav[:20])


def test_size_limit_checked_before_decoding(tmp_path):
    data = mf.clip(duration=1.0)
    lim = Limits(max_bytes=len(data) - 1)
    p = tmp_path / "c.mp4"
    p.write_bytes(data)
    for src in (data, p, io.BytesIO(data)):
        _raises(MediaLimitError, decode_video, src, Sampling("fps", 1.0), lim)
    _raises(MediaLimitError, decode_audio, data, lim)
    _raises(MediaLimitError, decode_image, data, lim)


def test_pixel_duration_frame_and_time_limits():
    data = mf.clip(duration=2.0, gop=30)
    _raises(MediaLimitError, decode_video, data, Sampling("fps", 1.0), Limits(max_pixels=160 * 96 - 1))
    _raises(MediaLimitError, decode_video, data, Sampling("fps", 1.0), Limits(max_duration_s=1.5))
    _raises(MediaLimitError, decode_video, data, Sampling("all"), Limits(max_frames=10))
    _raises(MediaLimitError, decode_video, data, Sampling("all"), Limits(timeout_s=0.0))
    _raises(MediaLimitError, decode_image, encode_image(width=64, height=48), Limits(max_pixels=100))
    _raises(MediaLimitError, decode_audio, mf.tone_file(seconds=2.0), Limits(max_audio_s=1.0))
    # within limits works
    assert len(decode_video(data, Sampling("fps", 1.0), Limits(max_frames=2)).frames) == 2


def _with_a_far_frame(data: bytes, seconds: float) -> bytes:
    """``data``'s video stream remuxed into MP4 with its fourth frame shown ``seconds`` later (a
    damaged composition offset, as fuzzing found in a 1 s clip: a frame 17 years on)."""
    import av

    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format="mp4") as oc:
        out = oc.add_stream_from_template(src.streams.video[0])
        for i, p in enumerate(src.demux(src.streams.video[0])):
            if p.dts is None:
                continue
            if i == 3:
                p.pts += int(seconds / p.time_base)
            p.stream = out
            oc.mux(p)
    return buf.getvalue()


def test_frame_timestamps_years_apart_are_a_limit_not_a_schedule():
    data = _with_a_far_frame(mf.clip(duration=2.0, gop=30), 10 * 3600.0)  # declared: 2 s
    err = _raises(MediaLimitError, decode_video, data, Sampling("fps", 1.0))
    assert "timestamps span" in str(err)
    # without the duration limit the 1 fps schedule (36,000 targets) is thinned, not built
    t = time.monotonic()
    got = decode_video(data, Sampling("fps", 1.0, max_frames=64), Limits(max_duration_s=None))
    assert got.frames and time.monotonic() - t < 5.0


def test_disallowed_codec_and_container():
    if mf.has_encoder("ffv1"):
        ffv1 = mf.clip(width=64, height=48, duration=0.5, codec="ffv1", container="matroska")
        _raises(UnsupportedMediaError, decode_video, ffv1)
        _raises(UnsupportedMediaError, probe, ffv1)
    raw = mf.clip(width=64, height=48, duration=0.5, codec="rawvideo", container="avi")
    _raises(UnsupportedMediaError, decode_video, raw)
    # a demuxer that is not on the allow-list (NUT)
    nut = mf.clip(width=64, height=48, duration=0.5, container="nut")
    err = _raises(UnsupportedMediaError, decode_video, nut)
    assert "nut" in str(err)
    # bare H.264 elementary stream (h264 demuxer) is not on the allow-list either
    h264 = mf.clip(width=64, height=48, duration=0.5, container="h264")
    _raises(UnsupportedMediaError, decode_video, h264)


def test_unsupported_input_kinds():
    for bad in (123, None, 4.5, object(), ["a.mp4"]):
        _raises(UnsupportedMediaError, decode_video, bad)
    _raises(UnsupportedMediaError, decode_video, io.StringIO("text"))
    _raises(ForbiddenSourceError, decode_video, "a\x00b")


def test_packets_end_cleanly_when_pyav_cannot_flush_a_stream_that_appeared_late():
    """PyAV 18 raises IndexError from its end-of-demux flush for a stream that appeared mid-file
    (a damaged FLV, found by fuzzing): every packet was read, so the packets simply end."""
    from engine.media.limits import DEFAULT_LIMITS
    from engine.media.source import Packets

    class Container:
        def demux(self, stream):
            yield "packet 1"
            yield "packet 2"
            raise IndexError("list index out of range")

    packets = Packets(Container(), None, DEFAULT_LIMITS.deadline())
    assert list(packets) == ["packet 1", "packet 2"] and packets.errors == 0


def test_no_raw_av_error_escapes():
    import av

    cases = [b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000), b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(100),
             b"\x1aE\xdf\xa3" + os.urandom(500), b"OggS" + os.urandom(500), b"\xff\xd8\xff" + os.urandom(300),
             b"\x89PNG\r\n\x1a\n" + os.urandom(300), b"GIF89a" + os.urandom(300), b"ID3" + os.urandom(300)]
    for data in cases:
        for fn in ALL_DECODERS.values():
            try:
                fn(data)
            except MediaError:
                pass
            except av.error.FFmpegError as e:  # pragma: no cover - the failure this test guards
                pytest.fail(f"raw PyAV error escaped: {e!r}")
