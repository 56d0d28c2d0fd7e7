"""Audio resampling and still images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import EmptyMediaError, InputError, MediaLimitError
from engine.media import audio_from_array, decode_audio, decode_image, frame_to_rgb, has_audio, probe
from engine.media.limits import Limits
from engine.media.synthetic import encode_image, pattern_rgb, read_index

import media_factory as mf
from bench.decode import decode_audio_per_frame

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_pcm_is_resampled_to_16k_mono(rate):
    x = decode_audio(mf.tone_file(seconds=1.0, rate=rate))
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) <= 16          # the resampler is flushed: no lost tail
    assert _freq(x, 16000) == pytest.approx(440.0, abs=2.0)
    assert 0.45 < np.abs(x[2000:-2000]).max() < 0.55


def test_other_rates_and_stereo_downmix():
    x = decode_audio(mf.tone_file(seconds=0.5, rate=44100), sample_rate=8000)
    assert abs(len(x) - 4000) <= 8
    st = decode_audio(mf.tone_file(seconds=1.0, rate=48000, channels=2))
    assert abs(len(st) - 16000) <= 16 and _freq(st, 16000) == pytest.approx(440.0, abs=2.0)
    with pytest.raises(InputError):
        decode_audio(mf.tone_file(), sample_rate=0)


@pytest.mark.parametrize("codec,container,rate", [
    ("aac", "mp4", 44100), ("libopus", "ogg", 48000), ("flac", "flac", 44100),
    ("libmp3lame", "mp3", 44100), ("aac", "adts", 22050), ("ac3", "mp4", 48000),
    ("eac3", "matroska", 48000), ("alac", "ipod", 44100), ("libopencore_amrnb", "amr", 8000),
])
def test_compressed_audio(codec, container, rate):
    if not mf.has_encoder(codec):
        pytest.skip(f"{codec} encoder missing")
    data = mf.tone_file(seconds=1.0, rate=rate, codec=codec, container=container)
    x = decode_audio(data)
    assert 15000 <= len(x) <= 17500           # codec priming/padding may add a little
    assert _freq(x, 16000) == pytest.approx(440.0, abs=3.0)
    info = probe(data)
    assert info.kind == "audio" and info.has_audio and not info.has_video


def test_audio_track_of_a_video_and_has_audio():
    clip = mf.clip(duration=1.0, audio=True)
    assert has_audio(clip) is True
    x = decode_audio(clip)
    assert abs(len(x) - 16000) < 800 and _freq(x, 16000) == pytest.approx(440.0, abs=3.0)
    silent = mf.clip(duration=1.0)
    assert has_audio(silent) is False
    with pytest.raises(EmptyMediaError):
        decode_audio(silent)
    with pytest.raises(EmptyMediaError):
        decode_audio(SAMPLES / "image.png")


@pytest.mark.parametrize("run_samples", [3000, None], ids=["short-runs", "default-runs"])
@pytest.mark.parametrize("name,make", [
    ("aac-44k-stereo", lambda: mf.tone_file(seconds=3.0, rate=44100, codec="aac", container="mp4", channels=2)),
    ("pcm-8k", lambda: mf.tone_file(seconds=2.0, rate=8000)),
    ("flac-sample", lambda: (SAMPLES / "explosion.flac").read_bytes()),
    ("aac-16k-sample", lambda: (SAMPLES / "speech.m4a").read_bytes()),
])
def test_batched_resampling_equals_frame_by_frame(monkeypatch, name, make, run_samples):
    """Note [batched resampling]: runs of frames resampled in one call give the very samples of
    frame-by-frame resampling, at run boundaries too (3000-sample runs cut every ~3 AAC frames)."""
    import engine.media.audio as audio

    if run_samples is not None:
        monkeypatch.setattr(audio, "RUN_SAMPLES", run_samples)
    data = make()
    for rate in (16000, 11025):
        np.testing.assert_array_equal(decode_audio(data, sample_rate=rate), decode_audio_per_frame(data, rate))


def test_formats_that_cannot_be_joined_are_resampled_frame_by_frame(monkeypatch):
    import engine.media.audio as audio

    monkeypatch.setattr(audio, "_SAMPLE_DTYPES", {})  # no format joins: every run goes frame by frame
    data = mf.tone_file(seconds=2.0, rate=44100, codec="aac", container="mp4", channels=2)
    np.testing.assert_array_equal(decode_audio(data), decode_audio_per_frame(data))


def test_adts_streams_joined_at_another_rate_and_layout_decode_whole():
    """Two ADTS files back to back (44.1 kHz mono, then 22.05 kHz stereo): the decoder's frames
    change rate and layout mid-stream; one resampler refused that (CorruptMediaError)."""
    data = (mf.tone_file(seconds=1.0, rate=44100, codec="aac", container="adts")
            + mf.tone_file(seconds=1.0, rate=22050, codec="aac", container="adts", channels=2))
    x = decode_audio(data)
    assert 31000 <= len(x) <= 34500  # 2 s at 16 kHz, plus each part's codec priming
    for half in (x[2000:14000], x[18000:30000]):
        assert _freq(half, 16000) == pytest.approx(440.0, abs=3.0)


def test_frames_whose_planes_do_not_match_their_layout_are_not_joined():
    """Damaged AAC decodes to frames with more planes than their layout has channels (found by
    fuzzing): such a run is resampled frame by frame instead of failing with IndexError."""
    import av

    from engine.media.audio import _joined

    stereo = av.AudioFrame(format="fltp", layout="stereo", samples=4)
    mono = av.AudioFrame(format="fltp", layout="mono", samples=4)
    assert _joined([stereo, mono], "fltp", "stereo", 16000) is None
    assert _joined([stereo, stereo], "fltp", "stereo", 16000).samples == 8


def test_damaged_aac_decodes():
    from engine.media.synthetic import encode_audio

    data = bytearray(encode_audio(seconds=0.7, codec="aac", container="mp4", rate=16000))
    # the damage that made a 14-channel stream of misshapen frames; how many planes PyAV reports
    # for them depends on memory past the frame, so the test above pins the fix deterministically
    data[2448:2599] = bytes(151)
    wave = decode_audio(bytes(data))
    assert wave.dtype == np.float32 and 0 < wave.shape[0] <= 16000


def float_wav_with_non_finite_samples() -> bytes:
    """16 kHz float WAV, a 440 Hz tone holding NaN, +inf and -inf samples and a burst of 3e38 (a
    damaged or hostile file: with NaN, found by fuzzing, every score of the clip came out NaN)."""
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    x[1000:1034], x[5000], x[9000], x[12000:12100] = np.nan, np.inf, -np.inf, 3e38
    return mf.float_wav(x)


def test_non_finite_samples_become_silence_and_full_scale():
    x = decode_audio(float_wav_with_non_finite_samples())
    assert x.shape == (16000,) and np.isfinite(x).all() and np.abs(x).max() <= 1.0
    assert (x[1000:1034] == 0).all() and x[5000] == 1.0 and x[9000] == -1.0 and (x[12000:12100] == 1.0).all()
    assert np.abs(x[3000:4000]).max() > 0.45  # the tone elsewhere is untouched


def with_cover(fmt: str, cover: bytes) -> bytes:
    """A 1 s tone as MP3, M4A or FLAC carrying ``cover`` (JPEG bytes) as its album art."""
    import os
    import tempfile

    from engine.media.synthetic import encode_audio

    codec, container = {"mp3": ("libmp3lame", "mp3"), "m4a": ("aac", "ipod"), "flac": ("flac", "flac")}[fmt]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"a.{fmt}")
        with open(path, "wb") as f:
            f.write(encode_audio(seconds=1.0, codec=codec, container=container, rate=16000))
        if fmt == "mp3":
            from mutagen.id3 import APIC, ID3
            tags = ID3()
            tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=cover))
            tags.save(path)
        elif fmt == "m4a":
            from mutagen.mp4 import MP4, MP4Cover
            tags = MP4(path)
            tags["covr"] = [MP4Cover(cover, imageformat=MP4Cover.FORMAT_JPEG)]
            tags.save()
        else:
            from mutagen.flac import FLAC, Picture
            tags, pic = FLAC(path), Picture()
            pic.type, pic.mime, pic.data = 3, "image/jpeg", cover
            tags.add_picture(pic)
            tags.save()
        with open(path, "rb") as f:
            return f.read()


def cover_jpeg(icc: bool = False) -> bytes:
    import io

    from PIL import Image, ImageCms

    buf = io.BytesIO()
    kw = {"icc_profile": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()} if icc else {}
    Image.fromarray(pattern_rgb(3, 96, 64)).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "flac"])
def test_album_art_is_the_picture_of_a_sound_file(fmt):
    pytest.importorskip("mutagen")
    cover = cover_jpeg(icc=fmt == "mp3")  # an ICC marker in the head once sent it to Pillow as a still
    data = with_cover(fmt, cover)
    info = probe(data)
    assert info.kind == "audio" and info.cover and info.has_audio
    np.testing.assert_array_equal(frame_to_rgb(decode_image(data)), frame_to_rgb(decode_image(cover)))
    assert not probe(SAMPLES / "speech.m4a").cover


def two_sound_tracks() -> bytes:
    """A 5 s video whose first sound track is a tone and whose second is the explosion sample."""
    from engine.media.synthetic import encode_video, with_audio_track

    video = encode_video(width=64, height=48, duration=5.0, fps=10, audio=True, audio_codec="ac3",
                         container="matroska")
    return with_audio_track(video, (SAMPLES / "explosion.flac").read_bytes())


def test_every_sound_track_decodes():
    data = two_sound_tracks()
    assert probe(data).audio_tracks == 2 and probe(SAMPLES / "speech.m4a").audio_tracks == 1
    first, second = decode_audio(data), decode_audio(data, track=1)
    np.testing.assert_array_equal(decode_audio(data, track=0), first)
    np.testing.assert_allclose(second, decode_audio(SAMPLES / "explosion.flac"), atol=1e-6)
    with pytest.raises(InputError, match="track 2"):
        decode_audio(data, track=2)


def test_speech_sample():
    x = decode_audio(SAMPLES / "speech.m4a")
    assert 1.5 < len(x) / 16000 < 5.0 and np.abs(x).max() > 0.1
    assert probe(SAMPLES / "speech.m4a").kind == "audio"


@pytest.mark.parametrize("fmt,mode,expect", [
    ("JPEG", "RGB", "i420"), ("PNG", "RGB", "rgb24"), ("PNG", "RGBA", "rgb24"), ("PNG", "L", "rgb24"),
    ("PNG", "P", "rgb24"), ("WEBP", "RGB", "i420"), ("GIF", "P", "rgb24"), ("BMP", "RGB", "bgr24"),
    ("BMP", "P", "rgb24"),
])
def test_images(fmt, mode, expect):
    data = encode_image(width=96, height=64, fmt=fmt, mode=mode)
    info = probe(data)
    assert info.kind == "image" and (info.width, info.height) == (96, 64) and info.duration == 0.0
    fr = decode_image(data)
    assert fr.format == expect and (fr.width, fr.height) == (96, 64) and fr.pts == 0.0
    if fmt == "JPEG":
        assert fr.full_range is True            # yuvj420p
    rgb = frame_to_rgb(fr)
    assert read_index(rgb.mean(-1)) == 0
    if mode in ("RGB", "RGBA"):
        tol = 1.0 if fmt in ("PNG", "BMP") else 8.0
        assert np.abs(rgb.astype(int) - pattern_rgb(0, 96, 64).astype(int)).mean() < tol


def test_animated_gif_is_video_and_first_frame_is_the_image():
    data = encode_image(width=96, height=64, fmt="GIF", mode="P", frames=3)
    assert probe(data).kind == "video"
    assert read_index(frame_to_rgb(decode_image(data)).mean(-1)) == 0


def test_committed_images():
    for name, fmt in (("image.jpg", "i420"), ("image.png", "rgb24")):
        fr = decode_image(SAMPLES / name)
        assert fr.format == fmt
    assert probe(SAMPLES / "image.jpg").kind == "image"


def test_numpy_and_pil_inputs():
    a = pattern_rgb(9, 96, 64)
    fr = decode_image(a)
    assert fr.format == "rgb24" and fr.planes[0].shape == (64, 96, 3) and np.shares_memory(fr.planes[0], a)
    from PIL import Image

    fr = decode_image(Image.fromarray(a).convert("RGBA"))
    assert fr.format == "rgb24" and np.array_equal(frame_to_rgb(fr), a)
    with pytest.raises(InputError):
        decode_image(a.astype(np.float32))
    with pytest.raises(InputError):
        decode_image(a[..., :1])


def test_decode_image_of_a_video_takes_first_frame():
    fr = decode_image(mf.clip(duration=1.0))
    assert read_index(fr.planes[0]) == 0


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpeg_exif_orientation_matches_pillow(orientation):
    """FFmpeg exports EXIF orientation as a display matrix; the result matches PIL.exif_transpose."""
    import io

    from PIL import Image, ImageOps

    im = Image.fromarray(pattern_rgb(0, 96, 64))
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    data = buf.getvalue()
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    fr = decode_image(data)
    assert (fr.height, fr.width) == shown.shape[:2]
    assert np.abs(frame_to_rgb(fr).astype(int) - shown.astype(int)).mean() < 4.0


# --- samples already in memory (audio_from_array) -----------------------------------------------
def _explosion() -> np.ndarray:
    return decode_audio(SAMPLES / "explosion.flac")


def test_samples_at_16khz_mono_are_taken_as_they_are():
    w = _explosion()
    np.testing.assert_array_equal(audio_from_array(w), w)
    np.testing.assert_array_equal(audio_from_array(w.astype(np.float64)), w)
    pcm = np.round(w * 32767).astype(np.int16)
    np.testing.assert_allclose(audio_from_array(pcm), pcm / 32768.0, atol=1e-7)


@pytest.mark.parametrize("rate, channels", [(48000, 1), (44100, 2), (16000, 2), (8000, 1)])
def test_samples_are_resampled_and_downmixed_as_decoded_sound(rate, channels):
    t = np.arange(int(rate * 1.3)) / rate
    x = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    x = np.stack([x, 0.5 * x[::-1]], 1) if channels == 2 else x
    np.testing.assert_array_equal(audio_from_array(x, rate), decode_audio(mf.float_wav(x, rate)))


def test_samples_are_made_safe_and_bounded():
    x = np.tile(np.array([np.nan, np.inf, -3e38, 0.5], np.float32), 4000)
    got = audio_from_array(x)
    assert np.isfinite(got).all() and got[:4].tolist() == [0.0, 1.0, -1.0, 0.5]
    with pytest.raises(MediaLimitError, match="max_audio_s"):
        audio_from_array(np.zeros(16000 * 3, np.float32), 16000, Limits(max_audio_s=2.0))
    for bad, rate, error in ((np.zeros(10, np.uint8), 16000, InputError),
                             (np.zeros((10, 3, 2), np.float32), 16000, InputError),
                             (np.zeros((10, 9), np.float32), 16000, InputError),
                             (np.zeros(10, np.float32), 5, InputError),
                             (np.zeros(10, np.float32), 16000.0, InputError),
                             (np.zeros(0, np.float32), 16000, EmptyMediaError)):
        with pytest.raises(error):
            audio_from_array(bad, rate)
