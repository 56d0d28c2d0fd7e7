// cuda/preprocess_kernel_8bit.cuh - the fused preprocessing kernel's fast path for 8-bit Y'CbCr
// with subsampled chroma (Note [CUDA preprocess: 8-bit fast path]); every other input runs the
// general block of preprocess_kernel.cuh, whose tables, helpers and stores it shares.
#pragma once

#include "cuda/preprocess_kernel.cuh"

namespace engine {
namespace cuda {

// Note [CUDA preprocess: 8-bit fast path]
// preprocess_block_8bit computes the sums of preprocess_block (Note [CUDA preprocess: clamp
// before resampling]) with fewer instructions and shared-memory wavefronts for the common input:
// 8-bit Y'CbCr with horizontally subsampled chroma (I420, I422, NV12), a staged chunk of >= 2
// rows that fits, and at most kTaps x taps per output column (kTaps: a compile-time bin, 3 .. 16;
// plan_fast_path in preprocess_cuda.cu). Everything else (4:4:4, packed RGB, 10-bit, more taps,
// force_direct) runs preprocess_block. On an H100 (batch 32, fp32 NCHW, shorter 256 crop 224,
// 2026-11-27) it is 1.65-1.86x as fast as preprocess_block; a. and b. below gave 1.00-1.13x of
// that (1080p launch 146 -> 136 us; Nsight: shared store bank conflicts 3.88M -> 0.12M, load
// conflicts 6.2M -> 3.3M per launch).
//   1. stage: a thread converts the luma pixels that share chroma samples: the chroma terms once
//      per chroma sample (yuv_chroma_terms), one FFMA.SAT per pixel and channel, samples to float
//      without I2F (Note [integer samples to float]). With 4-byte aligned planes and strides
//      (p.aligned4) one 32-bit load brings a group of 4 luma samples and one 32-bit (NV12) or two
//      16-bit (I420) loads their 2 chroma samples, three 16-byte shared stores write them (staged
//      column 0 = source column 4 * (sx_lo / 4)), and the items (row, two groups) of a chunk are
//      spread over the whole block (a 140-column span is 36 groups: one warp per row would leave
//      most lanes idle); else byte loads of pixel pairs, a warp per row;
//   2. horizontal: lane l owns output column l of the tile for the whole block: its x weights
//      (zero past its tap count) and first tap are loaded into registers once; the tap loop is
//      fully unrolled, reads at constant offsets, and needs no predicates because every staged
//      row has enough finite (zero) floats past its staged columns for the furthest load (p.span
//      = pitch >= span_max + 10 + kTaps + 8, a multiple of 4);
//   3. vertical: warp w owns output rows w, w + nw of the tile for the whole block and keeps
//      their sums in registers across chunks (no shared accumulator, no read-modify-write);
//      the y weights it reads are warp-uniform;
//   4. store from registers (the fp16 16-byte stores go through shared memory, store_tile).
// Shared memory has compile-time channel strides (kFastHChan, kFastRgbChan), so the three
// channels of a pixel are one address plus immediate offsets; R = p.rows <= kTileH rows of p.span
// floats fill a channel of the staged RGB. Two barriers per chunk instead of three: staging chunk
// k+1 only writes s_rgb, which nobody reads after the barrier that ends the horizontal pass of k.
// kNW x kNL is the warp x lane split (8 x 32 on the device, 1 x 1 in the host emulation): the
// per-thread register arrays are sized by it.
// Shared-memory wavefronts: a 16-byte access of a warp is served a quarter-warp (8 lanes) at a
// time, one wavefront per 128 distinct bytes of the 8 bank groups of 16 bytes (bank group =
// float address / 4 mod 8).
//   a. staging stores without bank conflicts: item gi of a row writes groups gi and gi + items
//      (the staged 16-byte chunks gi and gi + items of the row), and each tile uses its own row
//      pitch, the largest <= p.span with pitch / 4 = items (mod 8) (the host widens p.span by
//      0 .. 28 floats so that this is >= the pitch the tile needs): the chunk of item i = r items
//      + gi of a chunk is then r pitch / 4 + gi = i (mod 8), and the lanes of a warp take
//      consecutive items, so every quarter-warp writes 8 distinct bank groups (two adjacent
//      groups per item put consecutive lanes 2 chunks apart: 2 wavefronts per quarter-warp). The
//      32-bit luma/chroma loads of consecutive lanes are consecutive words too.
//   b. x taps with 16-byte loads (kTaps >= 5): lane l reads column ~s l + j (s: the scale),
//      32 columns spanning > 128 floats at 1080p, whose residues mod 32 always repeat a few, so
//      a 32-bit load per tap is 2 wavefronts. Instead each lane loads kVec float4 per channel
//      from xo = its first tap's column rounded down to a multiple of 4, with its weights shifted
//      by the difference (zero before the first and after the last tap: the extra products add
//      exact zeros, the sums and their order are those of 32-bit loads): 9 taps are 3 LDS.128 +
//      12 FFMA per channel instead of 9 LDS.32 + 9 FFMA, about 7% (1080p) to 20% (480p) fewer
//      load wavefronts. 3 taps keep 32-bit loads (8 FFMA per 3 useful taps).
constexpr int kFastHChan = kTileH * kTileW;                                // s_h channel stride
constexpr int kFastRgbChan = (kSmemBudget / 4 - 3 * kFastHChan) / 3;       // s_rgb channel stride
constexpr int kFastSmemFloats = 3 * kFastHChan + 3 * kFastRgbChan;         // <= kSmemBudget / 4

// Clamped unit-scale RGB of one luma sample y with chroma terms t into d[0], d[kFastRgbChan], ...
ENGINE_HD_INLINE void stage_pixel(const KernelParams& p, float y, const float t[3], float* d) {
  d[0] = saturate01(yuv_luma_plus(p.m, y, t[0]));
  d[kFastRgbChan] = saturate01(yuv_luma_plus(p.m, y, t[1]));
  d[2 * kFastRgbChan] = saturate01(yuv_luma_plus(p.m, y, t[2]));
}

// d[0..3] = a, b, c, e; one 16-byte store on the device (d 16-byte aligned).
ENGINE_HD_INLINE void store4(float* d, float a, float b, float c, float e) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float4*>(d) = make_float4(a, b, c, e);
#else
  d[0] = a;
  d[1] = b;
  d[2] = c;
  d[3] = e;
#endif
}

// v[0..3] = s[0..3]; one 16-byte load on the device (s 16-byte aligned).
ENGINE_HD_INLINE void load4(const float* s, float v[4]) {
#if defined(__CUDA_ARCH__)
  const float4 f = *reinterpret_cast<const float4*>(s);
  v[0] = f.x;
  v[1] = f.y;
  v[2] = f.z;
  v[3] = f.w;
#else
  for (int e = 0; e < 4; ++e) v[e] = s[e];
#endif
}

// The aligned words holding the 2 chroma samples under luma pixels 4g .. 4g + 3 of a row (chroma
// columns 2g, 2g + 1): NV12 one word U V U V (in *a), I420 the U pair in *a and the V pair in *b.
template <int Kind>
ENGINE_HD_INLINE void chroma_words4(const unsigned char* c1, const unsigned char* c2, int g,
                                    uint32_t* a, uint32_t* b) {
  if (Kind == kSemiPlanarYuv) {
    *a = reinterpret_cast<const uint32_t*>(c1)[g];
    *b = 0u;
  } else {
    *a = reinterpret_cast<const uint16_t*>(c1)[g];
    *b = reinterpret_cast<const uint16_t*>(c2)[g];
  }
}

// Chroma terms of chroma_words4's words: t[0] for pixels 4g, 4g + 1, t[1] for 4g + 2, 4g + 3.
template <int Kind>
ENGINE_HD_INLINE void chroma_terms4(const KernelParams& p, uint32_t a, uint32_t b, float t[2][3]) {
  if (Kind == kSemiPlanarYuv) {
    yuv_chroma_terms(p.m, byte_to_float(a, 0), byte_to_float(a, 1), t[0]);
    yuv_chroma_terms(p.m, byte_to_float(a, 2), byte_to_float(a, 3), t[1]);
  } else {
    yuv_chroma_terms(p.m, byte_to_float(a, 0), byte_to_float(b, 0), t[0]);
    yuv_chroma_terms(p.m, byte_to_float(a, 1), byte_to_float(b, 1), t[1]);
  }
}

// chroma_terms4 of the words at group g.
template <int Kind>
ENGINE_HD_INLINE void chroma_group4(const KernelParams& p, const unsigned char* c1,
                                    const unsigned char* c2, int g, float t[2][3]) {
  uint32_t a, b;
  chroma_words4<Kind>(c1, c2, g, &a, &b);
  chroma_terms4<Kind>(p, a, b, t);
}

// Clamped unit-scale RGB v[channel][e] of the 4 luma samples of word yq, chroma terms t.
ENGINE_HD_INLINE void luma_group4(const KernelParams& p, uint32_t yq, const float t[2][3],
                                  float v[3][4]) {
  for (int e = 0; e < 4; ++e) {
    const float y = byte_to_float(yq, e);
    for (int ch = 0; ch < 3; ++ch) v[ch][e] = saturate01(yuv_luma_plus(p.m, y, t[e >> 1][ch]));
  }
}

// Luma pixels 4g .. 4g + 3 of a row (chroma columns 2g, 2g + 1) from aligned words into d[0..3]
// (16-byte aligned), each channel one 16-byte store. The words may reach past the row's last
// sample but never past the aligned word that holds it (no fault); such pixels are finite
// (saturated) and only ever read with weight 0.
template <int Kind>
ENGINE_HD_INLINE void stage_group4(const KernelParams& p, const unsigned char* yrow,
                                   const unsigned char* c1, const unsigned char* c2, int g,
                                   float* d) {
  float t[2][3], v[3][4];
  chroma_group4<Kind>(p, c1, c2, g, t);
  luma_group4(p, reinterpret_cast<const uint32_t*>(yrow)[g], t, v);
  for (int ch = 0; ch < 3; ++ch)
    store4(d + ch * kFastRgbChan, v[ch][0], v[ch][1], v[ch][2], v[ch][3]);
}

// Source row sy of frame f: luma row, chroma row(s).
template <int Kind>
ENGINE_HD_INLINE void source_rows(const KernelParams& p, const FramePlanes& f, int sy,
                                  const unsigned char** yrow, const unsigned char** c1,
                                  const unsigned char** c2) {
  *yrow = f.plane[0] + (long long)sy * f.stride[0];
  const int cy = p.sub_y == 2 ? (sy >> 1) : sy;
  *c1 = f.plane[1] + (long long)cy * f.stride[1];
  *c2 = Kind == kPlanarYuv ? f.plane[2] + (long long)cy * f.stride[2] : *c1;
}

// Stage 1 of the fast path without aligned words, for source row sy: columns [sx_lo, sx_hi)
// into d (channel 0 of the row); pair k: luma columns 2k, 2k + 1, chroma column k (Note [chroma
// upsampling]).
template <int Kind>
ENGINE_HD_INLINE void stage_row_bytes(const KernelParams& p, const FramePlanes& f, int sy,
                                      int sx_lo, int sx_hi, int lane, int nl, float* d) {
  const unsigned char *yrow, *c1, *c2;
  source_rows<Kind>(p, f, sy, &yrow, &c1, &c2);
  const unsigned span = (unsigned)(sx_hi - sx_lo);
  for (int k = (sx_lo >> 1) + lane; 2 * k < sx_hi; k += nl) {
    float t[3];
    if (Kind == kSemiPlanarYuv) {
      yuv_chroma_terms(p.m, sample_to_float(c1[2 * k]), sample_to_float(c1[2 * k + 1]), t);
    } else {
      yuv_chroma_terms(p.m, sample_to_float(c1[k]), sample_to_float(c2[k]), t);
    }
    const int x = 2 * k - sx_lo;  // staged column (x_org = sx_lo)
    if (x >= 0) stage_pixel(p, sample_to_float(yrow[2 * k]), t, d + x);
    if ((unsigned)(x + 1) < span) stage_pixel(p, sample_to_float(yrow[2 * k + 1]), t, d + x + 1);
  }
}

// The x taps of a lane's kCols output columns (columns lane + cc kNL of the tile), for rows of
// floats whose column 0 is source column x_org: the staged offset of the first tap, and the
// weights (0 past the count); with 16-byte loads (kTaps >= 5) kW = 4 kVec weights from the
// 16-byte aligned column xo below the first tap, shifted by its distance (zero before and after:
// Note [CUDA preprocess: 8-bit fast path], b.). Loaded into registers once per block.
template <int kTaps, int kCols, int kNL>
struct XTaps {
  static constexpr bool kVecX = kTaps >= 5;  // 3 taps: 8 FFMA per 3 useful, keep 32-bit loads
  static constexpr int kVec = kVecX ? (kTaps + 6) / 4 : 0, kW = kVecX ? 4 * kVec : kTaps;
  float wx[kCols][kW];
  int xo[kCols];

