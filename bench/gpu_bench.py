"""Bandwidth of the CUDA kernels against a device-to-device copy measured in the same run.

Per op: median kernel time over many launches (CUDA events around each launch; a
``torch.cuda._sleep`` queued first so host-side launch overhead is hidden), achieved bandwidth
= (bytes read + bytes written) / time, and the same for ``dst.copy_(src)`` moving the same
total traffic (a copy of N bytes reads N and writes N). Target of issue 3: >= 80 % of copy.
Also the torch pipeline a user would otherwise write (I420 -> RGB with chroma replication,
clamp, ``interpolate(antialias=True)``, normalise) for the preprocess case.

``python3 bench/gpu_bench.py [--reps 50]``; prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import engine.ops.cuda as cuda_ops  # noqa: E402
from engine.ops.preprocess import PreprocessSpec  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    reps, B = args.reps, args.batch
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; _C_cuda {cuda_ops.build_info()}")
    rows = []  # (op, bytes, t, bw, copy_bw, extra)

    # --- fused preprocess: I420 1080p x B -> 224 NCHW fp32 ------------------------------------
    H, W = 1080, 1920
    y = torch.randint(16, 236, (B, H, W), dtype=torch.uint8, device="cuda")
    u = torch.randint(16, 241, (B, H // 2, W // 2), dtype=torch.uint8, device="cuda")
    v = torch.randint(16, 241, (B, H // 2, W // 2), dtype=torch.uint8, device="cuda")
    planes = (y, u, v)
    plane_bytes = sum(p.numel() for p in planes)
    for label, spec in [
        ("preprocess stretch 224", PreprocessSpec(size=(224, 224), resize="stretch", **NORM)),
        ("preprocess shorter256+crop224", PreprocessSpec(size=(224, 224), resize="shorter", resize_to=(256, 256), **NORM)),
        ("preprocess stretch 224 direct", PreprocessSpec(size=(224, 224), resize="stretch", **NORM)),
    ]:
        out = torch.empty(spec.output_shape(B), device="cuda")
        direct = label.endswith("direct")

        def fn(spec=spec, out=out, direct=direct):
            cuda_ops.preprocess(planes, spec, format="i420", width=W, height=H, out=out, force_direct=direct)

        read = plane_bytes if spec.resize == "stretch" else footprint_bytes(spec, H, W, B)
        traffic = read + out.numel() * 4
        t = time_op(fn, reps)
        tc, cbw = copy_bandwidth(traffic, reps)
        rows.append((label, traffic, t, traffic / t, cbw, f"{B / t:,.0f} frames/s"))
    try:
        spec = PreprocessSpec(size=(224, 224), resize="stretch", **NORM)
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
        t = time_op(lambda norm=norm: cuda_ops.masked_mean(x, m, norm, out=o), reps)
        _, cbw = copy_bandwidth(traffic, reps)
        rows.append((f"masked_mean [{Bm},{T},{D}] norm={norm}", traffic, t, traffic / t, cbw, ""))
    N, S = 32768, 256
    xs = torch.randn(N, D, device="cuda")
    offs = torch.arange(0, N + 1, N // S, device="cuda", dtype=torch.int64)
    os_ = torch.empty(S, D, device="cuda")
    for mode, win in (("mean", 1), ("max", 1), ("window_max", 8)):
        traffic = xs.numel() * 4 + os_.numel() * 4 + offs.numel() * 8
        t = time_op(lambda mode=mode, win=win: cuda_ops.segment_pool(xs, offs, mode, win, out=os_), reps)
        _, cbw = copy_bandwidth(traffic, reps)
        rows.append((f"segment_pool {mode} [{N},{D}]/{S}", traffic, t, traffic / t, cbw, ""))

    print()
    print(f"| op | MB moved | median us | GB/s | copy GB/s | % of copy | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for op, traffic, t, bw, cbw, extra in rows:
        pct = 100 * bw / cbw if cbw == cbw else float("nan")
        print(f"| {op} | {traffic / 1e6:,.1f} | {t * 1e6:,.1f} | {bw / 1e9:,.0f} | {cbw / 1e9:,.0f} | {pct:.0f} | {extra} |")


if __name__ == "__main__":
    main()
