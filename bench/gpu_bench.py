"""Bandwidth of the CUDA and Triton kernels against a device-to-device copy measured in the same run.

Per op: median kernel time over many launches (CUDA events around each launch; a
``torch.cuda._sleep`` queued first so host-side launch overhead is hidden), achieved bandwidth
= (bytes read + bytes written) / time, and the same for ``dst.copy_(src)`` moving the same
total traffic (a copy of N bytes reads N and writes N). Target of issue 3: >= 80 % of copy.
Also the torch pipeline a user would otherwise write (I420 -> RGB with chroma replication,
clamp, ``interpolate(antialias=True)``, normalise) for the preprocess case.

Each op runs once per implementation (``--impl``): ``cuda`` (engine.ops.cuda, engine._C_cuda) and
``triton`` (engine.kernels, compiled; first call compiles, warm-up excludes it), against the same
copy baseline. Triton-only rows: preprocess with ``clamp="output"`` (the CUDA kernel implements
"source" only) and the log-mel projection.

End to end (``--e2e-reps``, 0 skips): ``Session(device="cuda:0", kernel_impl=...).moderate`` of
one video (``--video``, default the bundled 5 s sample with its audio track) per implementation,
videos/s over the repetitions after one warm-up call, next to the CPU Session in the same run;
skipped with a line when the model repository (``--repo``) is not fetched.

``python3 bench/gpu_bench.py [--reps 50] [--batch 32] [--impl cuda triton] [--e2e-reps 10]``;
prints one table, then the end-to-end lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import engine.ops.cuda as cuda_ops  # noqa: E402
from engine.ops.audio import mel_filterbank  # noqa: E402
from engine.ops.preprocess import PreprocessSpec  # noqa: E402

IMPLS = ("cuda", "triton")

NORM = dict(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def time_op(fn, reps: int, warmup: int = 5) -> float:
    """Median seconds of fn() on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1_000_000)  # keep the GPU busy while the host enqueues
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def copy_bandwidth(traffic_bytes: int, reps: int) -> tuple[float, float]:
    n = traffic_bytes // 2
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = time_op(lambda: dst.copy_(src), reps)
    return t, 2 * n / t


