// cuda/preprocess_kernel_vfirst.cuh - the fused preprocessing kernel for 8-bit 4:2:0 Y'CbCr
// (I420, NV12), vertical pass first with the sums in registers (Note [CUDA preprocess: vertical
// pass first]). It takes the aligned 4:2:0 calls of the 8-bit fast path of
// preprocess_kernel_8bit.cuh, whose helpers it shares (plan_vfirst in preprocess_cuda.cu).
#pragma once

#include "cuda/preprocess_kernel_8bit.cuh"

namespace engine {
namespace cuda {

// Note [CUDA preprocess: vertical pass first]
// The 8-bit fast path stages every source pixel of the tile's footprint in shared memory and
// reads it back for the horizontal pass: about 5,000 shared-memory wavefronts per 32 x 16 tile at
// 1080p -> 224 (counted), and Nsight on an H100 (batch 32) found it half issue-bound, half
// shared-memory-bound: ~19k warp instructions per tile, 52.6% of issue slots, L1 Mem Busy 75%.
// This block sums the same terms in the other order, as the CPU kernel does:
//   1. vertical, in registers: item (output row o, group g of 4 source columns) converts its 4
//      pixels in each of o's y-tap rows straight from global memory (one 32-bit luma load; the
//      chroma terms once per chroma row, which serves two luma rows: 4:2:0 only, 4:2:2 stays
//      on the fast path) and accumulates them with o's y weights; 12 sums
//      (3 channels x 4 columns) go to shared memory with three 16-byte stores. Items are spread
//      over the whole block (a 1080p tile has ~37 groups: a warp per row would idle lanes);
//   2. horizontal: lane l owns output column l for the warp's output rows, with XTaps' register
//      weights and 16-byte loads over those rows, and stores (store_block).
// A source pixel is converted once per output row whose taps reach it (about 2x at 4.2x
// downscale, where the staging converts it once), for ~5x fewer shared-memory wavefronts and no
// chunked row loop (one barrier). Same terms, other summation order: the two blocks agree to
// float rounding (tests/gpu/test_cuda_build.py). It needs 4-byte aligned planes and strides
// (p.aligned4) and 3 kTileH p.span floats of shared memory (p.span: the row pitch, the fast
// path's staged-row length). Its 32-bit loads (load_pair, as stage_group4's) may reach past a
// row's last sample but never past the aligned word that holds it (guard pages after that word
// and before every row: tests/gpu/test_cuda_guard_pages.py).
// On an H100 (2026-11-27, same-run A/B, batch 32 and 8): 1.01-1.34x the fast path's frames/s,
// 19-29% of copy bandwidth. Nsight Compute at 1080p -> 224: latency-bound (52% of issue slots,
// L1 32% busy; of the 14 cycles between a warp's instructions, 7 wait on its global loads), 50%
// occupancy (64 registers and 32 KB of shared memory per block): more loads in flight per warp
// (the next y-tap row's words loaded before the current row is converted) is the next thing to try.
// With clamp="output" (kVfirstPlanes, Note [CUDA preprocess: clamp="output"]) step 1 sums the raw
// Y, Cb and Cr samples instead (4 + 4 multiply-adds per tap row and group, no conversion), the
// chroma sums are replicated onto the luma columns in shared memory, and step 2's resampled Y,
// Cb, Cr are converted once per output pixel.

// The block's variants (its kVariant). The TEMPORARY ones are chosen by ENGINE_CUDA_PREPROCESS
// (plan_vfirst, read at every call) until a GPU run of bench/preprocess_ab.py decides; they
// compute the same terms in the same order (bit-identical).
enum VfirstVariant : int {
  kVfirst = 0,      // clamp="source" (the default)
  kVfirstPlanes,    // clamp="output" (add_pair_planes)
  kVfirstPrefetch,  // TEMPORARY, "vfirst-prefetch": the next pair's samples loaded a step ahead
  kVfirstLate,      // TEMPORARY, "vfirst-late": weights read where used (add_pair kLateWeights)
};

// The raw samples of one chroma row of a group and of its one or two luma rows within an output
// row's taps (kVfirstPrefetch: loaded a step ahead of their conversion).
struct PairSamples {
  uint32_t ca = 0, cb = 0, y0 = 0, y1 = 0;
};

template <int Kind>
ENGINE_HD_INLINE PairSamples load_pair(const unsigned char* c1, const unsigned char* c2,
                                       const unsigned char* yp, int stride0, int rows) {
  PairSamples s;
  chroma_words4<Kind>(c1, c2, 0, &s.ca, &s.cb);
  s.y0 = *reinterpret_cast<const uint32_t*>(yp);
  if (rows > 1) s.y1 = *reinterpret_cast<const uint32_t*>(yp + stride0);
  return s;
}

// The pair's y weights: w[0], and w[1] if the pair has two rows within the taps. Loaded with
// (predicated) loads the compiler can issue with the samples' (a weight read inside `if (k <
// rows)` was loaded only after the chroma terms: two load latencies a pair instead of one, sm_90
// SASS); the first row is unconditional (rows >= 1), which the compiler cannot know.
ENGINE_HD_INLINE void pair_weights(const float* w, int rows, float wk[2]) {
  wk[0] = w[0];
  wk[1] = rows > 1 ? w[1] : 0.0f;
}

// Adds the pair's terms with y weights w: its chroma terms once, then its one or two luma rows.
// kLateWeights: the code before pair_weights, each weight read where it is used (kVfirstLate, and
// the prefetch loop, whose next samples are live here: loading the weights early, or the first
// row unconditional, made that variant spill 8 bytes: ptxas, sm_90).
template <int Kind, bool kLateWeights>
ENGINE_HD_INLINE void add_pair(const KernelParams& p, const PairSamples& s, const float* w,
                               int rows, float acc[3][4]) {
  float wk[2], tc[2][3], v[3][4];
  if (!kLateWeights) pair_weights(w, rows, wk);
  chroma_terms4<Kind>(p, s.ca, s.cb, tc);
  for (int k = 0; k < 2; ++k) {
    if (kLateWeights ? k < rows : k == 0 || rows > 1) {
      luma_group4(p, k == 0 ? s.y0 : s.y1, tc, v);
      const float wgt = kLateWeights ? w[k] : wk[k];
      for (int ch = 0; ch < 3; ++ch)
        for (int e = 0; e < 4; ++e) acc[ch][e] += wgt * v[ch][e];
    }
  }
}

// clamp="output" (kVfirstPlanes, Note [CUDA preprocess: clamp="output"]): adds the pair's raw
// samples with y weights w: its one or two luma rows to acc[0][0..3], its chroma row with their
// summed weight (the replicated chroma, Note [chroma upsampling]) to acc[1][0..1] (Cb of the
// group's chroma columns 2g, 2g + 1) and acc[2][0..1] (Cr).
template <int Kind>
ENGINE_HD_INLINE void add_pair_planes(const PairSamples& s, const float* w, int rows,
                                      float acc[3][4]) {
  float wk[2], wc = 0.0f;
  pair_weights(w, rows, wk);
  for (int k = 0; k < 2; ++k) {
    if (k == 0 || rows > 1) {
      const uint32_t yq = k == 0 ? s.y0 : s.y1;
      for (int e = 0; e < 4; ++e) acc[0][e] += wk[k] * byte_to_float(yq, e);
      wc += wk[k];
    }
  }
  // NV12: one word Cb Cr Cb Cr; I420: the Cb pair in ca, the Cr pair in cb (chroma_words4)
  const bool nv12 = Kind == kSemiPlanarYuv;
  for (int e = 0; e < 2; ++e) {
    acc[1][e] += wc * byte_to_float(s.ca, nv12 ? 2 * e : e);
    acc[2][e] += wc * byte_to_float(nv12 ? s.ca : s.cb, nv12 ? 2 * e + 1 : e);
  }
}

// kVariant (VfirstVariant): kVfirstPrefetch's vertical loop loads the next pair's samples before
// it converts the current pair's, so a warp has two steps of sample loads in flight (Nsight found
// this block waiting on its loads half the time); its weights are read where used (prefetching
// them too made the I420 variants spill). kVfirstPlanes: the vertical sums are of raw samples,
// the chroma ones replicated onto the luma columns in shared memory, and each output pixel's
// resampled Y, Cb, Cr are converted before the store.
template <int Kind, int kTaps, int kNW, int kNL, int kVariant = kVfirst>
ENGINE_HD void preprocess_block_vfirst(const KernelParams& p, int tx, int ty, int b, int warp,
                                       int lane, float* smem) {
  constexpr int kCols = kTileW / kNL;  // output columns per lane
  constexpr int kRows = kTileH / kNW;  // output rows per warp
  const FramePlanes& f = p.frames[b];
  const int ox0 = tx * kTileW, oy0 = ty * kTileH;
  const int tw = mini(kTileW, p.out_w - ox0), th = mini(kTileH, p.out_h - oy0);
  const int pitch = p.span, chan = kTileH * pitch;  // smem: [3][kTileH][pitch] vertical sums
  const int sx_lo = p.tile_x[2 * tx], sx_hi = p.tile_x[2 * tx + 1];
  // groups of 4 luma columns touching the span; column 0 of a row is source column 4 gl
  const int gl = sx_lo >> 2, groups = sx_hi > sx_lo ? ((sx_hi + 3) >> 2) - gl : 0;
  const unsigned char *plane0 = f.plane[0], *plane1 = f.plane[1], *plane2 = f.plane[2];
  // 32-bit row offsets: the host checked that every plane is below 2^31 bytes
  const int stride0 = (int)f.stride[0], stride1 = (int)f.stride[1], stride2 = (int)f.stride[2];
  constexpr bool kPrefetch = kVariant == kVfirstPrefetch, kPlanes = kVariant == kVfirstPlanes;
  constexpr bool kLateWeights = kVariant == kVfirstLate;
  const int t = warp * kNL + lane;
  // 1. vertical: item i = (output row i / groups, group i % groups)
  for (int i = t; i < th * groups; i += kNW * kNL) {
    const int orow = i / groups, g = gl + (i - orow * groups), oy = oy0 + orow;
    const int n = p.ycount[oy], sy0 = n > 0 ? p.yfirst[oy] : 0;
    const float* w = p.yw + oy * p.ky;
    float acc[3][4] = {};
    // pointers at the group's samples (chroma_words4's group 0); one chroma row serves the luma
    // rows 2 cy and 2 cy + 1 (4:2:0): its terms once, then one or two luma taps
    const int cg = Kind == kPlanarYuv ? 2 * g : 4 * g;
    const unsigned char* yp = plane0 + sy0 * stride0 + 4 * g;
    const unsigned char* c1 = plane1 + (sy0 >> 1) * stride1 + cg;
    const unsigned char* c2 = Kind == kPlanarYuv ? plane2 + (sy0 >> 1) * stride2 + cg : c1;
    if (kPrefetch) {
      int rows = mini(2 - (sy0 & 1), n);  // the pair's rows within the taps
      PairSamples cur;
      if (n > 0) cur = load_pair<Kind>(c1, c2, yp, stride0, rows);
      for (int j = 0; j < n;) {
        c1 += stride1;
        if (Kind == kPlanarYuv) c2 += stride2;
        yp += rows * stride0;
        j += rows;
        const int next_rows = mini(2, n - j);
        PairSamples next;
        if (j < n) next = load_pair<Kind>(c1, c2, yp, stride0, next_rows);
        add_pair<Kind, true>(p, cur, w, rows, acc);
        w += rows;
        cur = next;
        rows = next_rows;
      }
    } else {
      for (int j = 0; j < n;) {
        const int rows = mini(2 - ((sy0 + j) & 1), n - j);  // the pair's rows within the taps
        const PairSamples s = load_pair<Kind>(c1, c2, yp, stride0, rows);
        if (kPlanes) add_pair_planes<Kind>(s, w, rows, acc);
        else add_pair<Kind, kLateWeights>(p, s, w, rows, acc);
        c1 += stride1;
        if (Kind == kPlanarYuv) c2 += stride2;
        yp += rows * stride0;
        j += rows;
        w += rows;
      }
    }
    float* d = smem + orow * pitch + 4 * (g - gl);
    if (kPlanes) {  // Y; Cb and Cr replicated onto the luma columns
      store4(d, acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
      for (int ch = 1; ch < 3; ++ch)
        store4(d + ch * chan, acc[ch][0], acc[ch][0], acc[ch][1], acc[ch][1]);
    } else {
      for (int ch = 0; ch < 3; ++ch)
        store4(d + ch * chan, acc[ch][0], acc[ch][1], acc[ch][2], acc[ch][3]);
    }
  }
  // finite zeros past the groups up to the pitch: the unpredicated x-tap loads read beyond
  const int staged = 4 * groups, rest = pitch - staged;
  for (int i = t; i < th * rest; i += kNW * kNL) {
    const int r = i / rest, x = staged + (i - r * rest);
    for (int ch = 0; ch < 3; ++ch) smem[ch * chan + r * pitch + x] = 0.0f;
  }
  block_sync();
  // 2. horizontal, over the warp's output rows (rows past th are never stored: read row th - 1)
  XTaps<kTaps, kCols, kNL> xt;
  xt.load(p, ox0, tw, lane, 4 * gl);
  float acc[kRows][kCols][3];
  for (int k = 0; k < kRows; ++k) {
    const float* q = smem + mini(warp + k * kNW, th - 1) * pitch;
    for (int cc = 0; cc < kCols; ++cc) {
      xt.sum(q, chan, cc, acc[k][cc]);
      if (kPlanes) {  // resampled Y, Cb, Cr -> unit-scale RGB, clamped by the store
        const float y = acc[k][cc][0], cb = acc[k][cc][1], cr = acc[k][cc][2];
        yuv_to_rgb(p.m, y, cb, cr, acc[k][cc]);
      }
    }
  }
  store_block<kRows, kCols, kNW, kNL>(p, acc, b, ox0, oy0, tw, th, warp, lane, smem);
}

#if defined(__CUDACC__)
template <int Kind, int kTaps, int kVariant>
__global__ void __launch_bounds__(kThreads, 4) preprocess_kernel_vfirst(KernelParams p) {
  extern __shared__ float smem[];
  preprocess_block_vfirst<Kind, kTaps, kThreads / 32, 32, kVariant>(
      p, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x >> 5, threadIdx.x & 31, smem);
}
#endif

}  // namespace cuda
}  // namespace engine
