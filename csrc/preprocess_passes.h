// preprocess_passes.h - internal to the fused preprocessing op (preprocess_cpu.cpp): what the
// clamp="output" path (preprocess_cpu.cpp) and the clamp="source" path
// (preprocess_clamp_source.cpp) share. Tap tables, per-thread buffers, and the passes of one
// output row: vertical and horizontal resampling, colour conversion + normalisation, stores
// (defined in preprocess_passes.cpp). Never included by device code (see simd.h).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/preprocess.h"
#include "simd.h"

namespace engine_ops {
namespace detail {

using namespace engine;

// Tap table of one plane along one axis. Output samples o in [lo, hi) read the resized image;
// all samples carry exactly K taps starting at first[o - lo] (K = min(max taps, plane size);
// see normalise_taps) so the inner loops have a fixed trip count and never read outside the plane.
struct TapTable {
  // key
  int filter, in_luma, resized, out, offset, sub, plane_in;
  // data
  int lo = 0, hi = 0, K = 1;
  int src_lo = 0, src_hi = 0;  // union of the source ranges of all samples
  std::vector<int> first;
  std::vector<float> w;
  int KP = 0;             // K rounded up to 8 or 16 (0: no padded copy, K > 16)
  std::vector<float> wp;  // weights padded to KP taps (zeros), for the dot-product pass
  // inverse index: the samples o - lo whose window holds source s are [inv_lo, inv_hi)[s - src_lo]
  std::vector<int> inv_lo, inv_hi;
  // taps [nz_lo, nz_hi)[o - lo] of sample o: those between its first and last non-zero weight
  // (the windows are wider than most filters' support: 10 taps hold 8 or 9 at a 4.2x downscale)
  std::vector<int> nz_lo, nz_hi;

