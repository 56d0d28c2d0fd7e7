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
// Horizontal first (like torch), float accumulation on the unit scale (rgb / 255, the clamp is a
// free saturate), scaled back by 255 before normalising; agrees with float64 to float rounding.
//
// Note [CUDA preprocess: clamp="output"]
// PreprocessSpec clamp="output" clamps only the resampled value (the CPU kernel's Note [fused
// resize order]: convert(resample(planes)), cheaper, up to ~19 levels off an RGB pipeline next to
// out-of-gamut pixels). Resampling is linear and the conversion affine with weights summing to
// one, so the blocks compute it two ways, equal to float rounding:
//   * the general block (kClampSrc = false): the same sums without the source saturate; the
//     normalisation clamps the result (normalize_value);
//   * the vertical-first block for aligned 8-bit 4:2:0 (kPlanes, preprocess_kernel_vfirst.cuh):
//     the raw Y, Cb, Cr samples are resampled (chroma replicated onto the luma grid, as folding
//     its taps does on the CPU: Note [chroma upsampling]) and converted once per output pixel.
// The 8-bit fast path (staging) has no such variant: its other inputs run the general block.
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
  int store8;                 // fp16 in runs of 8 pixels, 16-byte stores (Note [fp16 stores])
  float pad;                  // letterbox / outside value, output units
  YuvToRgb m;                 // unit scale: make_yuv_to_rgb(...) scaled by 1/255 (unit_scale_map)
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
  int aligned4;               // fast path: every plane address and row stride is a multiple of 4
                              // bytes (Note [CUDA preprocess: 8-bit fast path])
  void* out;                  // [B, 3, H, W] or [B, H, W, 3], float32 or float16 bits
};

// Shared-memory floats of one block: accumulators, horizontal results, staged RGB.
ENGINE_HD_INLINE int smem_floats(int rows, int span) {
  return 3 * kTileH * kTileW + 3 * rows * kTileW + 3 * rows * span;
}

// [0, 1] -> the FFMA.SAT / FADD.SAT modifier on the device (free), clampf on the host.
ENGINE_HD_INLINE float saturate01(float v) {
#if defined(__CUDA_ARCH__)
  return __saturatef(v);
#else
  return clampf(v, 0.0f, 1.0f);
#endif
}

