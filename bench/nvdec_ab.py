"""A/B of sparse NVDEC decoding on a GPU: keyframe packets through the core decoder (Note [NVDEC
keyframe packets] in engine/media/nvdec.py) against SimpleDecoder and the CPU decoder.

    python -m bench.nvdec_ab        # on a machine with a GPU and PyNvVideoCodec

The decode suite's H.264 clips (keyframe every second; 480p 6 s and 1080p 10 s) sampled at 1 fps,
so all three paths return the same keyframes: ``cpu`` decode_video (FFmpeg, the Session's
default), ``nvdec-keyframes`` decode_video_nvdec (its keyframes strategy), ``nvdec-simple``
decode_video_nvdec with exact sampling (targets on the keyframes: SimpleDecoder seeks to each).
One video at a time, 7 interleaved rounds of 3 calls, medians, wall clock including the copy of
the frames to the host (so the device work is finished); prints a markdown table of ms per video
and the ratios, after checking that the three return the same pixels. Then videos/s with
THREADS videos in flight (a thread each, as a Session's workers decode) for ``cpu`` and
``nvdec-keyframes``, 3 interleaved rounds: NVDEC's case is throughput with the host cores busy.
"""

from __future__ import annotations

import statistics
import sys
import time

ROUNDS, CALLS, THREADS = 7, 3, 4
CLIPS = ((6, 480, 848), (10, 1080, 1920))  # (seconds, height, width), the decode suite's shapes


def main() -> int:
    from bench import gpu

    why = gpu.unavailable()
    if why:
        print(f"bench.nvdec_ab needs a CUDA GPU: {why}", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from bench.decode import make_clip
    from bench.timing import in_flight
    from engine.device import load_nvdec
    from engine.errors import DeviceUnavailableError
    from engine.media import Sampling, decode_video
    from engine.media.nvdec import Fallback, decode_video_nvdec

    try:
        nvc = load_nvdec()
    except DeviceUnavailableError as e:
        print(f"bench.nvdec_ab needs PyNvVideoCodec: {e}", file=sys.stderr)
        return 2

    def done(video):  # the device work has run (a synchronisation, not a copy the pipeline never makes)
        if any(isinstance(p, torch.Tensor) and p.is_cuda for f in video.frames for p in f.planes):
            torch.cuda.synchronize()
        return video

    paths = {
        "cpu": lambda data: decode_video(data, Sampling("fps", 1.0)),
        "nvdec-keyframes": lambda data: decode_video_nvdec(data, Sampling("fps", 1.0), nvc=nvc),
        "nvdec-simple": lambda data: decode_video_nvdec(data, Sampling("fps", 1.0, exact=True), nvc=nvc),
    }
    print(f"{torch.cuda.get_device_name()}; PyNvVideoCodec {getattr(nvc, '__version__', '?')}; "
          f"{ROUNDS} rounds x {CALLS} videos, medians")
    print("| clip | cpu, ms/video | nvdec-keyframes | nvdec-simple | cpu ÷ keyframes | simple ÷ keyframes | strategies "
          "| cpu / nvdec-keyframes in flight |")
    print("|---|---|---|---|---|---|---|---|")
    for seconds, h, w in CLIPS:
        data = make_clip(seconds, 8, "libx264", h, w).read_bytes()
        first = {k: fn(data) for k, fn in paths.items()}
        for k, v in first.items():
            if isinstance(v, Fallback):
                print(f"| {w}x{h} {seconds} s | {k} fell back: {v.reason} |")
                return 1
        ref = first["cpu"]
        for k in ("nvdec-keyframes", "nvdec-simple"):
            assert first[k].timestamps == ref.timestamps, (k, first[k].timestamps, ref.timestamps)
            for a, b in zip(ref.frames, first[k].frames, strict=True):  # I420 against NV12
                y, u, v = (np.asarray(p) for p in a.planes)
                by, buv = (p.cpu().numpy() for p in b.planes)
                assert np.array_equal(y, by) and np.array_equal(u, buv[:, 0::2]) and np.array_equal(v, buv[:, 1::2]), k
        times = {k: [] for k in paths}
        for _ in range(ROUNDS):
            for k, fn in paths.items():
                t = time.perf_counter()
                for _ in range(CALLS):
                    done(fn(data))
                times[k].append((time.perf_counter() - t) / CALLS)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        strategies = "/".join(first[k].strategy for k in paths)
        rate = {k: [] for k in ("cpu", "nvdec-keyframes")}
        for _ in range(3):
            for k in rate:
                t = time.perf_counter()
                in_flight(lambda k=k: done(paths[k](data)), THREADS, CALLS)()
                rate[k].append(THREADS * CALLS / (time.perf_counter() - t))
        rmed = {k: statistics.median(v) for k, v in rate.items()}
        print(f"| {w}x{h} {seconds} s, {len(ref.frames)} frames | {med['cpu']:.1f} | {med['nvdec-keyframes']:.1f} | "
              f"{med['nvdec-simple']:.1f} | {med['cpu'] / med['nvdec-keyframes']:.2f} | "
              f"{med['nvdec-simple'] / med['nvdec-keyframes']:.2f} | {strategies} | "
              f"{rmed['cpu']:.1f} / {rmed['nvdec-keyframes']:.1f} videos/s with {THREADS} in flight |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
