"""Triton kernel of the fused preprocessing (imported on first use: it needs triton).

Note [Triton preprocess]
One program computes BLOCK output pixels of one frame (grid: pixel blocks x batch). For each
pixel the host tables give the first source row / column of its taps and the weights
(``engine._C.resample_taps``: the luma taps of resample.h, windows shifted inside the image, so
every tap index is in bounds and unused taps weigh 0); chroma is replicated onto the luma grid
by indexing the chroma plane at (row // SUB_Y, col // SUB_X) (Note [chroma upsampling]). The
kernel walks the KY tap rows; per row it gathers a [BLOCK, KXP] tile of source pixels (the KX
column taps, padded to a power of two), reduces it horizontally with the x weights, and adds the
result with the row weight:
* clamp="source" (CLAMP_SOURCE): every gathered source pixel is converted to RGB and clamped
  to [0, 255] before it is weighted (Note [clamp before resampling]; the CPU kernel converts each
  source row once into a ring of rows, the CUDA kernel stages RGB in shared memory);
* clamp="output": the Y, Cb, Cr samples are resampled and only the result is converted
  (Note [fused resize order]); normalize clamps it.
Packed RGB input is resampled as is. Accumulation in float32 on the 0..255 scale, the same sum
as the CPU kernel in a different order (agrees to float rounding).
"""

from __future__ import annotations

import triton
import triton.language as tl

PLANAR_YUV = 0  # Y, U, V planes (i420, i422, i444)
SEMI_PLANAR_YUV = 1  # Y plane + interleaved UV (nv12)
PACKED_RGB = 2  # one plane of R, G, B (or B, G, R) triplets


@triton.jit
def _gather(y_ptr, u_ptr, v_ptr, y_row, u_row, v_row, sx, tmask,
            KIND: tl.constexpr, SUB_X: tl.constexpr, BGR_IN: tl.constexpr):
    """Three samples of the [BLOCK, KXP] tap tile: (Y, Cb, Cr) or (R, G, B)."""
    if KIND == 2:  # PACKED_RGB
        p = y_ptr + y_row + 3 * sx
        s0 = tl.load(p, mask=tmask, other=0).to(tl.float32)
        s1 = tl.load(p + 1, mask=tmask, other=0).to(tl.float32)
        s2 = tl.load(p + 2, mask=tmask, other=0).to(tl.float32)
        if BGR_IN:
            s0, s2 = s2, s0
    else:
        s0 = tl.load(y_ptr + y_row + sx, mask=tmask, other=0).to(tl.float32)
        cx = sx // SUB_X
        if KIND == 1:  # SEMI_PLANAR_YUV: U, V interleaved
            s1 = tl.load(u_ptr + u_row + 2 * cx, mask=tmask, other=0).to(tl.float32)
            s2 = tl.load(u_ptr + u_row + 2 * cx + 1, mask=tmask, other=0).to(tl.float32)
        else:
            s1 = tl.load(u_ptr + u_row + cx, mask=tmask, other=0).to(tl.float32)
            s2 = tl.load(v_ptr + v_row + cx, mask=tmask, other=0).to(tl.float32)
    return s0, s1, s2


@triton.jit
def _yuv_to_rgb(y, u, v, y_gain, cb0, cb1, cb2, cr0, cr1, cr2, bias0, bias1, bias2):
    """colour.h yuv_to_rgb with make_yuv_to_rgb's coefficients (0..255 scale, unclamped)."""
    r = y_gain * y + cb0 * u + cr0 * v + bias0
    g = y_gain * y + cb1 * u + cr1 * v + bias1
    b = y_gain * y + cb2 * u + cr2 * v + bias2
    return r, g, b


@triton.jit
def _normalize(rgb, gain, bias, valid, pad):
    """normalize.h normalize_value, and the pad value outside the resized image."""
    v = tl.minimum(tl.maximum(rgb, 0.0), 255.0) * gain + bias
    return tl.where(valid, v, pad)


