"""End-to-end suite: items through ``Session.submit`` against each stage alone, on the same items.

Per kind (video, image, audio, text), interleaved round-robin in one run:

  session      ``n`` items submitted at once to one Session (default workers), all awaited
  <stage>      one stage alone on one item, on all cores: decode, preprocess, the model; for text
               the tokenizer + MiniLM and the profanity classifier

Everything is in the kind's unit: videos/s, images/s, audio-s/s (the clip's seconds) and texts/s
(one text per item); a stage's throughput is the rate the Session could reach if that stage were
all it did. ``session÷slowest`` is the per-round ratio of the end-to-end rate to the slowest
stage's: 1 means the pipeline runs as fast as its bottleneck; below it, the stages compete for the
same cores (on a 2-core CPU they add up rather than overlap) or the serving layer costs time.

On a GPU the same items also go through ``Session(device="cuda:0", kernel_impl=...)`` for each
kernel implementation that loads (``session-gpu-cuda``, ``session-gpu-triton``; the device
pipeline: preprocessing, models and pooling on the GPU, decoding on the CPU; and
``session-gpu-cuda-nvdec``, decoding with NVDEC, where PyNvVideoCodec imports) in the same rounds,
with ``session-gpu-<impl>÷session`` per round; the stages stay the CPU's. Without a GPU one note
says these rows were skipped. Ran on an H100 (bench/baselines/h100/decode-models-e2e-quick.*;
video, image and audio: the text models were not carried to that machine).

Items: the decode suite's H.264 clip (480p 6 s quick, 1080p 10 s full; no sound track) with the
pipeline's sampling (1 fps), ``samples/image.jpg``, ``samples/speech.m4a``, a short caption, and a
post of 40 sentences (kind "post", posts/s). A text is judged whole and sentence by sentence (Note
[text segments] in engine/text_units.py): a post's stages are the whole text through each model
(what judging it whole costs) and ``units``, every sentence and reading through both models (what
the policies do); ``units÷embedding`` (throughputs: 0.25 = four times the time) is the price of
judging sentence by sentence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from bench import gpu
from bench.results import Figure, ratio_figure
from bench.suites import RunConfig, SuiteResult, Tick
from bench.timing import measure, rates
from bench.workload import ITEMS, MODEL_REPO

SUITE = "e2e"
KINDS = ("video", "image", "audio", "text", "post")
UNITS = {"video": "videos/s", "image": "images/s", "audio": "audio-s/s", "text": "texts/s", "post": "posts/s"}
POST_SENTENCES = 40


def items_in_flight(kind: str, cfg: RunConfig) -> int:
    """Items submitted at once per session call: enough to keep every worker busy."""
    n = {"video": 4, "image": 8, "audio": 8, "text": 32, "post": 4}[kind]
    return n if cfg.quick else 2 * n


def post_item() -> tuple[dict, str]:
    """A post of POST_SENTENCES everyday sentences of 6 to 20 words (the same every run)."""
    import random

    rng = random.Random(0)
    words = ("we had a lovely day at the park with the kids and then it rained so we went home "
             "for tea after the game my friend said that the new film was great").split()
    text = " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 20))).capitalize() + "."
                    for _ in range(POST_SENTENCES))
    return {"text": text}, f"post of {POST_SENTENCES} sentences, {len(text)} characters"


def video_item(cfg: RunConfig):
    from bench.decode import make_clip
    from bench.suites.decode import clip_shape

    seconds, height, width = clip_shape(cfg)
    return {"video": make_clip(seconds, 8, "libx264", height, width)}, f"h264 {width}x{height} {seconds} s"


def steps(cfg: RunConfig) -> int:
    return len(KINDS)


def stage_paths(session, kind: str, item: dict) -> tuple[dict[str, Callable[[], object]], float]:
    """({stage: one item through that stage alone}, units per item) for one kind."""
    import numpy as np

    from engine import media
    from engine.media.loudness import integrated_loudness
    from engine.ops.audio import SAMPLE_RATE, yamnet_patches
    from engine.ops.preprocess import preprocess

    p = session.pipeline
    if kind == "video":
        decoded = session._decode_video(item["video"], {})
        frames, chunk = decoded.frames, p.vision.batch_size
        vision = session.backend(p.vision.model)
        batches = [preprocess(frames[i:i + chunk], session._spec) for i in range(0, len(frames), chunk)]
        return {"decode": lambda: session._decode_video(item["video"], {}),
                "preprocess": lambda: [preprocess(frames[i:i + chunk], session._spec)
                                       for i in range(0, len(frames), chunk)],
                "model": lambda: [vision.infer({p.vision.input: x}) for x in batches]}, 1.0
    if kind == "image":
        frame = media.decode_image(item["image"], session.limits)
        x = preprocess([frame], session._spec)
        vision = session.backend(p.vision.model)
        return {"decode": lambda: media.decode_image(item["image"], session.limits),
                "preprocess": lambda: preprocess([frame], session._spec),
                "model": lambda: vision.infer({p.vision.input: x})}, 1.0
    if kind == "audio":
        wave = media.decode_audio(item["audio"], session.limits)
        patches, _ = yamnet_patches(wave)
        audio = session.backend(p.audio.model)
        name_in = p.audio.input or audio.inputs[0].name
        return {"decode": lambda: media.decode_audio(item["audio"], session.limits),
                "loudness": lambda: integrated_loudness(wave),  # Note [loudness]: every clip is measured
                "frontend": lambda: yamnet_patches(wave),
                "model": lambda: audio.infer({name_in: patches})}, len(wave) / SAMPLE_RATE
    texts = [item["text"]]
    classifier = session.backend(p.text_classifier.model)
    stages = {"embedding": lambda: session._embed_texts(texts),  # tokenizer + MiniLM + pooling
              "classifier": lambda: classifier.infer({classifier.inputs[0].name: np.array(texts, dtype=object)})}
    if kind == "post":  # every sentence and reading through both models, as the policies judge it
        stages["units"] = lambda: session._text_scores(texts, {})
    return stages, 1.0


def kind_part(session, kind: str, item: dict, cfg: RunConfig, out: SuiteResult, describe: str,
              gpu_sessions: dict | None = None) -> None:
    """``gpu_sessions``: {path name: another Session} timed on the same items beside ``session``."""
    n = items_in_flight(kind, cfg)

    def through(s):
        def call():
            for f in [s.submit(item) for _ in range(n)]:
                f.result()
        return call

    sessions = {"session": through(session), **{name: through(s) for name, s in (gpu_sessions or {}).items()}}
    stages, units = stage_paths(session, kind, item)
    seconds = measure({**sessions, **stages}, repeats=cfg.repeats, min_time=cfg.min_time)
    unit = UNITS[kind]
    params = {"kind": kind, "item": describe, "units_per_item": units, "in_flight": n}
    figs = {}
    for path, secs in seconds.items():
        per_call = units * (n if path in sessions else 1)
        figs[path] = Figure(name=f"{SUITE}/{kind}/{path}", suite=SUITE, unit=unit, better="higher",
                            samples=rates(secs, per_call), params={**params, "path": path})
    out.figures += figs.values()
    slowest = [min(figs[s].samples[i] for s in stages) for i in range(cfg.repeats)]
    which = min(stages, key=lambda s: figs[s].stats.median)
    out.figures.append(Figure(
        name=f"{SUITE}/{kind}/session÷slowest", suite=SUITE, unit="x", better="higher",
        samples=[s / b for s, b in zip(figs["session"].samples, slowest)],
        params={**params, "slowest_stage": which}))
    out.figures += [ratio_figure(f"{SUITE}/{kind}/{name}÷session", SUITE, figs[name], figs["session"],
                                 {**params, "path": name}) for name in gpu_sessions or {}]
    if "units" in figs:
        out.figures.append(ratio_figure(f"{SUITE}/{kind}/units÷embedding", SUITE, figs["units"],
                                        figs["embedding"], params))
    out.notes.append(f"{kind}: slowest stage {which}, session reaches "
                     f"{figs['session'].stats.median / figs[which].stats.median:.0%} of it")


def run(cfg: RunConfig, tick: Tick, repo_path=MODEL_REPO, kinds=KINDS) -> SuiteResult:
    from engine import Session

    out = SuiteResult()
    no_gpu = gpu.unavailable()
    if no_gpu:
        out.notes.append(gpu.skip_note('Session(device="cuda:0") per kernel_impl', no_gpu))
    with contextlib.ExitStack() as closing:  # every Session is closed (drained) on the way out
        session = closing.enter_context(Session(repo_path))
        gpu_sessions = {} if no_gpu else gpu.sessions(repo_path, out.notes)
        for s in gpu_sessions.values():
            closing.enter_context(s)
        session.warmup()
        p = session.pipeline
        served = {"video": p.vision, "image": p.vision, "audio": p.audio,
                  "text": p.text_embedding and p.text_classifier,
                  "post": p.text_embedding and p.text_classifier}
        for kind in kinds:
            if not served[kind]:  # a subset repository (bench/repo_subset.py)
                out.notes.append(f"{kind}: the pipeline of {repo_path} does not serve it, its rows skipped")
                tick(kind)
                continue
            if kind == "video":
                item, describe = video_item(cfg)
            elif kind == "post":
                item, describe = post_item()
            else:
                item = ITEMS[kind]
                value = next(iter(item.values()))
                describe = value if isinstance(value, str) else value.name  # the sample's file name
            kind_part(session, kind, item, cfg, out, describe, gpu_sessions)
            tick(kind)
    return out
