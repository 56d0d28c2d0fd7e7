#!/usr/bin/env python3
"""Regenerate the small synthetic media in samples/ (all content generated here; < 2 MB total).

    python scripts/make_samples.py [--out samples]

speech.m4a needs the ``espeak-ng`` program (``apt-get install espeak-ng``); without it the file is
left as it is.  explosion.flac needs scipy (the dev extra).  Everything else is encoded with PyAV (libx264 / AAC / Pillow).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.media import synthetic as syn  # noqa: E402

SPEECH_TEXT = "This is a test of the moderation engine."


def speech(out: Path) -> bool:
    exe = shutil.which("espeak-ng")
    if exe is None:
        print("espeak-ng not found: speech sample skipped", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory() as td:
        wav = Path(td) / "speech.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(wav), SPEECH_TEXT], check=True)
        with av.open(str(wav)) as c:
            rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
            parts = [rf.to_ndarray().reshape(-1) for f in c.decode(audio=0) for rf in rs.resample(f)]
            parts += [rf.to_ndarray().reshape(-1) for rf in rs.resample(None)]
    samples = np.concatenate(parts).astype(np.float32)
    syn.encode_audio(out, samples, rate=16000, codec="aac", container="mp4")
    return True


def explosion(out: Path) -> None:
    """5 s of silence with a synthetic blast at 1 s (low-passed noise burst + crack) that YAMNet
    hears as "Explosion": the demo's example of a flagged audio policy with timestamps."""
    from scipy.signal import butter, lfilter

    sr, rng = 16000, np.random.default_rng(1)
    t = np.arange(int(2.5 * sr)) / sr
    b, a = butter(4, 800 / (sr / 2))
    rumble = lfilter(b, a, rng.normal(0, 1, t.size)) * np.exp(-4.0 * t)
    crack = rng.normal(0, 1, t.size) * np.exp(-40.0 * t)
    blast = rumble / np.abs(rumble).max() + 0.5 * crack
    wave = np.zeros(5 * sr, np.float32)
    wave[sr:sr + t.size] = 0.95 * blast / np.abs(blast).max()
    syn.encode_audio(out, wave, rate=sr, codec="flac", container="flac")  # lossless: AAC at 16 kHz
                                                                         # dulls the blast


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "samples"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x264 = {"crf": "30"}
    # 5 s 640x360 30 fps H.264 (keyframe every second) + 440 Hz AAC tone
    syn.encode_video(out / "clip_tone.mp4", width=640, height=360, fps=30, duration=5.0, gop=30,
                     audio=True, audio_freq=440.0, preset="medium", options=x264)
    # 2 s 320x240 with a 90-degree display rotation (tkhd matrix)
    data = syn.encode_video(width=320, height=240, fps=15, duration=2.0, gop=15, preset="medium",
                            options=x264)
    (out / "rotated.mp4").write_bytes(syn.set_mp4_rotation(data, 90))
    # 1 s 10-bit 4:2:0 and 8-bit 4:4:4 H.264, BT.709 full/limited tags
    syn.encode_video(out / "clip_10bit.mp4", width=320, height=240, fps=15, duration=1.0,
                     pix_fmt="yuv420p10le", preset="medium", options=x264)
    syn.encode_video(out / "clip_444.mp4", width=320, height=240, fps=15, duration=1.0,
                     pix_fmt="yuv444p", preset="medium", options=x264)
    syn.encode_image(out / "image.jpg", width=640, height=480, fmt="JPEG", quality=85)
    syn.encode_image(out / "image.png", width=320, height=240, fmt="PNG", optimize=True)
    speech(out / "speech.m4a")
    explosion(out / "explosion.flac")
    total = 0
    for p in sorted(out.iterdir()):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.name:20s} {p.stat().st_size:9d} bytes")
    print(f"{'total':20s} {total:9d} bytes")
    return 0 if total < 2 * 1024 * 1024 else 1


if __name__ == "__main__":
    raise SystemExit(main())