  bool same(int f, int il, int r, int o, int off, int s, int pin) const {
    return f == filter && il == in_luma && r == resized && o == out && off == offset && s == sub &&
           pin == plane_in;
  }
};

void build_table(TapTable& t);

struct Prefetch;  // below

struct FrameWork {
  const FrameDesc* frame;
  const TapTable* ty[3];
  const TapTable* tx[3];
};

// [*k, *kend): the taps of w[0..K) between the first and last non-zero weight (zero weights
// come from windows shifted to stay inside the plane). False when every weight is zero.
ENGINE_ALWAYS_INLINE bool nonzero_taps(const float* w, int K, int* k, int* kend) {
  int a = 0;
  while (a < K && w[a] == 0.0f) ++a;
  int b = K;
  while (b > a && w[b - 1] == 0.0f) --b;
  *k = a;
  *kend = b;
  return a < b;
}

#if ENGINE_HAVE_AVX2_KERNELS
// 8 samples -> 8 floats (the AVX2 kernels of both paths).
ENGINE_AVX2_TARGET inline __m256 cvt8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ENGINE_AVX2_TARGET inline __m256 cvt8(const uint16_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#endif

// The hand-written AVX2 kernels are used (preprocess_passes.cpp; ENGINE_DISABLE_AVX2=1: never),
// and the AVX-512 ones where they exist (ENGINE_DISABLE_AVX512=1: never; needs g_use_avx2).
extern const bool g_use_avx2;
extern const bool g_use_avx512;

// ---- vertical pass: tmp[i] = sum_k w[k] * row_{first+k}[i], i < n (preprocess_passes.cpp) ----
// bps: bytes per sample of the rows (1: uint8, 2: uint16)
void vpass(int bps, const unsigned char* base, long long stride, int K, const float* w, int n,
           float* tmp);

#if ENGINE_HAVE_AVX2_KERNELS
// Two consecutive output rows in one sweep over their union tap window (T: uint8_t, uint16_t).
template <typename T>
ENGINE_AVX2_TARGET void vpass2_avx2(const unsigned char* base, long long stride, int nr,
                                    const float* wa, const float* wb, int n, float* ta,
                                    float* tb, const Prefetch& pf);
#endif

// ---- horizontal pass: dst[o * NC + c] = sum_j w[o, j] * tmp[(first[o] - src_lo + j) * NC + c] ----
// NC = 1, 2, 3 channels (SIMD via target clones).
void hpass1(const float* tmp, const TapTable& t, float* dst);
void hpass2(const float* tmp, const TapTable& t, float* dst);
void hpass3(const float* tmp, const TapTable& t, float* dst);

// ---- colour conversion + clamp + normalise into planar float rows rgb[c][n] (output order) ----
void convert_yuv(const float* y, const float* cb, const float* cr, int cstride, int n,
                 const YuvToRgb& m, const Normalize& nm, bool bgr_out, float* r0, float* r1,
                 float* r2);
// interleaved RGB24 / BGR24 rows
void convert_rgb(const float* src, bool src_bgr, int n, const Normalize& nm, bool bgr_out,
                 float* r0, float* r1, float* r2);
// planar R, G, B rows
void convert_rgb_planar(const float* const s[3], int n, const Normalize& nm, bool bgr_out,
                        float* r0, float* r1, float* r2);

// ---- stores: row y of image b, x in [x_lo, x_hi) from rgb[c][x - x_lo], the rest padding ----
void store_row_f32(void* out, const PreprocessArgs& a, int b, int y, const float* const rgb[3],
                   int x_lo, int x_hi);
void store_row_f16(void* out, const PreprocessArgs& a, int b, int y, const float* const rgb[3],
                   int x_lo, int x_hi);

template <typename O>
void store_row(void* out, const PreprocessArgs& a, int b, int y, const float* const rgb[3],
               int x_lo, int x_hi) {
  if (sizeof(O) == 2) store_row_f16(out, a, b, y, rgb, x_lo, x_hi);
  else store_row_f32(out, a, b, y, rgb, x_lo, x_hi);
}

void store_pad_row(void* out, const PreprocessArgs& a, int b, int y);

// Source rows are ~1-2 KB segments one frame row apart, each in its own page, so hardware
// prefetchers ramp up late: the loops request rows ahead of use. Always inlined: GCC takes a
// function whose only effect is __builtin_prefetch for pure and drops the calls to it.
ENGINE_ALWAYS_INLINE void prefetch_lines(const PlaneDesc& pl, int row, long long c0, long long c1) {
#if defined(__GNUC__)
  const char* p = static_cast<const char*>(pl.data) + (long long)row * pl.row_stride;
  for (long long c = c0; c < c1; c += 64) __builtin_prefetch(p + c, 0, 3);
#else
  (void)pl; (void)row; (void)c0; (void)c1;
#endif
}

// Rows the next output rows will read first, asked for a few lines at a time while the current
// ones sweep the same columns (columns(i, n): the bytes of columns [i, i + n) of every row). A
// frame not in the cache is otherwise read as demand misses: the vertical passes walk ~16-32
// columns down ~10-30 rows at a time, one line of each row, and whole rows asked for at once
// exceed the outstanding misses a core tracks. Two groups of rows, each with its bytes per column
// (num / den: luma 1 or 2; chroma channels x bytes / sub_x).
struct Prefetch {
  std::vector<const char*>& rows;  // group a, then group b
  int na = 0;
  int a_num = 1, a_den = 1, b_num = 1, b_den = 1;

  ENGINE_ALWAYS_INLINE void columns(int i, int n) const {
    const int nr = (int)rows.size();
    lines(0, na, i * a_num / a_den, (i + n) * a_num / a_den);
    lines(na, nr, i * b_num / b_den, (i + n) * b_num / b_den);
  }

 private:
  ENGINE_ALWAYS_INLINE void lines(int k0, int k1, int c0, int c1) const {
    for (int k = k0; k < k1; ++k)
      for (int off = c0; off < c1; off += 64) __builtin_prefetch(rows[k] + off, 0, 3);
  }
};

struct ThreadBuffers {
  std::vector<float> vtmp[3];
  std::vector<float> vtmp2[3];  // second row of a paired vertical pass
  std::vector<float> hrow[3];
  std::vector<float> rgb;
  // clamp="source" (Note [clamp before resampling]): converted source rows, a ring of K slots
  std::vector<int> slot_row;       // source row held by each slot (-1: none)
  std::vector<float> ring;         // [slot][3][stride] clamped RGB
  std::vector<float> tf;           // chroma terms of one chroma row on the luma grid [3][..]
  // clamp="source" in registers (Note [converted in registers])
  std::vector<const float*> trow;  // chroma terms of each row of a band's window
  std::vector<float> wband;        // [window row][band row] weights
  std::vector<int> rowcode;        // per window row: pa << 8 | pb, its band rows [pa, pb)
  std::vector<const char*> prefetch;  // rows the next output rows read first (Prefetch)
};

// clamp="source" rows [y0, y1) of image b (preprocess_clamp_source.cpp).
void process_rows_source(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1,
                         void* out, ThreadBuffers& buf);

}  // namespace detail
}  // namespace engine_ops
