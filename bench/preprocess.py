"""Benchmark: fused native preprocessing vs the paths a user would otherwise write.

1080p I420 frames -> shorter side 256 -> centre crop 224 x 224 -> ImageNet-normalised NCHW float32,
every path doing its own colour conversion, all measured in the same run:

  fused    engine.ops.preprocess (one native pass, batch of frames, antialias filter), with the
           default clamp="source" (RGB clamped before resampling, exactly as an RGB pipeline)
  fused_out  the same with clamp="output" (planes resampled, only output pixels converted and clamped)
  fused1   fused, one frame per call
  naive    PyAV VideoFrame.to_ndarray("rgb24") + cv2.resize(INTER_LINEAR) + numpy normalise/transpose
  opencv   cv2.cvtColor(I420 -> RGB) + cv2.resize(INTER_AREA) + crop + cv2.dnn.blobFromImage
  torch    cv2.cvtColor + torch uint8 interpolate(bilinear, antialias=True) + crop + normalise

Frames/s are reported as quantiles (p10 / median / p90) over repeats, the repeats of all paths
interleaved round-robin so background load hits every path alike; the naive VideoFrames are built
before timing (as a decoder would hand them over). Also printed: the maximum level difference of
each path against the fused antialiased result (the naive INTER_LINEAR path aliases at 4.2x
downscale). OMP_WAIT_POLICY defaults to PASSIVE here (see engine/ops/_native.py).

Usage: ``python bench/preprocess.py [--threads 2] [--frames 16] [--repeats 9] [--paths ...] [--json]``
(--json writes bench/results/preprocess-<time>.json). Runs in ~20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
# torch, OpenCV and engine._C each run a thread pool in this one process; with spinning OpenMP
# workers (the default ACTIVE policy) an idle pool steals the 2 cores from whichever path is being
# timed. Sleep-waiting workers for everyone (set before torch / engine._C load libgomp).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

H, W = 1080, 1920
SHORT, CROP = 256, 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def synthetic_rgb(i: int, height: int = H, width: int = W) -> np.ndarray:
    """Structured content (gradients, zone plate, edges, noise) so aliasing shows."""
    H, W = height, width  # noqa: N806 (the module's frame-size names, for this size)
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = W / 2 + 40 * i, H / 2
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / (H * H)
    zone = 0.5 + 0.5 * np.cos(np.pi * 900 * r2 + i)
    bars = ((x // (3 + i % 3)) % 2).astype(np.float32)
    img = np.stack([
        255 * (0.6 * zone + 0.4 * x / W),
        255 * (0.5 * bars + 0.5 * y / H),
        255 * (0.5 * zone * (y / H) + 0.5 * (1 - x / W)),
    ], -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_rgb(i: int, height: int = H, width: int = W) -> np.ndarray:
    """A real photograph (scikit-learn's bundled samples) at this size, shifted a little per frame."""
    import cv2

    H, W = height, width  # noqa: N806
    from sklearn.datasets import load_sample_image

    img = load_sample_image(("china.jpg", "flower.jpg")[i % 2])
    big = cv2.resize(img, (W + 64, H + 64), interpolation=cv2.INTER_CUBIC)
    dy, dx = (7 * i) % 64, (13 * i) % 64
    return np.ascontiguousarray(big[dy : dy + H, dx : dx + W])


def make_frames(n: int, content: str = "synthetic", height: int = H, width: int = W):
    """``n`` I420 frames as engine Frames and as OpenCV (H*3/2, W) buffers (even sizes only)."""
    import cv2

    from engine.media.frame import Frame

    H, W = height, width  # noqa: N806
    make = {"synthetic": synthetic_rgb, "photo": photo_rgb}.get(content)
    frames, i420s = [], []
    for i in range(n):
        if make is None:  # "random": uniformly random Y'CbCr, mostly outside the RGB gamut
            yuv = np.random.default_rng(i).integers(0, 256, (H * 3 // 2, W), dtype=np.uint8)
        else:
            yuv = cv2.cvtColor(make(i, H, W), cv2.COLOR_RGB2YUV_I420)  # (H*3/2, W) BT.601 limited
        i420s.append(yuv)
        y = yuv[:H]
        u = yuv[H : H + H // 4].reshape(H // 2, W // 2)
        v = yuv[H + H // 4 :].reshape(H // 2, W // 2)
        frames.append(Frame(format="i420", planes=(y, u, v), width=W, height=H, matrix="bt601",
                            full_range=False, pts=i / 30))
    return frames, i420s


def resized_size(height: int = H, width: int = W):
    return SHORT, width * SHORT // height  # (256, 455) at 1080p, torchvision convention


def i420_size(buf: np.ndarray) -> tuple[int, int]:
    """(height, width) of an OpenCV I420 buffer of shape (H*3/2, W)."""
    return buf.shape[0] * 2 // 3, buf.shape[1]


def crop(a: np.ndarray, axis_h=0, height: int = H, width: int = W):
    rh, rw = resized_size(height, width)
    oy, ox = int(round((rh - CROP) / 2)), int(round((rw - CROP) / 2))
    return a[oy : oy + CROP, ox : ox + CROP] if axis_h == 0 else a[..., oy : oy + CROP, ox : ox + CROP]


def run_naive(vframes):
    import cv2

    size = vframes[0].height, vframes[0].width
    rh, rw = resized_size(*size)
    out = np.empty((len(vframes), 3, CROP, CROP), np.float32)
    for k, vf in enumerate(vframes):
        rgb = vf.to_ndarray(format="rgb24")
        r = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        c = crop(r, 0, *size).astype(np.float32) / 255.0
        out[k] = ((c - MEAN) / STD).transpose(2, 0, 1)
    return out


def run_opencv(i420s):
    import cv2

    size = i420_size(i420s[0])
    rh, rw = resized_size(*size)
    out = np.empty((len(i420s), 3, CROP, CROP), np.float32)
    for k, buf in enumerate(i420s):
        rgb = cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420)
        r = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA)
        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(crop(r, 0, *size)), 1 / 255.0, (CROP, CROP),
                                     tuple(float(m) for m in MEAN * 255), swapRB=False, crop=False)
        out[k] = blob[0] / STD[:, None, None]
    return out


def run_torch(i420s):
    import cv2
    import torch

    size = i420_size(i420s[0])
    rh, rw = resized_size(*size)
    out = np.empty((len(i420s), 3, CROP, CROP), np.float32)
    mean = torch.from_numpy(MEAN)[:, None, None]
    std = torch.from_numpy(STD)[:, None, None]
    for k, buf in enumerate(i420s):
        rgb = cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420)
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        r = torch.nn.functional.interpolate(t, size=(rh, rw), mode="bilinear", antialias=True)[0]
        c = crop(r, 1, *size).float() / 255.0
        out[k] = ((c - mean) / std).numpy()
    return out


def preprocess_spec():
    """The spec every fused path uses: shorter side 256, centre crop 224, ImageNet normalisation."""
    from engine.ops import PreprocessSpec

    return PreprocessSpec(size=(CROP, CROP), resize="shorter", resize_to=(SHORT, SHORT), scale=1 / 255,
                          mean=tuple(MEAN.tolist()), std=tuple(STD.tolist()))


def measure_all(paths: dict, n_frames: int, repeats: int, min_time: float = 0.2) -> dict:
    """Frames/s quantiles per path, repeats interleaved round-robin (bench.timing.measure)."""
    from bench.timing import Stats, measure, rates

    seconds = measure(paths, repeats=repeats, min_time=min_time)
    out = {}
    for name, s in seconds.items():
        st = Stats.of(rates(s, n_frames))
        out[name] = {"p10": st.p10, "median": st.median, "p90": st.p90, "repeats": repeats}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--frames", type=int, default=16, help="distinct frames (= fused batch size)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--paths", default="fused,fused_out,fused1,naive,opencv,torch",
                    help="comma-separated subset")
    ap.add_argument("--content", choices=("synthetic", "photo", "random"), default="synthetic",
                    help="synthetic: zone plates, bars, noise (saturated: ~6%% of the pixels out of "
                         "gamut after 4:2:0); photo: two photographs upscaled to 1080p; random: "
                         "uniformly random planes (most pixels out of gamut, the worst case)")
    ap.add_argument("--json", action="store_true", help="write bench/results/preprocess-<time>.json")
    args = ap.parse_args(argv)

    import av
    import cv2
    import torch

    from engine.ops import build_info, preprocess

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    frames, i420s = make_frames(args.frames, args.content)
    vframes = [av.VideoFrame.from_ndarray(b, format="yuv420p") for b in i420s]
    spec = preprocess_spec()
    out = np.empty(spec.output_shape(len(frames)), np.float32)
    out1 = np.empty(spec.output_shape(1), np.float32)
    spec_out = dataclasses.replace(spec, clamp="output")

    def fused():
        preprocess(frames, spec, out=out, threads=args.threads)

    def fused_out():
        preprocess(frames, spec_out, out=out, threads=args.threads)

    def fused1():
        for f in frames:
            preprocess([f], spec, out=out1, threads=args.threads)

    paths = {
        "fused": fused,
        "fused_out": fused_out,
        "fused1": fused1,
        "naive": lambda: run_naive(vframes),
        "opencv": lambda: run_opencv(i420s),
        "torch": lambda: run_torch(i420s),
    }
    wanted = [p for p in args.paths.split(",") if p]
    unknown = set(wanted) - set(paths)
    if unknown or "fused" not in wanted or "naive" not in wanted:
        ap.error(f"--paths must name fused and naive and only {sorted(paths)}")
    paths = {k: v for k, v in paths.items() if k in wanted}
    t_start = time.perf_counter()
    results = measure_all(paths, len(frames), args.repeats)

    # quality: max level difference (0..255 scale) of each path vs the fused antialiased result
    fused()
    ref = out.copy()
    lv = lambda a: a * STD[None, :, None, None] * 255.0 + MEAN[None, :, None, None] * 255.0  # noqa: E731
    runs = {"naive": lambda: run_naive(vframes), "opencv": lambda: run_opencv(i420s),
            "torch": lambda: run_torch(i420s)}
    diffs = {k: float(np.abs(lv(fn()) - lv(ref)).max()) for k, fn in runs.items() if k in paths}
    ratio = results["fused"]["median"] / results["naive"]["median"]
    ratio_out = results.get("fused_out", {}).get("median", float("nan")) / results["naive"]["median"]
    report = {
        "config": {"input": f"{W}x{H} i420 ({args.content})", "resize": f"shorter {SHORT}, centre crop {CROP}",
                   "output": "NCHW float32 ImageNet-normalised", "threads": args.threads,
                   "frames": args.frames, "cpu": platform.processor() or platform.machine(),
                   "build": build_info()},
        "fps": results,
        "ratio_fused_over_naive": ratio,
        "ratio_fused_out_over_naive": ratio_out,
        "max_level_diff_vs_fused": diffs,
        "seconds": time.perf_counter() - t_start,
    }
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"1080p I420 ({args.content}) -> 256 -> crop 224, NCHW fp32, "
                            f"{args.threads} threads")
        for col in ("path", "p10 fps", "median fps", "p90 fps", "x naive", "max |diff| vs fused (levels)"):
            table.add_column(col, justify="right")
        for name, r in results.items():
            table.add_row(name, f"{r['p10']:.0f}", f"{r['median']:.0f}", f"{r['p90']:.0f}",
                          f"{r['median'] / results['naive']['median']:.2f}", f"{diffs.get(name, 0.0):.1f}")
        Console().print(table)
    except ImportError:  # pragma: no cover
        print(json.dumps(results, indent=2))
    build = report["config"]["build"]
    kernels = "avx512" if build.get("avx512_kernels") else ("avx2" if build.get("avx2_kernels") else "portable")
    print(f"fused / naive = {ratio:.2f}x, fused_out / naive = {ratio_out:.2f}x (goal >= 5x); "
          f"content {args.content}; simd {build.get('simd_selected')}, kernels {kernels}")
    if args.json:
        d = Path(__file__).resolve().parent / "results"
        d.mkdir(exist_ok=True)
        p = d / f"preprocess-{time.strftime('%Y%m%d-%H%M%S')}.json"
        p.write_text(json.dumps(report, indent=2))
        print(f"wrote {p}")
    return report


if __name__ == "__main__":
    main()