// Clamped R'G'B' of source pixel (sy, sx) of frame f on the UNIT scale (rgb / 255, so that the
// clamp to [0, 255] is a saturate): p.m is make_yuv_to_rgb's map with every coefficient scaled by
// 1/255 (unit_scale_map); the block scales its result back by 255 before normalising. See Note
// [CUDA preprocess: clamp before resampling]; kClampSrc = false: not clamped (Note [CUDA
// preprocess: clamp="output"]). Packed RGB is in range already.
template <typename T, int Kind, bool kClampSrc>
ENGINE_HD_INLINE void fetch_rgb(const KernelParams& p, const FramePlanes& f, int sy, int sx,
                                float rgb[3]) {
  if (Kind == kPackedRgb) {
    const T* row = reinterpret_cast<const T*>(f.plane[0] + (long long)sy * f.stride[0]);
    const float k = 1.0f / 255.0f;
    const float a = (float)row[3 * sx] * k, g = (float)row[3 * sx + 1] * k,
                c = (float)row[3 * sx + 2] * k;
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
  if (kClampSrc)
    for (int c = 0; c < 3; ++c) rgb[c] = saturate01(rgb[c]);
}

// make_yuv_to_rgb's map with every coefficient times k (1/255: unit-scale output).
ENGINE_HD_INLINE YuvToRgb unit_scale_map(YuvToRgb m, float k) {
  m.y_gain *= k;
  for (int c = 0; c < 3; ++c) {
    m.cb_gain[c] *= k;
    m.cr_gain[c] *= k;
    m.bias[c] *= k;
  }
  return m;
}

ENGINE_HD_INLINE void block_sync() {
#if defined(__CUDA_ARCH__)
  __syncthreads();
#endif
}

// Note [fp16 stores]
// A float16 output is written 8 pixels per thread with 16-byte stores when the host found the
// layout allows it (store8: out_w % 8 == 0 and a 16-byte aligned base; then every run of 8 pixels
// starts on a 16-byte boundary: 8 halves of one channel row in NCHW, 24 halves (3 stores) of
// 8 interleaved pixels in NHWC); otherwise, and for float32, one element per store.
struct alignas(16) Half8 {
  uint16_t v[8];
};

// Output value of channel oc at (orow, c) of the tile: back to the 0..255 scale, normalised
// (Note [normalisation]), or the pad value outside the resized picture.
ENGINE_HD_INLINE float output_value(const KernelParams& p, const float* s_acc, int oy, int ox,
                                    int orow, int c, int oc) {
  if (p.ycount[oy] <= 0 || p.xcount[ox] <= 0) return p.pad;
  const int sc = p.bgr_out ? 2 - oc : oc;  // RGB channel feeding output channel oc
  return normalize_value(p.norm, oc, 255.0f * s_acc[(sc * kTileH + orow) * kTileW + c]);
}

// Stage 4 of a block: the tile's accumulated unit-scale RGB s_acc [3][kTileH][kTileW] back to
// the 0..255 scale, normalised, in the output channel order, layout and dtype, or the pad value.
ENGINE_HD_INLINE void store_tile(const KernelParams& p, const float* s_acc, int b, int ox0, int oy0,
                                 int tw, int th, int warp, int nw, int lane, int nl) {
  if (p.store8) {  // Note [fp16 stores]: tw is a multiple of 8 here
    const int runs = tw / 8, per_row = p.nhwc ? runs : 3 * runs;
    for (int i = warp * nl + lane; i < th * per_row; i += nw * nl) {
      const int orow = i / per_row, k = i % per_row;
      const int oc0 = p.nhwc ? 0 : k / runs, c0 = 8 * (p.nhwc ? k : k % runs);
      const int oy = oy0 + orow, ox = ox0 + c0;
      const int stores = p.nhwc ? 3 : 1;  // NHWC: 8 pixels x 3 channels = 24 halves
      Half8* dst = reinterpret_cast<Half8*>(static_cast<uint16_t*>(p.out) +
          (p.nhwc ? (((long long)b * p.out_h + oy) * p.out_w + ox) * 3
                  : (((long long)b * 3 + oc0) * p.out_h + oy) * p.out_w + ox));
      for (int s8 = 0; s8 < stores; ++s8) {
        Half8 h;
        for (int e = 0; e < 8; ++e) {
          const int flat = 8 * s8 + e;  // element of the run: pixel flat / 3, channel flat % 3
          const int c = p.nhwc ? c0 + flat / 3 : c0 + e, oc = p.nhwc ? flat % 3 : oc0;
          h.v[e] = float_to_half_bits(output_value(p, s_acc, oy, ox0 + c, orow, c, oc));
        }
        dst[s8] = h;
      }
    }
    return;
  }
  for (int orow = warp; orow < th; orow += nw) {
    const int oy = oy0 + orow;
    for (int c = lane; c < tw; c += nl) {
      const int ox = ox0 + c;
      for (int oc = 0; oc < 3; ++oc) {
        const float v = output_value(p, s_acc, oy, ox, orow, c, oc);
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
}

// One block of output pixels: tile (tx, ty) of frame b. Work is split by warp and lane: warp w
// of nw handles source rows w, w + nw, ... of a chunk (stages 1, 2) and output rows of the tile
// (stage 3); lane l of nl strides over columns. No divisions, coalesced row reads. The host
// emulation runs it as warp 0 of 1, lane 0 of 1. `smem` holds smem_floats(p.rows, p.span) floats.
// kClampSrc: clamp="source" (else Note [CUDA preprocess: clamp="output"]).
template <typename T, int Kind, bool kStaged, bool kClampSrc>
ENGINE_HD void preprocess_block(const KernelParams& p, int tx, int ty, int b, int warp, int nw,
                                int lane, int nl, float* smem) {
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
  for (int i = warp * nl + lane; i < 3 * kTileH * kTileW; i += nw * nl) s_acc[i] = 0.0f;
  block_sync();
  for (int sy0 = sy_lo; sy0 < sy_hi; sy0 += R) {
    const int rows = mini(R, sy_hi - sy0);
    // 1. stage: clamped unit-scale RGB of the chunk's source pixels
    if (kStaged) {
      for (int r = warp; r < rows; r += nw) {
        float* d0 = s_rgb + (0 * R + r) * p.span;
        float* d1 = s_rgb + (1 * R + r) * p.span;
        float* d2 = s_rgb + (2 * R + r) * p.span;
        for (int xx = lane; xx < span; xx += nl) {
          float rgb[3];
          fetch_rgb<T, Kind, kClampSrc>(p, f, sy0 + r, sx_lo + xx, rgb);
          d0[xx] = rgb[0];
          d1[xx] = rgb[1];
          d2[xx] = rgb[2];
        }
      }
      block_sync();
    }
    // 2. horizontal pass: (source row, output column)
    for (int r = warp; r < rows; r += nw) {
      for (int c = lane; c < tw; c += nl) {
        const int ox = ox0 + c;
        const int n = p.xcount[ox], first = p.xfirst[ox];
        const float* w = p.xw + (long long)ox * p.kx;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
        if (kStaged) {
          const float* q0 = s_rgb + (0 * R + r) * p.span + (first - sx_lo);
          const float* q1 = s_rgb + (1 * R + r) * p.span + (first - sx_lo);
          const float* q2 = s_rgb + (2 * R + r) * p.span + (first - sx_lo);
          for (int j = 0; j < n; ++j) {
            const float wj = w[j];
            a0 += wj * q0[j];
            a1 += wj * q1[j];
            a2 += wj * q2[j];
          }
        } else {
          for (int j = 0; j < n; ++j) {
            const float wj = w[j];
            float rgb[3];
            fetch_rgb<T, Kind, kClampSrc>(p, f, sy0 + r, first + j, rgb);
            a0 += wj * rgb[0];
            a1 += wj * rgb[1];
            a2 += wj * rgb[2];
          }
        }
        s_h[(0 * R + r) * kTileW + c] = a0;
        s_h[(1 * R + r) * kTileW + c] = a1;
        s_h[(2 * R + r) * kTileW + c] = a2;
      }
    }
    block_sync();
    // 3. vertical pass: every output pixel adds the chunk rows its y taps cover
    for (int orow = warp; orow < th; orow += nw) {
      const int oy = oy0 + orow;
      const int n = p.ycount[oy], first = p.yfirst[oy];
      const int j0 = maxi(sy0 - first, 0), j1 = mini(sy0 + rows - first, n);
      if (j0 >= j1) continue;
      const float* w = p.yw + (long long)oy * p.ky;
      for (int c = lane; c < tw; c += nl) {
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
    }
    block_sync();
  }
  // 4. back to the 0..255 scale, normalise, channel order, layout, padding
  store_tile(p, s_acc, b, ox0, oy0, tw, th, warp, nw, lane, nl);
}

#if defined(__CUDACC__)
template <typename T, int Kind, bool kStaged, bool kClampSrc>
__global__ void __launch_bounds__(kThreads) preprocess_kernel(KernelParams p) {
  extern __shared__ float smem[];
  preprocess_block<T, Kind, kStaged, kClampSrc>(p, blockIdx.x, blockIdx.y, blockIdx.z,
                                                threadIdx.x >> 5, blockDim.x >> 5,
                                                threadIdx.x & 31, 32, smem);
}
#endif

}  // namespace cuda
}  // namespace engine
