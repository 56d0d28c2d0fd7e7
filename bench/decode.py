#!/usr/bin/env python3
"""Decode-stage benchmark: 1 fps sampling vs decoding every frame.

Clip: 10 s 1920x1080 30 fps H.264 (x264 veryfast, B-frames, keyframe every second, moving test
pattern with per-frame grain so predicted frames cost what they do in camera video), generated once
into the media cache dir ($ENGINE_MEDIA_CACHE or ~/.cache/moderation-engine/media).

Rows (median of --repeats runs, wall-clock, same process):
  decode-all      PyAV decodes every frame (thread_type AUTO), frames discarded
  1fps-auto       decode_video(Sampling("fps", 1))        -> keyframe strategy here
  1fps-exact      decode_video(Sampling("fps", 1, exact=True)) -> seek (targets on keyframes)
  mid-gop-exact   decode_video(Sampling("uniform", 10, exact=True)): targets at k+0.5 s, i.e.
                  mid-GOP -> seek + decode forward 16 frames per sample (the worst exact case)
Target: 1fps-auto <= 1/8 of decode-all.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.media import Sampling, decode_video  # noqa: E402
from engine.media import synthetic as syn  # noqa: E402


# encoder -> options that keep the clip's quality near x264 crf 20 at a tolerable encode time
ENCODER_OPTIONS = {
    "libx264": {"crf": "20"},
    "libx265": {"crf": "22"},
    "libvpx-vp9": {"crf": "32", "b": "0"},
    "libsvtav1": {"crf": "35", "preset": "12"},
}


def make_clip(seconds: int = 10, grain: int = 8, codec: str = "libx264", height: int = 1080,
              width: int = 1920) -> Path:
    """The benchmark clip (30 fps, keyframe every second), encoded once into the media cache."""
    tag = "" if codec == "libx264" else f"_{codec}"  # the H.264 name predates the other codecs
    size = "1080p" if (height, width) == (1080, 1920) else f"{width}x{height}"
    path = syn.cache_dir() / f"bench_{size}_{seconds}s_gop30_grain{grain}{tag}.mp4"
    if not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        syn.encode_video(tmp, width=width, height=height, fps=30, duration=float(seconds), gop=30,
                         codec=codec, preset="veryfast", grain=grain, options=ENCODER_OPTIONS.get(codec))
        tmp.rename(path)
        print(f"generated {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    return path


# AVColorSpace BT2020_NCL, AVColorRange MPEG, AVColorTransferCharacteristic ARIB_STD_B67 (HLG),
# AVColorPrimaries BT2020: how a phone's HDR video is tagged
HLG_TAGS = {"colorspace": 9, "color_range": 1, "color_trc": 18, "color_primaries": 9}


def hdr_frames(n: int, height: int, width: int) -> list:
    """``n`` decoded-looking 10-bit 4:2:0 frames tagged HLG / BT.2020 (the moving test pattern with
    grain; the conversions timed on them do not depend on the picture)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = syn.pattern_rgb(i, width, height).astype(np.int16)
        img = np.clip(img + rng.integers(-8, 9, img.shape[:2] + (1,)), 0, 255).astype(np.uint8)
        vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
            format="yuv420p10le", dst_colorspace=HLG_TAGS["colorspace"], dst_color_range=1)
        for k, v in HLG_TAGS.items():
            setattr(vf, k, v)
        vf.pts, vf.time_base = i, Fraction(1, 30)
        out.append(vf)
    return out


def make_audio_clip(seconds: int = 10, rate: int = 44100, channels: int = 2) -> Path:
    """The audio benchmark clip (AAC in MP4, a tone: the decoder's cost does not depend on the
    content), encoded once into the media cache."""
    path = syn.cache_dir() / f"bench_audio_{seconds}s_{rate}_{channels}ch.m4a"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        syn.encode_audio(tmp, seconds=float(seconds), rate=rate, channels=channels)
        tmp.rename(path)
    return path


def decode_audio_per_frame(source: Path | bytes, rate: int = 16000) -> np.ndarray:
    """The audio decode a PyAV user writes: every decoded frame through one resampler to float32
    mono at ``rate``, then a flush, joined into one waveform as decode_audio returns it (the
    baseline of Note [batched resampling] in engine/media/audio.py, and the reference its tests
    compare with)."""
    with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as c:
        st = c.streams.audio[0]
        r = av.AudioResampler(format="flt", layout="mono", rate=rate)
        out = [o.to_ndarray().reshape(-1) for f in c.decode(st) for o in r.resample(f)]
        out += [o.to_ndarray().reshape(-1) for o in r.resample(None)]
    return np.concatenate(out)


def decode_exact_per_target(path: Path, targets: list[float]) -> list[float]:
    """The exact sampling a PyAV user writes: for each target time (stream seconds) seek to the
    keyframe before it and decode until the frame on screen at it (the last one starting at or
    before it, within the engine's 1 ms); returns the frames' times. The baseline of Note
    [skipping non-reference frames] in engine/media/video.py."""
    out = []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb = vs.time_base
        for t in targets:
            c.seek(int(t / tb), stream=vs, backward=True, any_frame=False)
            shown = None
            for f in c.decode(vs):
                if f.time > t + 1e-3 and shown is not None:
                    break  # the frame before this one is on screen at t
                shown = f
                if f.time >= t - 1e-3:
                    break
            out.append(shown.time)
    return out


def decode_all(path: Path) -> int:
    n = 0
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        for _ in c.decode(vs):
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--grain", type=int, default=8,
                    help="noise amplitude of the clip (0 = flat synthetic pattern, very cheap P-frames)")
    args = ap.parse_args(argv)
    path = make_clip(args.seconds, args.grain)

    rows = []

    def bench(name, fn):
        times, info = [], ""
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
            info = out
        rows.append((name, statistics.median(times), min(times), info))

    bench("decode-all", lambda: f"{decode_all(path)} frames decoded")

    def sampled(exact):
        dv = decode_video(path, Sampling("fps", 1.0, exact=exact))
        return (f"{len(dv.frames)} frames, {dv.decoded_frames} decoded, strategy={dv.strategy}, "
                f"pts={dv.timestamps}")

    bench("1fps-auto", lambda: sampled(False))
    bench("1fps-exact", lambda: sampled(True))

    def midgop():
        dv = decode_video(path, Sampling("uniform", args.seconds, exact=True))
        return f"{len(dv.frames)} frames, {dv.decoded_frames} decoded, strategy={dv.strategy}"

    bench("mid-gop-exact", midgop)

    base = rows[0][1]
    print(f"\nclip: {path.name} ({path.stat().st_size / 1e6:.1f} MB)  repeats={args.repeats}  "
          f"(wall-clock seconds)")
    print(f"{'mode':14s} {'median':>8s} {'min':>8s} {'/all':>7s}  detail")
    for name, med, mn, info in rows:
        print(f"{name:14s} {med:8.3f} {mn:8.3f} {med / base:7.3f}  {info}")
    ratio = rows[1][1] / base
    ok = ratio <= 1 / 8
    print(f"\n1fps-auto / decode-all = {ratio:.3f} (target <= 0.125): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