  ENGINE_HD_INLINE void load(const KernelParams& p, int ox0, int tw, int lane, int x_org) {
    for (int cc = 0; cc < kCols; ++cc) {
      const int c = lane + cc * kNL, ox = ox0 + c;
      const int n = c < tw ? p.xcount[ox] : 0;
      const int u = n > 0 ? p.xfirst[ox] - x_org : 0, sh = kVecX ? (u & 3) : 0;
      xo[cc] = u - sh;
      for (int k = 0; k < kW; ++k) {
        const int j = k - sh;
        wx[cc][k] = j >= 0 && j < n ? p.xw[ox * p.kx + j] : 0.0f;
      }
    }
  }

  // a[ch] = the x sum of column cc over the row q (channel ch at q + ch * chan)
  ENGINE_HD_INLINE void sum(const float* q, int chan, int cc, float a[3]) const {
    a[0] = a[1] = a[2] = 0.0f;
    if (kVecX) {  // 16-byte loads
      for (int v = 0; v < kVec; ++v) {
        float d[3][4];
        for (int ch = 0; ch < 3; ++ch) load4(q + xo[cc] + 4 * v + ch * chan, d[ch]);
        for (int e = 0; e < 4; ++e)
          for (int ch = 0; ch < 3; ++ch) a[ch] += wx[cc][4 * v + e] * d[ch][e];
      }
    } else {
      for (int j = 0; j < kTaps; ++j)
        for (int ch = 0; ch < 3; ++ch) a[ch] += wx[cc][j] * q[xo[cc] + j + ch * chan];
    }
  }
};

// Stage 4 of the register-accumulating blocks: output rows warp + k kNW, columns lane + cc kNL
// of the tile from acc[k][cc][RGB] (unit scale) back to the 0..255 scale, normalised, in the
// output channel order, layout and dtype, or the pad value. The fp16 16-byte stores go through
// shared memory (Note [fp16 stores]): smem holds >= 3 kTileH kTileW floats no thread reads
// any more.
template <int kRows, int kCols, int kNW, int kNL>
ENGINE_HD_INLINE void store_block(const KernelParams& p, const float (&acc)[kRows][kCols][3],
                                  int b, int ox0, int oy0, int tw, int th, int warp, int lane,
                                  float* smem) {
  if (p.store8) {
    float* s_acc = smem;  // [3][kTileH][kTileW]
    block_sync();
    for (int k = 0; k < kRows; ++k)
      for (int cc = 0; cc < kCols; ++cc)
        for (int ch = 0; ch < 3; ++ch)
          s_acc[(ch * kTileH + warp + k * kNW) * kTileW + lane + cc * kNL] = acc[k][cc][ch];
    block_sync();
    store_tile(p, s_acc, b, ox0, oy0, tw, th, warp, kNW, lane, kNL);
    return;
  }
  for (int k = 0; k < kRows; ++k) {
    const int orow = warp + k * kNW, oy = oy0 + orow;
    if (orow >= th) continue;
    for (int cc = 0; cc < kCols; ++cc) {
      const int c = lane + cc * kNL, ox = ox0 + c;
      if (c >= tw) continue;
      const bool pad = p.ycount[oy] <= 0 || p.xcount[ox] <= 0;
      // output channel oc reads RGB channel bgr_out ? 2 - oc : oc
      const float v[3] = {p.bgr_out ? acc[k][cc][2] : acc[k][cc][0], acc[k][cc][1],
                          p.bgr_out ? acc[k][cc][0] : acc[k][cc][2]};
      const long long pix = ((long long)b * p.out_h + oy) * p.out_w + ox;
      const long long plane = (long long)p.out_h * p.out_w;
      for (int oc = 0; oc < 3; ++oc) {
        const float o = pad ? p.pad : normalize_value(p.norm, oc, 255.0f * v[oc]);
        const long long idx = p.nhwc ? pix * 3 + oc : pix + ((long long)b * 2 + oc) * plane;
        if (p.fp16) {
          static_cast<uint16_t*>(p.out)[idx] = float_to_half_bits(o);
        } else {
          static_cast<float*>(p.out)[idx] = o;
        }
      }
    }
  }
}

// One block of output pixels of the 8-bit fast path (Note [CUDA preprocess: 8-bit fast path]);
// `smem` holds kFastSmemFloats floats.
template <int Kind, int kTaps, int kNW, int kNL>
ENGINE_HD void preprocess_block_8bit(const KernelParams& p, int tx, int ty, int b, int warp,
                                     int lane, float* smem) {
  constexpr int kCols = kTileW / kNL;  // output columns per lane
  constexpr int kRows = kTileH / kNW;  // output rows per warp
  const FramePlanes& f = p.frames[b];  // read per row: registers are scarce here
  const int ox0 = tx * kTileW, oy0 = ty * kTileH;
  const int tw = mini(kTileW, p.out_w - ox0), th = mini(kTileH, p.out_h - oy0);
  const int R = p.rows;
  float* s_h = smem;                    // [3][kFastHChan]: [R][kTileW] used
  float* s_rgb = s_h + 3 * kFastHChan;  // [3][kFastRgbChan]: [R][pitch] used
  const int sy_lo = p.tile_y[2 * ty], sy_hi = p.tile_y[2 * ty + 1];
  const int sx_lo = p.tile_x[2 * tx], sx_hi = p.tile_x[2 * tx + 1];
  const int span = sx_hi - sx_lo;
  // aligned4 staging: groups of 4 luma columns touching the span; item gi of a row is groups gi
  // and gi + items (the last group again when that is past it: a valid word, finite values in
  // columns that are read with weight 0 only); this thread's first item and the step between
  // its items, as (row, item of the row) pairs
  const int gl = sx_lo >> 2, groups = span > 0 ? ((sx_hi + 3) >> 2) - gl : 1;
  const int items = (groups + 1) >> 1;
  // this tile's pitch, the largest <= p.span with pitch / 4 = items (mod 8) (still long enough:
  // the host chose p.span so), so that the 16-byte chunk of item i (row r, item gi:
  // i = r items + gi) is bank group i (mod 8): conflict-free staging stores (see the Note)
  const int pitch = p.span - 4 * (((p.span >> 2) - items) & 7);
  const int t = warp * kNL + lane, step_r = (kNW * kNL) / items;
  const int step_g = kNW * kNL - step_r * items, t_r = span > 0 ? t / items : R, t_g = t % items;
  // staged column 0 is source column x_org; columns [0, staged) are written by every chunk
  const int x_org = p.aligned4 ? 4 * gl : sx_lo;
  const int staged = span > 0 ? (p.aligned4 ? 4 * groups : span) : 0;
  // finite zeros past them up to the pitch: the unpredicated tap loads read beyond (see the Note)
  for (int r = warp; r < R; r += kNW)
    for (int xx = staged + lane; xx < pitch; xx += kNL)
      for (int ch = 0; ch < 3; ++ch) s_rgb[ch * kFastRgbChan + r * pitch + xx] = 0.0f;
  XTaps<kTaps, kCols, kNL> xt;
  xt.load(p, ox0, tw, lane, x_org);
  const unsigned char *plane0 = f.plane[0], *plane1 = f.plane[1], *plane2 = f.plane[2];
  const int stride0 = (int)f.stride[0], stride1 = (int)f.stride[1], stride2 = (int)f.stride[2];
  // y taps of the warp's rows, and their sums
  int yf[kRows], yn[kRows];
  float acc[kRows][kCols][3];
  for (int k = 0; k < kRows; ++k) {
    const int orow = warp + k * kNW;
    yn[k] = orow < th ? p.ycount[oy0 + orow] : 0;
    yf[k] = yn[k] > 0 ? p.yfirst[oy0 + orow] : 0;
    for (int cc = 0; cc < kCols; ++cc) acc[k][cc][0] = acc[k][cc][1] = acc[k][cc][2] = 0.0f;
  }
  for (int sy0 = sy_lo; sy0 < sy_hi; sy0 += R) {
    const int rows = mini(R, sy_hi - sy0);
    // 1. stage
    if (p.aligned4) {
      // items (chunk row r, groups gl + gi, gl + gi + items) spread over all threads of the block
      for (int r = t_r, gi = t_g; r < rows;) {
        // 32-bit row offsets: the host checked that every plane is below 2^31 bytes
        const int sy = sy0 + r, cy = p.sub_y == 2 ? (sy >> 1) : sy;
        const unsigned char* yrow = plane0 + sy * stride0;
        const unsigned char* c1 = plane1 + cy * stride1;
        const unsigned char* c2 = Kind == kPlanarYuv ? plane2 + cy * stride2 : c1;
        // groups gi and gi + items: a warp's chunks are consecutive mod 8
        float* d = s_rgb + r * pitch + 4 * gi;
        stage_group4<Kind>(p, yrow, c1, c2, gl + gi, d);
        stage_group4<Kind>(p, yrow, c1, c2, gl + mini(gi + items, groups - 1), d + 4 * items);
        gi += step_g;
        r += step_r;
        if (gi >= items) {
          gi -= items;
          ++r;
        }
      }
    } else {
      for (int r = warp; r < rows; r += kNW)
        stage_row_bytes<Kind>(p, f, sy0 + r, sx_lo, sx_hi, lane, kNL, s_rgb + r * pitch);
    }
    block_sync();
    // 2. horizontal
    for (int r = warp; r < rows; r += kNW) {
      const float* q = s_rgb + r * pitch;
      for (int cc = 0; cc < kCols; ++cc) {
        float a[3];
        xt.sum(q, kFastRgbChan, cc, a);
        float* h = s_h + r * kTileW + lane + cc * kNL;
        h[0] = a[0];
        h[kFastHChan] = a[1];
        h[2 * kFastHChan] = a[2];
      }
    }
    block_sync();
    // 3. vertical: the chunk rows each of the warp's output rows reads
    for (int k = 0; k < kRows; ++k) {
      const int j0 = maxi(sy0 - yf[k], 0), j1 = mini(sy0 + rows - yf[k], yn[k]);
      const float* w = p.yw + (warp + k * kNW + oy0) * p.ky;
      for (int j = j0; j < j1; ++j) {
        const float wj = w[j];
        const float* h = s_h + (yf[k] + j - sy0) * kTileW + lane;
        for (int cc = 0; cc < kCols; ++cc) {
          acc[k][cc][0] += wj * h[cc * kNL];
          acc[k][cc][1] += wj * h[cc * kNL + kFastHChan];
          acc[k][cc][2] += wj * h[cc * kNL + 2 * kFastHChan];
        }
      }
    }
    // no barrier: the next staging writes s_rgb only (see the Note)
  }
  // 4. store
  store_block<kRows, kCols, kNW, kNL>(p, acc, b, ox0, oy0, tw, th, warp, lane, smem);
}

#if defined(__CUDACC__)
// The 8-bit fast path (Note [CUDA preprocess: 8-bit fast path]); launched with kThreads threads.
template <int Kind, int kTaps>
__global__ void __launch_bounds__(kThreads, 4) preprocess_kernel_8bit(KernelParams p) {
  extern __shared__ float smem[];
  preprocess_block_8bit<Kind, kTaps, kThreads / 32, 32>(
      p, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x >> 5, threadIdx.x & 31, smem);
}
#endif

}  // namespace cuda
}  // namespace engine
