// cuda/preprocess_kernel.cuh - framework-free fused preprocessing kernel (one launch per batch).
//
// The block body is ENGINE_HD: the same code runs as the CUDA kernel and, one "thread" at a time,
// on the host (preprocess_cuda_emulate), so the kernel logic is tested on machines without a GPU.
// All arithmetic comes from the engine/*.h headers (colour.h, normalize.h, common.h); the host
// builds the tap tables with resample.h (compute_geometry, compute_plane_taps, max_plane_taps).
//
// Note [CUDA preprocess: clamp before resampling]
// Every output pixel is
//     out = normalize(sum_{ky, kx} wy[ky] wx[kx] clamp(C(Y[sy][sx], U[sy/suby][sx/subx], V[...])))
// with the LUMA taps on both axes (chroma replicated to the luma grid, Note [chroma upsampling])
// and the RGB of every SOURCE pixel clamped to [0, 255] before resampling (Note [clamp before
// resampling]; = PyAV rgb24 then resize). It is evaluated separably per block of output pixels:
//   1. stage: the source pixels of R source rows x the block's source columns are converted and
//      clamped once into shared memory (skipped when the span does not fit: "direct" variant,
//      which converts each tap from global memory instead);
//   2. horizontal: each (source row, output column) of the block: sum over the x taps;
//   3. vertical: each output pixel accumulates the rows of this chunk that its y taps cover.
// Horizontal first (like torch), float accumulation; agrees with float64 to float rounding.
#pragma once

#include "engine/colour.h"
#include "engine/common.h"
#include "engine/normalize.h"
#include "engine/preprocess.h"