@triton.jit
def preprocess_kernel(
    out_ptr,
    y_ptr, u_ptr, v_ptr,  # the planes of frame 0 (unused ones: any valid pointer)
    frame_ptr,  # int64 [B, 6]: element offsets of frame b's planes from frame 0's, row strides
    yfirst_ptr, yw_ptr, xfirst_ptr, xw_ptr,  # int32 [out_h] (-1: padding), f32 [out_h, KY], ...
    out_h, out_w, KY, KX,
    y_gain, cb0, cb1, cb2, cr0, cr1, cr2, bias0, bias1, bias2,  # colour.h YuvToRgb
    gain0, gain1, gain2, nbias0, nbias1, nbias2,  # normalize.h Normalize, output channel order
    pad,
    KIND: tl.constexpr, SUB_X: tl.constexpr, SUB_Y: tl.constexpr, BGR_IN: tl.constexpr,
    CLAMP_SOURCE: tl.constexpr, BGR_OUT: tl.constexpr, NHWC: tl.constexpr,
    KXP: tl.constexpr, BLOCK: tl.constexpr,
):
    """See Note [Triton preprocess]."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pix = pid * BLOCK + tl.arange(0, BLOCK)
    pmask = pix < out_h * out_w
    oy = pix // out_w
    ox = pix % out_w
    yf = tl.load(yfirst_ptr + oy, mask=pmask, other=-1)
    xf = tl.load(xfirst_ptr + ox, mask=pmask, other=-1)
    valid = (yf >= 0) & (xf >= 0)
    yf = tl.maximum(yf, 0)  # padding pixels read row / column 0 with zero weights
    xf = tl.maximum(xf, 0)

    fb = frame_ptr + b * 6
    y_base = y_ptr + tl.load(fb)
    u_base = u_ptr + tl.load(fb + 1)
    v_base = v_ptr + tl.load(fb + 2)
    y_stride = tl.load(fb + 3)
    u_stride = tl.load(fb + 4)
    v_stride = tl.load(fb + 5)

    kx = tl.arange(0, KXP)
    tmask = pmask[:, None] & (kx[None, :] < KX)
    xw = tl.load(xw_ptr + ox[:, None] * KX + kx[None, :], mask=tmask, other=0.0)
    sx = xf[:, None] + kx[None, :]

    acc0 = tl.zeros([BLOCK], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(0, KY):
        wy = tl.load(yw_ptr + oy * KY + j, mask=pmask, other=0.0)
        sy = (yf + j).to(tl.int64)
        cy = sy // SUB_Y
        s0, s1, s2 = _gather(y_base, u_base, v_base, (sy * y_stride)[:, None],
                             (cy * u_stride)[:, None], (cy * v_stride)[:, None], sx, tmask,
                             KIND, SUB_X, BGR_IN)
        if KIND != 2 and CLAMP_SOURCE:
            s0, s1, s2 = _yuv_to_rgb(s0, s1, s2, y_gain, cb0, cb1, cb2, cr0, cr1, cr2,
                                     bias0, bias1, bias2)
            s0 = tl.minimum(tl.maximum(s0, 0.0), 255.0)
            s1 = tl.minimum(tl.maximum(s1, 0.0), 255.0)
            s2 = tl.minimum(tl.maximum(s2, 0.0), 255.0)
        acc0 += wy * tl.sum(xw * s0, axis=1)
        acc1 += wy * tl.sum(xw * s1, axis=1)
        acc2 += wy * tl.sum(xw * s2, axis=1)
    if KIND != 2 and not CLAMP_SOURCE:
        acc0, acc1, acc2 = _yuv_to_rgb(acc0, acc1, acc2, y_gain, cb0, cb1, cb2, cr0, cr1, cr2,
                                       bias0, bias1, bias2)
    if BGR_OUT:
        acc0, acc2 = acc2, acc0
    o0 = _normalize(acc0, gain0, nbias0, valid, pad)
    o1 = _normalize(acc1, gain1, nbias1, valid, pad)
    o2 = _normalize(acc2, gain2, nbias2, valid, pad)

    npix = out_h * out_w
    if NHWC:
        dst = out_ptr + (b * npix + pix) * 3
        step = 1
    else:
        dst = out_ptr + b * 3 * npix + pix
        step = npix
    ty = out_ptr.dtype.element_ty
    tl.store(dst, o0.to(ty), mask=pmask)
    tl.store(dst + step, o1.to(ty), mask=pmask)
    tl.store(dst + 2 * step, o2.to(ty), mask=pmask)