def footprint_bytes(spec: PreprocessSpec, h: int, w: int, batch: int) -> int:
    """Source bytes an I420 frame batch contributes: luma rows/cols inside the taps' span."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "kernels"))
    from reference import axis_matrix, geometry

    to = spec.resize_to if spec.resize_to is not None else spec.size
    (rh, oy), (rw, ox) = geometry(spec.resize, h, w, spec.size[0], spec.size[1], to)
    my, _ = axis_matrix(spec.filter, h, rh, spec.size[0], oy)
    mx, _ = axis_matrix(spec.filter, w, rw, spec.size[1], ox)
    rows = (my != 0).any(0).nonzero()[0]
    cols = (mx != 0).any(0).nonzero()[0]
    ny, nx = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    return int(batch * ny * nx * 1.5)  # Y + U + V (4:2:0)


def torch_pipeline(y, u, v, size):
    """What a user writes in torch: replicate chroma, BT.601 limited -> RGB, clamp, antialias resize."""
    uu = u.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, : y.shape[1], : y.shape[2]].float()
    vv = v.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, : y.shape[1], : y.shape[2]].float()
    yy = (y.float() - 16.0) * (255.0 / 219.0)
    pb, pr = (uu - 128.0) * (255.0 / 224.0), (vv - 128.0) * (255.0 / 224.0)
    r = yy + 1.402 * pr
    g = yy - 0.344136 * pb - 0.714136 * pr
    b = yy + 1.772 * pb
    rgb = torch.stack([r, g, b], 1).clamp_(0, 255)
    out = torch.nn.functional.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(NORM["mean"], device=y.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(NORM["std"], device=y.device).view(1, 3, 1, 1) * 255
    return (out - mean) / std


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS),
                    help="implementations to time (default: both)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--repo", default=os.path.join(root, "model_repo"), help="model repository (end to end)")
    ap.add_argument("--video", default=os.path.join(root, "samples", "clip_tone.mp4"), help="video (end to end)")
    ap.add_argument("--e2e-reps", type=int, default=10, help="moderate() calls per Session (0: skip)")
    return ap.parse_args(argv)


def videos_per_second(session, video: str, reps: int) -> float:
    """moderate(video) calls per second of wall-clock time, after one warm-up call."""
    import time

    session.moderate(video)  # loads the models, compiles kernels, captures CUDA graphs
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        session.moderate(video)
    return reps / (time.perf_counter() - started)


def end_to_end(args, impls) -> None:
    """One videos/s line per Session: the CPU pipeline, then the device pipeline per kernels."""
    import engine
    from engine.errors import ModelError

    try:
        sessions = [("cpu", engine.Session(args.repo))]
        sessions += [(f"cuda:0 [{name}]", engine.Session(args.repo, device="cuda:0", kernel_impl=name))
                     for name in impls]
        for label, session in sessions:
            rate = videos_per_second(session, args.video, args.e2e_reps)
            print(f"end to end {os.path.basename(args.video)} on {label}: {rate:,.2f} videos/s")
    except ModelError as e:  # models not fetched on this machine
        print(f"end to end skipped: {e}")


def kernel_impls(names):
    """{name: module with preprocess / masked_mean / segment_pool} of the requested implementations."""
    impls = {}
    if "cuda" in names:
        impls["cuda"] = cuda_ops
    if "triton" in names:
        import engine.kernels as triton_ops

        impls["triton"] = triton_ops
    return impls


def main(argv=None) -> None:
    args = parse_args(argv)
    reps, B = args.reps, args.batch
    impls = kernel_impls(args.impl)
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    cuda_info = cuda_ops.build_info() if "cuda" in impls else "not timed"
    print(f"device: {dev}; torch {torch.__version__}; _C_cuda {cuda_info}")
    if "triton" in impls:
        import triton

        print(f"triton {triton.__version__}")
    rows = []  # (op, bytes, t, bw, copy_bw, extra)

    def measure(label, fn, traffic, cbw, frames=None):
        t = time_op(fn, reps)
        rows.append((label, traffic, t, traffic / t, cbw, f"{frames / t:,.0f} frames/s" if frames else ""))

    # --- fused preprocess: I420 1080p x B -> 224 NCHW fp32 ------------------------------------
    H, W = 1080, 1920
    y = torch.randint(16, 236, (B, H, W), dtype=torch.uint8, device="cuda")
    u = torch.randint(16, 241, (B, H // 2, W // 2), dtype=torch.uint8, device="cuda")
    v = torch.randint(16, 241, (B, H // 2, W // 2), dtype=torch.uint8, device="cuda")
    planes = (y, u, v)
    plane_bytes = sum(p.numel() for p in planes)
    stretch = PreprocessSpec(size=(224, 224), resize="stretch", **NORM)
    shorter = PreprocessSpec(size=(224, 224), resize="shorter", resize_to=(256, 256), **NORM)
    cases = [  # (label, spec, implementations, keyword arguments)
        ("preprocess stretch 224", stretch, IMPLS, {}),
        ("preprocess shorter256+crop224", shorter, IMPLS, {}),
        ("preprocess stretch 224 direct", stretch, ("cuda",), {"force_direct": True}),
        ("preprocess stretch 224 clamp=output", dataclasses.replace(stretch, clamp="output"), ("triton",), {}),
    ]
    for label, spec, which, kw in cases:
        out = torch.empty(spec.output_shape(B), device="cuda")
        read = plane_bytes if spec.resize == "stretch" else footprint_bytes(spec, H, W, B)
        traffic = read + out.numel() * 4
        _, cbw = copy_bandwidth(traffic, reps)
        for name in (n for n in which if n in impls):
            def fn(mod=impls[name], spec=spec, out=out, kw=kw):
                mod.preprocess(planes, spec, format="i420", width=W, height=H, out=out, **kw)

            measure(f"{label} [{name}]", fn, traffic, cbw, frames=B)
    try:
        t = time_op(lambda: torch_pipeline(y, u, v, (224, 224)), max(5, reps // 5), warmup=2)
        traffic = plane_bytes + B * 3 * 224 * 224 * 4
        rows.append(("torch pipeline stretch 224 (ref)", traffic, t, traffic / t, float("nan"), f"{B / t:,.0f} frames/s"))
    except Exception as e:  # pragma: no cover - only informative
        print(f"torch pipeline failed: {e}")

    # --- pooling ---------------------------------------------------------------------------------
    Bm, T, D = 256, 128, 768
    x = torch.randn(Bm, T, D, device="cuda")
    m = (torch.rand(Bm, T, device="cuda") < 0.8).float()
    o = torch.empty(Bm, D, device="cuda")
    for norm in (False, True):
        traffic = x.numel() * 4 + m.numel() * 4 + o.numel() * 4 * (3 if norm else 1)
        _, cbw = copy_bandwidth(traffic, reps)
        for name, mod in impls.items():
            measure(f"masked_mean [{Bm},{T},{D}] norm={norm} [{name}]",
                    lambda mod=mod, norm=norm: mod.masked_mean(x, m, norm, out=o), traffic, cbw)
    N, S = 32768, 256
    xs = torch.randn(N, D, device="cuda")
    offs = torch.arange(0, N + 1, N // S, device="cuda", dtype=torch.int64)
    os_ = torch.empty(S, D, device="cuda")
    for mode, win in (("mean", 1), ("max", 1), ("window_max", 8)):
        traffic = xs.numel() * 4 + os_.numel() * 4 + offs.numel() * 8
        _, cbw = copy_bandwidth(traffic, reps)
        for name, mod in impls.items():
            measure(f"segment_pool {mode} [{N},{D}]/{S} [{name}]",
                    lambda mod=mod, mode=mode, win=win: mod.segment_pool(xs, offs, mode, win, out=os_), traffic, cbw)

    # --- log-mel projection (Triton only): B chunks x 96 frames x 257 bins -> 64 mels ------------
    if "triton" in impls:
        spec_mag = torch.rand(B * 64, 96, 257, device="cuda")
        fb = torch.from_numpy(mel_filterbank()).cuda()
        lm = torch.empty(B * 64, 96, 64, device="cuda")
        traffic = spec_mag.numel() * 4 + fb.numel() * 4 + lm.numel() * 4
        _, cbw = copy_bandwidth(traffic, reps)
        measure(f"log_mel_project [{B * 64},96,257]x[257,64] [triton]",
                lambda: impls["triton"].log_mel_project(spec_mag, fb, out=lm), traffic, cbw)

    print()
    print(f"| op | MB moved | median us | GB/s | copy GB/s | % of copy | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for op, traffic, t, bw, cbw, extra in rows:
        pct = 100 * bw / cbw if cbw == cbw else float("nan")
        print(f"| {op} | {traffic / 1e6:,.1f} | {t * 1e6:,.1f} | {bw / 1e9:,.0f} | {cbw / 1e9:,.0f} | {pct:.0f} | {extra} |")
    if args.e2e_reps > 0:
        print()
        end_to_end(args, impls)


if __name__ == "__main__":
    main()