namespace engine {
namespace cuda {

constexpr int kTileW = 32;       // output columns per block
constexpr int kTileH = 16;       // output rows per block
constexpr int kThreads = 256;    // threads per block
constexpr int kSmemBudget = 48 * 1024;  // bytes of dynamic shared memory (no opt-in needed)

enum SourceKind : int { kPlanarYuv = 0, kSemiPlanarYuv = 1, kPackedRgb = 2 };

struct FramePlanes {          // one frame of the batch (device or host addresses)
  const unsigned char* plane[3];
  long long stride[3];        // bytes between rows
};

// Everything the kernel reads, filled once by the host (see build_preprocess_tables).
struct KernelParams {
  int batch, in_w, in_h, out_h, out_w;
  int kind;                   // SourceKind
  int sub_x, sub_y;           // chroma subsampling (1 or 2)
  int bgr_in;                 // packed input is B, G, R
  int bgr_out, nhwc, fp16;
  float pad;                  // letterbox / outside value, output units
  YuvToRgb m;
  Normalize norm;
  // tables (device addresses in the kernel, host addresses in the emulation)
  const FramePlanes* frames;  // [batch]
  const int* yfirst;          // [out_h]   first source row of the taps of output row o
  const int* ycount;          // [out_h]   tap count (0: padding row)
  const float* yw;            // [out_h, ky]
  const int* xfirst;          // [out_w]
  const int* xcount;          // [out_w]
  const float* xw;            // [out_w, kx]
  const int* tile_y;          // [tiles_y, 2]  source rows [lo, hi) read by a row of blocks
  const int* tile_x;          // [tiles_x, 2]  source columns [lo, hi) read by a column of blocks
  int ky, kx;                 // table widths
  int rows;                   // R: source rows per chunk
  int span;                   // staged row pitch in floats (>= every tile's column span); 0 = direct
  void* out;                  // [B, 3, H, W] or [B, H, W, 3], float32 or float16 bits
};

// Shared-memory floats of one block: accumulators, horizontal results, staged RGB.
ENGINE_HD_INLINE int smem_floats(int rows, int span) {
  return 3 * kTileH * kTileW + 3 * rows * kTileW + 3 * rows * span;
}

// Clamped R'G'B' of source pixel (sy, sx) of frame f; see Note [CUDA preprocess: clamp before
// resampling]. Packed RGB is in range already.
template <typename T, int Kind>
ENGINE_HD_INLINE void fetch_rgb(const KernelParams& p, const FramePlanes& f, int sy, int sx,
                                float rgb[3]) {
  if (Kind == kPackedRgb) {
    const T* row = reinterpret_cast<const T*>(f.plane[0] + (long long)sy * f.stride[0]);
    const float a = (float)row[3 * sx], g = (float)row[3 * sx + 1], c = (float)row[3 * sx + 2];
    rgb[0] = p.bgr_in ? c : a;
    rgb[1] = g;
    rgb[2] = p.bgr_in ? a : c;
    return;
  }
  const T* yrow = reinterpret_cast<const T*>(f.plane[0] + (long long)sy * f.stride[0]);
  const int cy = p.sub_y == 2 ? (sy >> 1) : sy;
  const int cx = p.sub_x == 2 ? (sx >> 1) : sx;
  float u, v;
  if (Kind == kSemiPlanarYuv) {
    const T* uv = reinterpret_cast<const T*>(f.plane[1] + (long long)cy * f.stride[1]);
    u = (float)uv[2 * cx];
    v = (float)uv[2 * cx + 1];
  } else {
    u = (float)reinterpret_cast<const T*>(f.plane[1] + (long long)cy * f.stride[1])[cx];
    v = (float)reinterpret_cast<const T*>(f.plane[2] + (long long)cy * f.stride[2])[cx];
  }
  yuv_to_rgb(p.m, (float)yrow[sx], u, v, rgb);
  for (int c = 0; c < 3; ++c) rgb[c] = clampf(rgb[c], 0.0f, 255.0f);
}

ENGINE_HD_INLINE void block_sync() {
#if defined(__CUDA_ARCH__)
  __syncthreads();
#endif
}

// One block of output pixels: tile (tx, ty) of frame b. Thread `tid` of `nthr` (the host
// emulation runs it with tid 0 of 1). `smem` holds smem_floats(p.rows, p.span) floats.
template <typename T, int Kind, bool kStaged>
ENGINE_HD void preprocess_block(const KernelParams& p, int tx, int ty, int b, int tid, int nthr,
                                float* smem) {
  const FramePlanes f = p.frames[b];
  const int ox0 = tx * kTileW, oy0 = ty * kTileH;
  const int tw = mini(kTileW, p.out_w - ox0), th = mini(kTileH, p.out_h - oy0);
  const int R = p.rows;
  float* s_acc = smem;                         // [3][kTileH][kTileW]
  float* s_h = s_acc + 3 * kTileH * kTileW;    // [3][R][kTileW]
  float* s_rgb = s_h + 3 * R * kTileW;         // [3][R][span]
  const int sy_lo = p.tile_y[2 * ty], sy_hi = p.tile_y[2 * ty + 1];
  const int sx_lo = p.tile_x[2 * tx], sx_hi = p.tile_x[2 * tx + 1];
  const int span = sx_hi - sx_lo;
  for (int i = tid; i < 3 * kTileH * kTileW; i += nthr) s_acc[i] = 0.0f;
  block_sync();
  for (int sy0 = sy_lo; sy0 < sy_hi; sy0 += R) {
    const int rows = mini(R, sy_hi - sy0);
    // 1. stage: clamped RGB of the chunk's source pixels
    if (kStaged) {
      for (int i = tid; i < rows * span; i += nthr) {
        const int r = i / span, xx = i - r * span;
        float rgb[3];
        fetch_rgb<T, Kind>(p, f, sy0 + r, sx_lo + xx, rgb);
        for (int c = 0; c < 3; ++c) s_rgb[(c * R + r) * p.span + xx] = rgb[c];
      }
      block_sync();
    }
    // 2. horizontal pass: (source row, output column)
    for (int i = tid; i < rows * tw; i += nthr) {
      const int r = i / tw, c = i - r * tw, ox = ox0 + c;
      const int n = p.xcount[ox], first = p.xfirst[ox];
      const float* w = p.xw + (long long)ox * p.kx;
      float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
      for (int j = 0; j < n; ++j) {
        const float wj = w[j];
        if (kStaged) {
          const int xx = first + j - sx_lo;
          a0 += wj * s_rgb[(0 * R + r) * p.span + xx];
          a1 += wj * s_rgb[(1 * R + r) * p.span + xx];
          a2 += wj * s_rgb[(2 * R + r) * p.span + xx];
        } else {
          float rgb[3];
          fetch_rgb<T, Kind>(p, f, sy0 + r, first + j, rgb);
          a0 += wj * rgb[0];
          a1 += wj * rgb[1];
          a2 += wj * rgb[2];
        }
      }
      s_h[(0 * R + r) * kTileW + c] = a0;
      s_h[(1 * R + r) * kTileW + c] = a1;
      s_h[(2 * R + r) * kTileW + c] = a2;
    }
    block_sync();
    // 3. vertical pass: every output pixel adds the chunk rows its y taps cover
    for (int i = tid; i < th * tw; i += nthr) {
      const int orow = i / tw, c = i - orow * tw, oy = oy0 + orow;
      const int n = p.ycount[oy], first = p.yfirst[oy];
      const int j0 = maxi(sy0 - first, 0), j1 = mini(sy0 + rows - first, n);
      if (j0 >= j1) continue;
      const float* w = p.yw + (long long)oy * p.ky;
      float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
      for (int j = j0; j < j1; ++j) {
        const int r = first + j - sy0;
        const float wj = w[j];
        a0 += wj * s_h[(0 * R + r) * kTileW + c];
        a1 += wj * s_h[(1 * R + r) * kTileW + c];
        a2 += wj * s_h[(2 * R + r) * kTileW + c];
      }
      s_acc[(0 * kTileH + orow) * kTileW + c] += a0;
      s_acc[(1 * kTileH + orow) * kTileW + c] += a1;
      s_acc[(2 * kTileH + orow) * kTileW + c] += a2;
    }
    block_sync();
  }
  // 4. normalise, channel order, layout, padding; see Note [normalisation]
  for (int i = tid; i < th * tw; i += nthr) {
    const int orow = i / tw, c = i - orow * tw, oy = oy0 + orow, ox = ox0 + c;
    const bool valid = p.ycount[oy] > 0 && p.xcount[ox] > 0;
    for (int oc = 0; oc < 3; ++oc) {
      const int sc = p.bgr_out ? 2 - oc : oc;  // RGB channel feeding output channel oc
      const float v = valid ? normalize_value(p.norm, oc, s_acc[(sc * kTileH + orow) * kTileW + c])
                            : p.pad;
      const long long idx =
          p.nhwc ? (((long long)b * p.out_h + oy) * p.out_w + ox) * 3 + oc
                 : (((long long)b * 3 + oc) * p.out_h + oy) * p.out_w + ox;
      if (p.fp16) {
        static_cast<uint16_t*>(p.out)[idx] = float_to_half_bits(v);
      } else {
        static_cast<float*>(p.out)[idx] = v;
      }
    }
  }
}

#if defined(__CUDACC__)
template <typename T, int Kind, bool kStaged>
__global__ void __launch_bounds__(kThreads) preprocess_kernel(KernelParams p) {
  extern __shared__ float smem[];
  preprocess_block<T, Kind, kStaged>(p, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x,
                                     blockDim.x, smem);
}
#endif

}  // namespace cuda
}  // namespace engine
