"""Decode suite: decoding every frame vs the sampling the pipeline uses, per codec, same run.

Clips come from ``bench/decode.py``'s ``make_clip`` (FFmpeg through PyAV: moving test pattern with
per-frame grain, 30 fps, keyframe every second), one per codec whose encoder this PyAV build has;
a codec without an encoder is skipped with a note. Modes:

  all        PyAV decodes every frame (thread_type AUTO), frames discarded (bench/decode.py)
  1fps       engine decode_video(Sampling("fps", 1))       -> keyframe strategy for these clips
  8-uniform  engine decode_video(Sampling("uniform", 8))   -> 8 frames at segment centres
  8-exact    engine decode_video(Sampling("uniform", 8, exact=True)) -> seeks to the exact frames,
             skipping non-reference frames on the way (Note [skipping non-reference frames])
  8-exact-loop  the same frames by the seek-and-decode loop a PyAV user writes (bench/decode.py),
             the baseline of ``8-exact÷8-exact-loop``
  decord-*   the same three samplings through decord (engine.media.decode_video_decord: RGB
             frames, as the model card's decord pipeline reads them), when decord imports

Throughput is clip seconds decoded per wall second (``video-s/s``) for ``all`` and ``1fps``, whose
cost grows with the clip's length, and whole videos per second for the 8-frame modes, whose cost is
per video. Same-run speed-ups against ``all`` come from the per-round time ratio.

Audio (``decode/audio/...``, audio-s/s of a 44.1 kHz stereo AAC clip to 16 kHz mono float32):

  engine      engine decode_audio (frames resampled in runs, Note [batched resampling])
  per-frame   PyAV decode with every frame through the resampler (bench/decode.py), the baseline
  *-4threads  the same on 4 threads at once, as a Session's workers decode: the GIL each holds
              shows as throughput that does not grow with the threads

with ``engine÷per-frame`` and ``engine-4threads÷per-frame-4threads`` per round.

HDR to SDR (``decode/hdr/...``, frames/s over the frames of one video: 10 decoded 10-bit 4:2:0
frames tagged HLG / BT.2020, 1080p, 480p with --quick; bench/decode.py ``hdr_frames``):

  engine          engine frame_from_av: the SDR picture by engine.ops.sdr.to_sdr (Note [HDR to SDR])
  ffmpeg-cms      FFmpeg 8's colour-managed swscale (``scale=out_transfer=bt709:out_primaries=bt709``)
                  with the filter graph built for the video, as a PyAV user writes it: the baseline
  ffmpeg-cms-warm the same graph built once beforehand (its 3-D LUT set up): FFmpeg's per-frame cost
  matrix-only     swscale's rgb24 with the BT.2020 matrix alone (the engine before: wrong colours)

with ``engine÷ffmpeg-cms``, ``engine÷ffmpeg-cms-warm`` and ``engine÷matrix-only`` per round.
"""

from __future__ import annotations

import os

from bench.results import Figure
from engine.errors import MediaError
from bench.suites import RunConfig, SuiteResult, Tick
from bench.timing import in_flight, measure, rates

SUITE = "decode"
# codec name in results -> PyAV encoder
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
MODES = ("all", "1fps", "8-uniform")  # the engine decoder's figures the capacity plan reads
SAMPLING = {"all": "all", "1fps": "fps=1", "8-uniform": "uniform=8", "8-exact": "uniform=8 exact",
            "8-exact-loop": "uniform=8 exact"}  # mode -> sampling label


def clip_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """(seconds, height, width) of the clips: 480p for --quick, 1080p otherwise."""
    return (6, 480, 848) if cfg.quick else (10, 1080, 1920)


def available_encoders() -> dict[str, str]:
    import av

    found = {}
    for codec, encoder in ENCODERS.items():
        try:
            av.codec.Codec(encoder, "w")
        except Exception:  # av.codec.codec.UnknownCodecError; the class moved between PyAV versions
            continue
        found[codec] = encoder
    return found


def steps(cfg: RunConfig) -> int:
    return len(ENCODERS) + 2  # + audio, HDR


