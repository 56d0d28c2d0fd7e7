"""A/B of the CUDA preprocessing blocks on a GPU: the 8-bit fast path against the vertical-first
block (csrc/cuda/preprocess_kernel_vfirst.cuh, Note [CUDA preprocess: vertical pass first]).

    python -m bench.preprocess_ab          # on a machine with a GPU and engine._C_cuda built

Both run the kernels suite's spec (shorter side 256, centre crop 224, ImageNet-normalised NCHW)
on random planes laid out as decoders lay them out (rows every 64 bytes: aligned words, so both
blocks qualify), in one process: ``ENGINE_CUDA_PREPROCESS`` (read at every call) picks the
block, the rounds interleave the two and a device copy of the same bytes (bench.gpu.measure_events,
7 rounds of 10 calls, the median of each). Prints a markdown table of frames/s, the fraction of
the copy's bandwidth (bench.gpu.preprocess_traffic: the bytes the crop's taps reach plus the
output) and vfirst / fast, and the largest difference between the two outputs (float rounding:
the blocks sum the same terms in another order).
"""

from __future__ import annotations

import os
import statistics
import sys

CASES = (  # (name, height, width, format, batch, dtype)
    ("480p", 480, 854, "i420", 32, "float32"),
    ("720p", 720, 1280, "i420", 32, "float32"),
    ("1080p", 1080, 1920, "i420", 32, "float32"),
    ("1080p nv12", 1080, 1920, "nv12", 32, "float32"),
    ("1080p fp16", 1080, 1920, "i420", 32, "float16"),
    ("1080p b8", 1080, 1920, "i420", 8, "float32"),
)
BLOCKS = {"fast": None, "vfirst": "vfirst"}  # ENGINE_CUDA_PREPROCESS value
ROUNDS, CALLS = 7, 10


def main() -> int:
    import dataclasses

    import torch

    from bench import gpu
    from bench.gpu_kernels import decoder_plane
    from bench.preprocess import preprocess_spec

    why = gpu.unavailable()
    if why:
        print(f"bench.preprocess_ab needs a CUDA GPU: {why}", file=sys.stderr)
        return 2
    import engine.ops.cuda as cuda_ops

    print(f"{torch.cuda.get_device_name()}; rounds {ROUNDS} x {CALLS} calls, medians")
    print("| case | fast, frames/s | vfirst, frames/s | fast ÷ copy | vfirst ÷ copy | vfirst ÷ fast | max |diff| |")
    print("|---|---|---|---|---|---|---|")
    gen = torch.Generator(device=gpu.DEVICE).manual_seed(0)
    for name, h, w, fmt, b, dtype in CASES:
        spec = dataclasses.replace(preprocess_spec(), dtype=dtype)
        y = decoder_plane(b, h, w, (16, 236), gen)
        if fmt == "nv12":
            planes = (y, decoder_plane(b, h // 2, w, (16, 241), gen))
        else:
            planes = (y, *(decoder_plane(b, h // 2, w // 2, (16, 241), gen) for _ in range(2)))
        outs = {k: torch.full(spec.output_shape(b), float("nan"), dtype=getattr(torch, dtype),
                              device=gpu.DEVICE) for k in BLOCKS}

        def call(block: str):
            value = BLOCKS[block]
            if value is None:
                os.environ.pop("ENGINE_CUDA_PREPROCESS", None)
            else:
                os.environ["ENGINE_CUDA_PREPROCESS"] = value
            return cuda_ops.preprocess(planes, spec, format=fmt, width=w, height=h, out=outs[block])

        traffic = gpu.preprocess_traffic(spec, h, w, b)
        copy, copied = gpu.copy_path(traffic)
        paths = {k: (lambda k=k: call(k)) for k in BLOCKS}
        seconds = gpu.measure_events({**paths, "copy": copy}, repeats=ROUNDS, calls=CALLS)
        os.environ.pop("ENGINE_CUDA_PREPROCESS", None)
        torch.cuda.synchronize()
        med = {k: statistics.median(v) for k, v in seconds.items()}
        copy_bw = copied / med["copy"]
        frac = {k: traffic / med[k] / copy_bw for k in BLOCKS}
        diff = (outs["fast"].float() - outs["vfirst"].float()).abs().max().item()
        print(f"| {name} b{b} {dtype} | {b / med['fast']:,.0f} | {b / med['vfirst']:,.0f} | "
              f"{frac['fast']:.3f} | {frac['vfirst']:.3f} | {med['fast'] / med['vfirst']:.3f} | {diff:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
