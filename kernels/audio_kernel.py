"""Triton kernel of the mel projection + log (imported on first use: it needs triton).

Note [Triton log-mel projection]
out[r, j] = log(sum_f spectrum[r, f] fb[f, j] + eps): one program per tile of rows x mel bins,
a float32 matrix product over frequency tiles (tl.dot with input_precision="ieee": no TF32,
whose 10-bit mantissa would move the log by ~1e-3), then the log of mel.h log_mel. The CPU
front end sums in float64; float32 here agrees to ~1e-6 relative before the log.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def log_mel_project_kernel(out_ptr, spec_ptr, fb_ptr, R, F, M, ssr, ssf, sfb_f, sfb_m, eps,
                           BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_M: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rr = r.to(tl.int64)
    acc = tl.zeros([BLOCK_R, BLOCK_M], dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        s = tl.load(spec_ptr + rr[:, None] * ssr + f[None, :] * ssf,
                    mask=(r[:, None] < R) & (f[None, :] < F), other=0.0).to(tl.float32)
        w = tl.load(fb_ptr + f[:, None] * sfb_f + m[None, :] * sfb_m,
                    mask=(f[:, None] < F) & (m[None, :] < M), other=0.0).to(tl.float32)
        acc = tl.dot(s, w, acc, input_precision="ieee")
    res = tl.log(acc + eps)
    tl.store(out_ptr + rr[:, None] * M + m[None, :], res, mask=(r[:, None] < R) & (m[None, :] < M))