AUDIO_THREADS = 4


def audio_seconds(cfg: RunConfig) -> int:
    return 5 if cfg.quick else 10


def audio_rows(cfg: RunConfig, out: SuiteResult) -> None:
    from bench.decode import decode_audio_per_frame, make_audio_clip
    from engine.media import decode_audio

    seconds = audio_seconds(cfg)
    path = make_audio_clip(seconds)
    one = {"engine": lambda: decode_audio(path), "per-frame": lambda: decode_audio_per_frame(path)}
    paths = {**one, **{f"{k}-{AUDIO_THREADS}threads": in_flight(fn, AUDIO_THREADS) for k, fn in one.items()}}
    timed = measure(paths, repeats=max(3, cfg.repeats // 2), min_time=0.0)
    params = {"clip": f"AAC 44.1 kHz stereo {seconds} s", "clip_seconds": seconds, "output": "16 kHz mono float32"}
    for mode, secs in timed.items():
        threads = AUDIO_THREADS if mode.endswith("threads") else 1
        out.figures.append(Figure(name=f"{SUITE}/audio/{mode}", suite=SUITE, unit="audio-s/s", better="higher",
                                  samples=rates(secs, float(seconds * threads)),
                                  params={**params, "threads": threads}))
    for engine_mode, base in (("engine", "per-frame"), (f"engine-{AUDIO_THREADS}threads", f"per-frame-{AUDIO_THREADS}threads")):
        out.figures.append(Figure(name=f"{SUITE}/audio/{engine_mode}÷{base}", suite=SUITE, unit="x", better="higher",
                                  samples=[b / e for e, b in zip(timed[engine_mode], timed[base])], params=params))


HDR_FRAMES = 10


def hdr_rows(cfg: RunConfig, out: SuiteResult) -> None:
    from bench.decode import hdr_frames
    from engine.media import frame_from_av
    from engine.media.synthetic import FFMPEG_TO_SDR, ScaleGraph

    _, height, width = clip_shape(cfg)
    frames = hdr_frames(HDR_FRAMES, height, width)
    warm = ScaleGraph(frames[0], FFMPEG_TO_SDR, "rgb24")

    def cms() -> None:  # the graph built for the video, as a PyAV user does
        conv = ScaleGraph(frames[0], FFMPEG_TO_SDR, "rgb24")
        for f in frames:
            conv(f).to_ndarray()

    paths = {
        "engine": lambda: [frame_from_av(f) for f in frames],
        "ffmpeg-cms": cms,
        "ffmpeg-cms-warm": lambda: [warm(f).to_ndarray() for f in frames],
        "matrix-only": lambda: [f.reformat(format="rgb24", src_colorspace=9) for f in frames],
    }
    timed = measure(paths, repeats=max(3, cfg.repeats // 3), min_time=0.0)
    params = {"frames": f"{HDR_FRAMES} of {width}x{height} yuv420p10le HLG BT.2020", "output": "rgb24 SDR BT.709"}
    for mode, secs in timed.items():
        out.figures.append(Figure(name=f"{SUITE}/hdr/{mode}", suite=SUITE, unit="frames/s", better="higher",
                                  samples=rates(secs, float(HDR_FRAMES)), params=params))
    for base in ("ffmpeg-cms", "ffmpeg-cms-warm", "matrix-only"):
        out.figures.append(Figure(name=f"{SUITE}/hdr/engine÷{base}", suite=SUITE, unit="x", better="higher",
                                  samples=[b / e for e, b in zip(timed["engine"], timed[base])], params=params))


def _paths(path, seconds: float) -> tuple[dict, list[str]]:
    """The timed calls by mode, and notes (the exact loop's frames not the engine's)."""
    from bench.decode import decode_all, decode_exact_per_target
    from engine.media import Sampling, decode_video
    from engine.media.decord_source import decode_video_decord, decord_available

    samplings = {"1fps": Sampling("fps", 1.0), "8-uniform": Sampling("uniform", 8)}
    paths = {"all": lambda: decode_all(path)}
    paths.update({m: (lambda s=s: decode_video(path, s)) for m, s in samplings.items()})
    import av

    exact = decode_video(path, Sampling("uniform", 8, exact=True))
    with av.open(str(path)) as c:  # the engine's times count from the stream's start
        vs = c.streams.video[0]
        start = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
    targets = [start + t for t in exact.targets]
    paths["8-exact"] = lambda: decode_video(path, Sampling("uniform", 8, exact=True))
    paths["8-exact-loop"] = lambda: decode_exact_per_target(path, targets)
    notes = []
    if [round(t - start, 4) for t in decode_exact_per_target(path, targets)] != [round(t, 4) for t in exact.timestamps]:
        notes.append(f"{path.name}: the PyAV seek loop did not pick the engine's frames")
    if decord_available():
        samplings["all"] = Sampling("all")
        paths.update({f"decord-{m}": (lambda s=s: decode_video_decord(path, s)) for m, s in samplings.items()})
    return paths, notes


def run(cfg: RunConfig, tick: Tick) -> SuiteResult:
    from bench.decode import make_clip

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise
    out = SuiteResult()
    seconds, height, width = clip_shape(cfg)
    encoders = available_encoders()
    repeats = max(3, cfg.repeats // 2)  # one call is a whole clip: fewer, longer repetitions
    for codec, encoder in ENCODERS.items():
        if codec not in encoders:
            out.notes.append(f"{codec}: skipped, this PyAV build has no {encoder} encoder")
            tick(f"{codec} skipped")
            continue
        path = make_clip(seconds, 8, encoder, height, width)
        paths, notes = _paths(path, seconds)
        out.notes += notes
        decord_modes = [m for m in paths if m.startswith("decord-")]
        if not decord_modes:
            out.notes.append(f"{codec}: decord not importable, its rows are missing (pip install decord==0.6.0)")
        else:
            try:  # decord's bundled FFmpeg lacks some decoders: leave its rows out, keep PyAV's
                paths[decord_modes[0]]()
            except MediaError as e:
                out.notes.append(f"{codec}: decord rows missing, decord fails on this clip ({e})")
                for m in decord_modes:
                    del paths[m]
        timed = measure(paths, repeats=repeats, min_time=0.0)
        params = {"codec": codec, "encoder": encoder, "clip": f"{width}x{height} 30 fps {seconds} s gop 30",
                  "clip_seconds": seconds, "resolution": f"{height}p"}
        for mode, secs in timed.items():
            base_mode = mode.removeprefix("decord-")
            pyav = mode == base_mode
            stage = mode in MODES  # the engine's decoder: the stage bench plan reads
            per_video = base_mode.startswith("8-")
            sampling = SAMPLING[base_mode]
            items = 1.0 if per_video else float(seconds)
            out.figures.append(Figure(
                name=f"{SUITE}/{codec}/{mode}", suite=SUITE, unit="videos/s" if per_video else "video-s/s",
                better="higher", samples=rates(secs, items),
                params={**params, "sampling": sampling, "decoder": "pyav" if pyav else "decord"},
                **({"stage": "decode", "items_per_call": items} if stage else {})))
            if mode != "all":
                out.figures.append(Figure(
                    name=f"{SUITE}/{codec}/{mode}÷all", suite=SUITE, unit="x", better="higher",
                    samples=[a / b for a, b in zip(timed["all"], secs)], params={**params, "sampling": sampling}))
            if not pyav or mode == "8-exact-loop":  # the engine against another decode, same frames, per round
                engine_mode = "8-exact" if pyav else base_mode
                out.figures.append(Figure(
                    name=f"{SUITE}/{codec}/{engine_mode}÷{mode}", suite=SUITE, unit="x", better="higher",
                    samples=[a / b for a, b in zip(secs, timed[engine_mode])], params={**params, "sampling": sampling}))
        tick(codec)
    audio_rows(cfg, out)
    tick("audio")
    hdr_rows(cfg, out)
    tick("hdr")
    return out
