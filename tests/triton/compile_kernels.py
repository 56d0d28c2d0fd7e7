"""Compile every Triton kernel for real GPU targets without a GPU: Triton's front end, TTGIR
passes, LLVM, PTX and ptxas (bundled with the triton wheel) all run on the host. Catches what the
interpreter accepts but the compiler does not (types, control flow, layouts).

Run as a script in a process WITHOUT TRITON_INTERPRET (test_triton_compile.py does); prints one line per
compiled variant and exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import sys

from triton import compile as triton_compile
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from engine.kernels import audio_kernel, pooling_kernel, preprocess_kernel

TARGETS = [GPUTarget("cuda", 90, 32), GPUTarget("cuda", 80, 32)]  # H100, A100

_PRE_SIG = {
    "out_ptr": "*fp32", "y_ptr": "*u8", "u_ptr": "*u8", "v_ptr": "*u8", "frame_ptr": "*i64",
    "yfirst_ptr": "*i32", "yw_ptr": "*fp32", "xfirst_ptr": "*i32", "xw_ptr": "*fp32",
    "out_h": "i32", "out_w": "i32", "KY": "i32", "KX": "i32",
    **{n: "fp32" for n in ("y_gain", "cb0", "cb1", "cb2", "cr0", "cr1", "cr2", "bias0", "bias1", "bias2",
                           "gain0", "gain1", "gain2", "nbias0", "nbias1", "nbias2", "pad")},
}
_PRE = dict(BGR_IN=False, BGR_OUT=False, NHWC=False, KXP=16, BLOCK=128)  # as the wrapper: 8 warps

VARIANTS = [
    # (kernel, signature, constexprs, warps as the wrapper launches it): each source kind once,
    # both clamp modes, fp16 and NHWC
    (preprocess_kernel.preprocess_kernel, _PRE_SIG,
     dict(_PRE, KIND=preprocess_kernel.PLANAR_YUV, SUB_X=2, SUB_Y=2, CLAMP_SOURCE=True), 8),
    (preprocess_kernel.preprocess_kernel, dict(_PRE_SIG, out_ptr="*fp16", y_ptr="*u16", u_ptr="*u16", v_ptr="*u16"),
     dict(_PRE, KIND=preprocess_kernel.SEMI_PLANAR_YUV, SUB_X=2, SUB_Y=2, CLAMP_SOURCE=False, NHWC=True), 8),
    (preprocess_kernel.preprocess_kernel, _PRE_SIG,
     dict(_PRE, KIND=preprocess_kernel.PACKED_RGB, SUB_X=1, SUB_Y=1, CLAMP_SOURCE=True, BGR_IN=True, BGR_OUT=True), 8),
    (pooling_kernel.masked_mean_kernel,
     {"out_ptr": "*fp32", "x_ptr": "*fp16", "m_ptr": "*fp32", **{n: "i32" for n in ("T", "D", "sxb", "sxt", "sxd", "smb", "smt")}},
     dict(NORMALIZE=True, BLOCK_T=16, BLOCK_D=128), 4),
    *[(pooling_kernel.segment_pool_kernel,
       {"out_ptr": "*fp32", "x_ptr": "*fp32", "off_ptr": "*i64", **{n: "i32" for n in ("N", "D", "sxn", "sxd", "window")}},
       dict(MODE=mode, BLOCK_N=16, BLOCK_D=128), 8 if mode == 2 else 4) for mode in (0, 1, 2)],
    (audio_kernel.log_mel_project_kernel,
     {"out_ptr": "*fp32", "spec_ptr": "*fp32", "fb_ptr": "*fp32",
      **{n: "i32" for n in ("R", "F", "M", "ssr", "ssf", "sfb_f", "sfb_m")}, "eps": "fp32"},
     dict(BLOCK_R=32, BLOCK_F=32, BLOCK_M=64), 4),
]


def main() -> int:
    assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET: the kernels must be compiled"
    for target in TARGETS[: int(sys.argv[1]) if len(sys.argv) > 1 else None]:
        for fn, sig, consts, warps in VARIANTS:
            src = ASTSource(fn, {**sig, **{k: "constexpr" for k in consts}}, constexprs=consts)
            kernel = triton_compile(src, target=target, options={"num_warps": warps})
            assert kernel.asm.get("cubin"), f"{fn.__name__}: no cubin"
            print(f"sm_{target.arch} {fn.__name__} {consts}: {len(kernel.asm['cubin'])} bytes of cubin", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
