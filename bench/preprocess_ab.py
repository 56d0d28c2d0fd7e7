"""A/B of the CUDA preprocessing kernel on a GPU: the vertical-first block (the default for
aligned 4:2:0, csrc/cuda/preprocess_kernel_vfirst.cuh) against its temporary variants
(VfirstVariant, chosen by ENGINE_CUDA_PREPROCESS): ``prefetch`` (vfirst-prefetch: sample loads a
step ahead) and ``late`` (vfirst-late: the loop before a pair's weights were loaded with its
samples, i.e. the default as of 2026-11-27 18:25 UTC), and its clamp="output" variant
(``planes``: the raw planes resampled, converted per output pixel; Note [CUDA preprocess:
clamp="output"]), whose speed tells what the per-pixel source clamp costs.

    python -m bench.preprocess_ab          # on a machine with a GPU and engine._C_cuda built

All run the kernels suite's spec (shorter side 256, centre crop 224, ImageNet-normalised NCHW)
on random planes laid out as decoders lay them out (rows every 64 bytes: aligned words, so the
vertical-first block takes them), in one process: ``ENGINE_CUDA_PREPROCESS`` (read at every call)
and the spec's clamp pick the variant, the rounds interleave them and a device copy of the same
bytes (bench.gpu.measure_events, 7 rounds of 10 calls, the median of each). Prints a markdown
table of frames/s, the fraction of the copy's bandwidth (bench.gpu.preprocess_traffic: the bytes
the crop's taps reach plus the output), each variant's speed ÷ vfirst's, and the largest
difference between vfirst's output and the temporary variants' (0: the same terms in the same
order).
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
BLOCKS = {  # (ENGINE_CUDA_PREPROCESS value, PreprocessSpec.clamp)
    "vfirst": (None, "source"),
    "prefetch": ("vfirst-prefetch", "source"),
    "late": ("vfirst-late", "source"),
    "planes": (None, "output"),
}
OTHERS = [k for k in BLOCKS if k != "vfirst"]
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
    head = ([f"{k}, frames/s" for k in BLOCKS] + [f"{k} ÷ copy" for k in BLOCKS]
            + [f"{k} ÷ vfirst" for k in OTHERS] + ["max abs diff"])
    print("| case | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    gen = torch.Generator(device=gpu.DEVICE).manual_seed(0)
    for name, h, w, fmt, b, dtype in CASES:
        specs = {k: dataclasses.replace(preprocess_spec(), dtype=dtype, clamp=clamp)
                 for k, (_, clamp) in BLOCKS.items()}
        y = decoder_plane(b, h, w, (16, 236), gen)
        if fmt == "nv12":
            planes = (y, decoder_plane(b, h // 2, w, (16, 241), gen))
        else:
            planes = (y, *(decoder_plane(b, h // 2, w // 2, (16, 241), gen) for _ in range(2)))
        outs = {k: torch.full(specs[k].output_shape(b), float("nan"), dtype=getattr(torch, dtype),
                              device=gpu.DEVICE) for k in BLOCKS}

        def call(block: str):
            value = BLOCKS[block][0]
            if value is None:
                os.environ.pop("ENGINE_CUDA_PREPROCESS", None)
            else:
                os.environ["ENGINE_CUDA_PREPROCESS"] = value
            return cuda_ops.preprocess(planes, specs[block], format=fmt, width=w, height=h, out=outs[block])

        traffic = gpu.preprocess_traffic(specs["vfirst"], h, w, b)
        copy, copied = gpu.copy_path(traffic)
        paths = {k: (lambda k=k: call(k)) for k in BLOCKS}
        seconds = gpu.measure_events({**paths, "copy": copy}, repeats=ROUNDS, calls=CALLS)
        os.environ.pop("ENGINE_CUDA_PREPROCESS", None)
        torch.cuda.synchronize()
        med = {k: statistics.median(v) for k, v in seconds.items()}
        copy_bw = copied / med["copy"]
        frac = {k: traffic / med[k] / copy_bw for k in BLOCKS}
        diff = max((outs["vfirst"].float() - outs[k].float()).abs().max().item()
                   for k, (_, clamp) in BLOCKS.items() if clamp == "source")
        cells = ([f"{b / med[k]:,.0f}" for k in BLOCKS] + [f"{frac[k]:.3f}" for k in BLOCKS]
                 + [f"{med['vfirst'] / med[k]:.3f}" for k in OTHERS] + [f"{diff:.2g}"])
        print(f"| {name} b{b} {dtype} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
