// preprocess_clamp_source.cpp - the clamp="source" path of the fused preprocessing op on Y'CbCr
// frames (Note [clamp before resampling]): every source pixel converted to RGB and clamped, then
// the three RGB planes resampled (process_rows_source, called by process_rows in
// preprocess_cpu.cpp). Converted rows go through a ring in memory (SourceRows), or with AVX-512
// stay in registers (process_rows_banded, Note [converted in registers]).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/preprocess.h"
#include "preprocess_passes.h"
#include "simd.h"

namespace engine_ops {
namespace detail {

namespace {

// Row stride (floats) for n floats: whole cache lines, an odd number of them. The passes read
// the same columns of many buffer rows at once (a band reads 3 planes x ~14 chroma rows); rows a
// power of two apart fall in the same few L1 sets and evict each other (at 512 floats, all in
// two sets of 12 ways: 1.15x slower at 1080p -> 224 on Zen 4).
int odd_lines(int n) {
  const int lines = (n + 15) / 16;
  return (lines | 1) * 16;
}

// ---- clamp="source": convert and clamp every source pixel, then resample RGB ----
// Chroma terms t[c][k * sub + r] = cb_gain[c] cb[k * cs] + cr_gain[c] cr[k * cs] +
// bias[c] once per chroma sample, replicated sub times onto the luma grid; then per luma row
// rgb[c][i] = clamp(y_gain y[i] + t[c][i]); vertical pass d[c][i] = sum_j w[j] rows[j][c][i].
template <typename T>
ENGINE_ALWAYS_INLINE void chroma_terms_impl(const T* __restrict cb, const T* __restrict cr, int cs,
                                            int n, const YuvToRgb& m, int sub, float* const t[3]) {
  for (int c = 0; c < 3; ++c) {
    float* __restrict d = t[c];
    for (int k = 0; k < n; ++k) {
      const float v = m.cb_gain[c] * (float)cb[k * cs] + (m.cr_gain[c] * (float)cr[k * cs] + m.bias[c]);
      for (int r = 0; r < sub; ++r) d[k * sub + r] = v;
    }
  }
}
template <typename T>
ENGINE_ALWAYS_INLINE void convert_row_impl(const T* __restrict y, int n, float yg,
                                           const float* const t[3], float* const rgb[3]) {
  for (int c = 0; c < 3; ++c) {
    const float* __restrict tc = t[c];
    float* __restrict d = rgb[c];
    for (int i = 0; i < n; ++i) {
      const float v = yg * (float)y[i] + tc[i];
      d[i] = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
    }
  }
}
// (taps outer, columns inner: the loops the compiler vectorises; the same sum order as the
// register accumulation of vpass_rgb_avx2)
ENGINE_ALWAYS_INLINE void vpass_rgb_impl(const float* const* rows, const float* w, int nk,
                                         long long cstride, int i0, int n, float* const d[3]) {
  for (int c = 0; c < 3; ++c) {
    float* __restrict dc = d[c];
    const float* __restrict r0 = rows[0] + c * cstride;
    for (int i = i0; i < n; ++i) dc[i] = w[0] * r0[i];
    for (int j = 1; j < nk; ++j) {
      const float* __restrict r = rows[j] + c * cstride;
      const float wj = w[j];
      for (int i = i0; i < n; ++i) dc[i] += wj * r[i];
    }
  }
}

#if ENGINE_HAVE_AVX2_KERNELS
// (pointers copied into locals: stores through t[c] or rgb[c] could otherwise alias the pointer
// arrays, and the compiler reloads every pointer on every iteration)
// kRB: R has no Cb term and B no Cr term (every matrix of make_yuv_to_rgb), so their multiplies by
// a zero gain are left out: a third of the FMAs, the same sums (0 * x + s == s).
template <bool kRB, typename T>
ENGINE_AVX2_TARGET void chroma_terms_avx2(const T* cb, const T* cr, int cs, int n, const YuvToRgb& m,
                                          int sub, float* const t[3]) {
  __m256 G[3], H[3], E[3];
  for (int c = 0; c < 3; ++c) {
    G[c] = _mm256_set1_ps(m.cb_gain[c]);
    H[c] = _mm256_set1_ps(m.cr_gain[c]);
    E[c] = _mm256_set1_ps(m.bias[c]);
  }
  float* __restrict d[3] = {t[0], t[1], t[2]};
  // NV12 (8-bit): Cb, Cr bytes of 8 pairs gathered into the two halves of one register
  const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  int k = 0;
  if (cs == 1 || sizeof(T) == 1) {
    for (; k + 8 <= n; k += 8) {
      __m256 u, v;
      if (cs == 1) {
        u = cvt8(cb + k);
        v = cvt8(cr + k);
      } else {
        const __m128i x = _mm_shuffle_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + 2 * k)), split);
        u = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
        v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(x, 8)));
      }
      for (int c = 0; c < 3; ++c) {
        const __m256 x = kRB && c == 0   ? _mm256_fmadd_ps(H[c], v, E[c])
                         : kRB && c == 2 ? _mm256_fmadd_ps(G[c], u, E[c])
                                         : _mm256_fmadd_ps(G[c], u, _mm256_fmadd_ps(H[c], v, E[c]));
        if (sub == 2) {  // in-lane unpack, then the lanes in order
          const __m256 lo = _mm256_unpacklo_ps(x, x), hi = _mm256_unpackhi_ps(x, x);
          _mm256_storeu_ps(d[c] + 2 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
          _mm256_storeu_ps(d[c] + 2 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        } else {
          _mm256_storeu_ps(d[c] + k, x);
        }
      }
    }
  }
  if (k < n) {
    float* tail[3] = {d[0] + k * sub, d[1] + k * sub, d[2] + k * sub};
    chroma_terms_impl(cb + k * cs, cr + k * cs, cs, n - k, m, sub, tail);
  }
}

ENGINE_AVX2_TARGET ENGINE_ALWAYS_INLINE __m256 clamp255(__m256 v) {
  return _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
}

template <typename T>
ENGINE_AVX2_TARGET void convert_row_avx2(const T* y, int n, float yg, const float* const t[3],
                                         float* const rgb[3]) {
  const __m256 g = _mm256_set1_ps(yg);
  const float* __restrict t0 = t[0];
  const float* __restrict t1 = t[1];
  const float* __restrict t2 = t[2];
  float* __restrict d0 = rgb[0];
  float* __restrict d1 = rgb[1];
  float* __restrict d2 = rgb[2];
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = cvt8(y + i), b = cvt8(y + i + 8);
    _mm256_storeu_ps(d0 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t0 + i))));
    _mm256_storeu_ps(d0 + i + 8, clamp255(_mm256_fmadd_ps(b, g, _mm256_loadu_ps(t0 + i + 8))));
    _mm256_storeu_ps(d1 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t1 + i))));
    _mm256_storeu_ps(d1 + i + 8, clamp255(_mm256_fmadd_ps(b, g, _mm256_loadu_ps(t1 + i + 8))));
    _mm256_storeu_ps(d2 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t2 + i))));
    _mm256_storeu_ps(d2 + i + 8, clamp255(_mm256_fmadd_ps(b, g, _mm256_loadu_ps(t2 + i + 8))));
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 a = cvt8(y + i);
    _mm256_storeu_ps(d0 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t0 + i))));
    _mm256_storeu_ps(d1 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t1 + i))));
    _mm256_storeu_ps(d2 + i, clamp255(_mm256_fmadd_ps(a, g, _mm256_loadu_ps(t2 + i))));
  }
  if (i < n) {
    const float* tt[3] = {t0 + i, t1 + i, t2 + i};
    float* rr[3] = {d0 + i, d1 + i, d2 + i};
    convert_row_impl(y + i, n - i, yg, tt, rr);
  }
}

// Columns [0, n): 64 per sweep in registers (8 accumulators), the taps innermost (per tap one
// row pointer and one weight broadcast for eight FMAs), then 8 at a time, then one at a time (in
// this function, so the last columns are FMAs too, as in the AVX-512 path and on the GPU).
ENGINE_AVX2_TARGET void vpass_rgb_avx2(const float* const* rows, const float* w, int nk,
                                       long long cstride, int n, float* const d[3]) {
  int i = 0;
  for (int c = 0; c < 3; ++c) {
    const long long off = c * cstride;
    float* __restrict dc = d[c];
    i = 0;
    for (; i + 64 <= n; i += 64) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
      for (int j = 0; j < nk; ++j) {
        const __m256 wv = _mm256_broadcast_ss(w + j);
        const float* p = rows[j] + off + i;
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 8), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 16), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 24), a3);
        a4 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 32), a4);
        a5 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 40), a5);
        a6 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 48), a6);
        a7 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 56), a7);
      }
      _mm256_storeu_ps(dc + i, a0);
      _mm256_storeu_ps(dc + i + 8, a1);
      _mm256_storeu_ps(dc + i + 16, a2);
      _mm256_storeu_ps(dc + i + 24, a3);
      _mm256_storeu_ps(dc + i + 32, a4);
      _mm256_storeu_ps(dc + i + 40, a5);
      _mm256_storeu_ps(dc + i + 48, a6);
      _mm256_storeu_ps(dc + i + 56, a7);
    }
    for (; i + 8 <= n; i += 8) {
      __m256 a0 = _mm256_setzero_ps();
      for (int j = 0; j < nk; ++j)
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + j), _mm256_loadu_ps(rows[j] + off + i), a0);
      _mm256_storeu_ps(dc + i, a0);
    }
  }
  vpass_rgb_impl(rows, w, nk, cstride, i, n, d);
}

// Horizontal pass of the three planes sharing one tap table, for KP = 8 or 16 padded taps: each
// output is a dot product of KP contiguous samples (zero-padded past the end) with its padded
// weights, 8 outputs reduced together; the sum order of hpass_dot (preprocess_passes.cpp).
template <int KP>
ENGINE_AVX2_TARGET void hpass_planar3_avx2(const float* const src[3], const TapTable& t,
                                           float* const dst[3]) {
  const int o0 = 0, o1 = t.hi - t.lo, origin = t.src_lo;
  const float* __restrict wp = t.wp.data();
  const int* __restrict first = t.first.data();
  for (int c = 0; c < 3; ++c) {
    const float* __restrict s = src[c] - origin;
    float* __restrict d = dst[c] - o0;
    int o = o0;
    for (; o + 8 <= o1; o += 8) {
      __m256 p[8];
      for (int q = 0; q < 8; ++q) {
        const float* x = s + first[o + q];
        const float* w = wp + (size_t)(o + q) * KP;
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(w));
        if (KP == 16) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), _mm256_loadu_ps(w + 8), acc);
        p[q] = acc;
      }
      const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3]));
      const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(p[4], p[5]), _mm256_hadd_ps(p[6], p[7]));
      _mm256_storeu_ps(d + o, _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20),
                                            _mm256_permute2f128_ps(t0, t1, 0x31)));
    }
    for (; o < o1; ++o) {
      const float* x = s + first[o];
      const float* w = wp + (size_t)o * KP;
      float acc = 0.0f;
      for (int j = 0; j < KP; ++j) acc += x[j] * w[j];
      d[o] = acc;
    }
  }
}
#endif

#if ENGINE_HAVE_AVX512_KERNELS
ENGINE_AVX512_TARGET inline __m512 cvt16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
ENGINE_AVX512_TARGET inline __m512 cvt16(const uint16_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}
ENGINE_AVX512_TARGET ENGINE_ALWAYS_INLINE __m512 clamp255_512(__m512 v) {
  return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
}

// Planar chroma (I420, I422, I444): 16 samples a step; NV12 and the rest go to the AVX2 loop.
// kRB as in chroma_terms_avx2.
template <bool kRB, typename T>
ENGINE_AVX512_TARGET void chroma_terms_avx512(const T* cb, const T* cr, int n, const YuvToRgb& m,
                                              int sub, float* const t[3]) {
  __m512 G[3], H[3], E[3];
  for (int c = 0; c < 3; ++c) {
    G[c] = _mm512_set1_ps(m.cb_gain[c]);
    H[c] = _mm512_set1_ps(m.cr_gain[c]);
    E[c] = _mm512_set1_ps(m.bias[c]);
  }
  float* __restrict d[3] = {t[0], t[1], t[2]};
  const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  int k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 u = cvt16(cb + k), v = cvt16(cr + k);
    for (int c = 0; c < 3; ++c) {
      const __m512 x = kRB && c == 0   ? _mm512_fmadd_ps(H[c], v, E[c])
                       : kRB && c == 2 ? _mm512_fmadd_ps(G[c], u, E[c])
                                       : _mm512_fmadd_ps(G[c], u, _mm512_fmadd_ps(H[c], v, E[c]));
      if (sub == 2) {
        _mm512_storeu_ps(d[c] + 2 * k, _mm512_permutexvar_ps(lo, x));
        _mm512_storeu_ps(d[c] + 2 * k + 16, _mm512_permutexvar_ps(hi, x));
      } else {
        _mm512_storeu_ps(d[c] + k, x);
      }
    }
  }
  if (k < n) {
    float* tail[3] = {d[0] + k * sub, d[1] + k * sub, d[2] + k * sub};
    chroma_terms_avx2<kRB>(cb + k, cr + k, 1, n - k, m, sub, tail);
  }
}

#endif

template <typename T>
void chroma_terms(const T* cb, const T* cr, int cs, int n, const YuvToRgb& m, int sub,
                  float* const t[3]) {
  [[maybe_unused]] const bool rb = m.cb_gain[0] == 0.0f && m.cr_gain[2] == 0.0f;  // SIMD only
#if ENGINE_HAVE_AVX512_KERNELS
  if (g_use_avx512 && cs == 1) {
    if (rb) return chroma_terms_avx512<true>(cb, cr, n, m, sub, t);
    return chroma_terms_avx512<false>(cb, cr, n, m, sub, t);
  }
#endif
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) {
    if (rb) return chroma_terms_avx2<true>(cb, cr, cs, n, m, sub, t);
    return chroma_terms_avx2<false>(cb, cr, cs, n, m, sub, t);
  }
#endif
  chroma_terms_impl(cb, cr, cs, n, m, sub, t);
}
template <typename T>
void convert_row(const T* y, int n, float yg, const float* const t[3], float* const rgb[3]) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return convert_row_avx2(y, n, yg, t, rgb);
#endif
  convert_row_impl(y, n, yg, t, rgb);
}
void vpass_rgb(const float* const* rows, const float* w, int nk, long long cstride, int n,
               float* const d[3]) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return vpass_rgb_avx2(rows, w, nk, cstride, n, d);
#endif
  vpass_rgb_impl(rows, w, nk, cstride, 0, n, d);
}

// src[c][0..ns) -> dst[c][0..n) for the three planes, src rows holding KP zeros past their end.
void hpass_planar3(const float* const src[3], const TapTable& t, float* const dst[3]) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2 && t.KP == 16) return hpass_planar3_avx2<16>(src, t, dst);
  if (g_use_avx2 && t.KP == 8) return hpass_planar3_avx2<8>(src, t, dst);
#endif
  for (int c = 0; c < 3; ++c) hpass1(src[c], t, dst[c]);
}

// Chroma terms of chroma row cr, columns [clo, clo + nc), each replicated sub times into t[c].
void chroma_row_terms(const FrameDesc& f, const YuvToRgb& m, int cr, int clo, int nc, int sub,
                      float* const t[3]) {
  const bool nv12 = f.format == kFmtNV12;
  const PlaneDesc& pu = f.planes[1];
  const PlaneDesc& pv = f.planes[nv12 ? 1 : 2];
  const int cs = nv12 ? 2 : 1;
  const int bps = f.bit_depth > 8 ? 2 : 1;
  const unsigned char* u = static_cast<const unsigned char*>(pu.data) + (long long)cr * pu.row_stride +
                           (long long)clo * cs * bps;
  const unsigned char* v = static_cast<const unsigned char*>(pv.data) + (long long)cr * pv.row_stride +
                           ((long long)clo * cs + (nv12 ? 1 : 0)) * bps;
  if (bps == 1)
    chroma_terms(u, v, cs, nc, m, sub, t);
  else
    chroma_terms(reinterpret_cast<const uint16_t*>(u), reinterpret_cast<const uint16_t*>(v), cs, nc, m,
                 sub, t);
}

constexpr int kPrefetchSourceRows = 4;  // rows ahead of the one being converted

// Converted source rows of one frame for the luma columns [tx.src_lo, tx.src_hi), each converted
// once per row block into a ring of K slots (every output row reads a window of <= K rows).
class SourceRows {
 public:
  SourceRows(const FrameDesc& f, const TapTable& ty, const TapTable& tx, const YuvToRgb& m,
             ThreadBuffers& buf)
      : f_(f), m_(m), buf_(buf), K_(ty.K), lo_(tx.src_lo), n_(tx.src_hi - tx.src_lo) {
    const PlaneDesc& c = f.planes[1];
    sx_ = c.sub_x;
    sy_ = c.sub_y;
    clo_ = lo_ / sx_;
    nc_ = n_ > 0 ? (tx.src_hi - 1) / sx_ - clo_ + 1 : 0;
    stride_ = odd_lines(std::max(n_, 1));
    grid_ = (size_t)nc_ * sx_ + 8;  // chroma replicated onto the luma grid
    buf.slot_row.assign(K_, -1);
    if (buf.ring.size() < (size_t)K_ * 3 * stride_) buf.ring.resize((size_t)K_ * 3 * stride_);
    if (buf.tf.size() < 3 * grid_) buf.tf.resize(3 * grid_);
  }

  int stride() const { return stride_; }

  // Source row r converted and clamped: R at the returned pointer, G and B at + stride(), + 2 stride().
  const float* row(int r) {
    const int s = r % K_;
    if (buf_.slot_row[s] != r) {
      convert(r, s);
      buf_.slot_row[s] = r;
    }
    return buf_.ring.data() + (size_t)s * 3 * stride_;
  }

 private:
  void convert(int r, int s) {
    prefetch(r + kPrefetchSourceRows);
    const int cr = r / sy_;
    if (cr != t_row_) load_chroma(cr);
    t_row_ = cr;
    const int skip = lo_ - clo_ * sx_;  // 0, or 1 when the first luma column is odd
    const float* t[3];
    for (int c = 0; c < 3; ++c) t[c] = buf_.tf.data() + c * grid_ + skip;
    float* d = buf_.ring.data() + (size_t)s * 3 * stride_;
    float* rgb[3] = {d, d + stride_, d + 2 * stride_};
    const PlaneDesc& py = f_.planes[0];
    const unsigned char* yrow = static_cast<const unsigned char*>(py.data) + (long long)r * py.row_stride;
    if (f_.bit_depth > 8)
      convert_row(reinterpret_cast<const uint16_t*>(yrow) + lo_, n_, m_.y_gain, t, rgb);
    else
      convert_row(reinterpret_cast<const uint8_t*>(yrow) + lo_, n_, m_.y_gain, t, rgb);
  }

  // Source rows are short segments a frame row apart, each in its own page, so the hardware
  // prefetchers ramp up late: request row r (luma, and its chroma when it starts a chroma row).
  ENGINE_ALWAYS_INLINE void prefetch(int r) const {
    if (r >= f_.height) return;
    const int bps = f_.bit_depth > 8 ? 2 : 1;
    prefetch_lines(f_.planes[0], r, (long long)lo_ * bps, (long long)(lo_ + n_) * bps);
    if (r % sy_ == 0)
      for (int p = 1; p < f_.num_planes; ++p) {
        const int cs = f_.planes[p].channels;
        prefetch_lines(f_.planes[p], r / sy_, (long long)clo_ * cs * bps,
                       (long long)(clo_ + nc_) * cs * bps);
      }
  }

  // Chroma terms of chroma row cr (columns [clo_, clo_ + nc_)) on the luma grid.
  void load_chroma(int cr) {
    float* t[3] = {buf_.tf.data(), buf_.tf.data() + grid_, buf_.tf.data() + 2 * grid_};
    chroma_row_terms(f_, m_, cr, clo_, nc_, sx_, t);
  }

  const FrameDesc& f_;
  const YuvToRgb m_;
  ThreadBuffers& buf_;
  const int K_, lo_, n_;
  int stride_ = 1, sx_ = 1, sy_ = 1, clo_ = 0, nc_ = 0, t_row_ = -1;
  size_t grid_ = 0;
};

#if ENGINE_HAVE_AVX512_KERNELS
// Note [converted in registers]
// The ring path (SourceRows) stores every converted source row, 3 planes of floats (11 KB per
// row at 1080p -> 224), and reads each back for the ~2.4 output rows whose taps hold it: a ring
// of K = 10 rows (115 KB) does not fit L1, and that traffic between L1 and L2, not the arithmetic,
// set its speed. With AVX-512 (32 vector registers) a band of kBand output rows instead sweeps the
// union of its tap windows one chunk of 16 columns at a time: each source row of the window is
// read, converted and clamped in registers and added into the band's kBand x 3 accumulators,
// which are stored once per chunk. No converted row goes to memory; rows shared by two bands are
// converted twice (1.3x the conversions at 1080p -> 224). The 15 sums of a column (5 rows x 3
// planes) fill the lanes of one vector once transposed, so the horizontal pass runs on all of
// them at once with broadcast weights (the dot products of the ring path, 16 padded taps and a
// reduction per output, cost a fifth of the frame's time). The vertical sums add the ring path's
// products in its order; the horizontal ones add in tap order instead of the dot product's tree,
// so the two paths agree to float32 rounding (tests/kernels/test_clamp.py). Chroma terms are
// computed once per chroma row at chroma resolution and widened in registers.
constexpr int kBand = 5;  // output rows per band: 15 accumulators, the lanes of one column

// Chroma terms of chroma rows at chroma resolution, one slot per row of a band's window.
struct ChromaRows {
  const FrameDesc& f;
  const YuvToRgb& m;
  ThreadBuffers& buf;
  int clo, nc, stride, slots;

  const float* row(int cr) {
    const int s = cr % slots;
    float* t = buf.tf.data() + (size_t)s * 3 * stride;
    if (buf.slot_row[s] != cr) {
      buf.slot_row[s] = cr;
      float* d[3] = {t, t + stride, t + 2 * stride};
      chroma_row_terms(f, m, cr, clo, nc, 1, d);
    }
    return t;
  }
};

// r[k][l] -> r[l][k] for a 16 x 16 block of floats (64 shuffles).
ENGINE_AVX512_TARGET ENGINE_ALWAYS_INLINE void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int k = 0; k < 8; ++k) {  // lane L of t[2k]: r2k[4L], r2k+1[4L], r2k[4L+1], r2k+1[4L+1]
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // lane L of u[4k + j]: rows 4k..4k+3 of column 4L + j
    const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * k + 2]), d = _mm512_castps_pd(t[4 * k + 3]);
    u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {  // column 4L + j: lane L of u[j], u[4 + j], u[8 + j], u[12 + j]
    const __m512 a = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
    const __m512 b = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
    const __m512 c = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 d = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(a, b, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(a, b, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(c, d, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(c, d, 0xDD);
  }
}

// One band: for each column x < ns (frame column lo + x), lane p * 3 + c of vt + x * 16 = sum over
// the window rows r of wb[(r - r0) * kBand + p] * clamp(y_gain Y[r][x] + T_c[r / sy][x]); lane 15
// is 0. trow[r - r0]: the chroma terms of row r (3 planes tstride apart).
template <typename T>
ENGINE_AVX512_TARGET void band_sweep_avx512(const FrameDesc& f, const YuvToRgb& m,
                                            const float* const* trow, int tstride, int lo, int ns,
                                            int r0, int r1, const float* wb, const int* codes,
                                            const Prefetch& pf, float* vt) {
  const PlaneDesc& py = f.planes[0];
  const long long ystride = py.row_stride;
  const int sx = f.planes[1].sub_x;
  const unsigned char* ybase = static_cast<const unsigned char*>(py.data) + (long long)lo * sizeof(T);
  const __m512 g = _mm512_set1_ps(m.y_gain);
  const int odd = lo & 1;
  // luma lane l of a chunk takes chroma (l + odd) / 2 of the chunk's first (sub_x = 2)
  const __m512i dup = odd ? _mm512_setr_epi32(0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8)
                          : _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const int nr = r1 - r0;
  for (int i = 0; i < ns; i += 16) {
    if ((i & 63) == 0) pf.columns(i, 64);
    const __mmask16 k = ns - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (ns - i)) - 1);
    __m512 acc[kBand][3];
    for (int p = 0; p < kBand; ++p)
      for (int c = 0; c < 3; ++c) acc[p][c] = _mm512_setzero_ps();
    const int ci = sx == 2 ? i / 2 : i;
    const float* tprev = nullptr;
    __m512 t0 = _mm512_setzero_ps(), t1 = t0, t2 = t0;
    const unsigned char* yrow = ybase + (long long)r0 * ystride + (long long)i * sizeof(T);
    for (int r = 0; r < nr; ++r, yrow += ystride) {
      const T* yr = reinterpret_cast<const T*>(yrow);
      __m512 Y;
      if (sizeof(T) == 1)
        Y = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, yr)));
      else
        Y = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, yr)));
      const float* t = trow[r];
      if (t != tprev) {
        tprev = t;
        if (sx == 2) {
          t0 = _mm512_permutexvar_ps(dup, _mm512_loadu_ps(t + ci));
          t1 = _mm512_permutexvar_ps(dup, _mm512_loadu_ps(t + tstride + ci));
          t2 = _mm512_permutexvar_ps(dup, _mm512_loadu_ps(t + 2 * tstride + ci));
        } else {
          t0 = _mm512_loadu_ps(t + ci);
          t1 = _mm512_loadu_ps(t + tstride + ci);
          t2 = _mm512_loadu_ps(t + 2 * tstride + ci);
        }
      }
      const __m512 v0 = clamp255_512(_mm512_fmadd_ps(Y, g, t0));
      const __m512 v1 = clamp255_512(_mm512_fmadd_ps(Y, g, t1));
      const __m512 v2 = clamp255_512(_mm512_fmadd_ps(Y, g, t2));
      const float* w = wb + r * kBand;
      // band rows [pa, pb) whose windows hold row r: one jump per row, the same every chunk
#define ENGINE_ACC(p)                                         \
  {                                                           \
    const __m512 wv = _mm512_set1_ps(w[p]);                   \
    acc[p][0] = _mm512_fmadd_ps(wv, v0, acc[p][0]);           \
    acc[p][1] = _mm512_fmadd_ps(wv, v1, acc[p][1]);           \
    acc[p][2] = _mm512_fmadd_ps(wv, v2, acc[p][2]);           \
  }
      const int pa = codes[r] >> 8, pb = codes[r] & 255;
#define ENGINE_STEP(p)            \
  case p:                         \
    if (p >= pb) break;           \
    ENGINE_ACC(p)                 \
    [[fallthrough]];
      static_assert(kBand == 5, "one ENGINE_STEP per band row");
      switch (pa) {
        ENGINE_STEP(0) ENGINE_STEP(1) ENGINE_STEP(2) ENGINE_STEP(3) ENGINE_STEP(4)
        default: break;
      }
#undef ENGINE_STEP
#undef ENGINE_ACC
    }
    // column-major: the band's 15 sums of column i + x at vt + (i + x) * 16
    __m512 col[16];
    for (int p = 0; p < kBand; ++p)
      for (int c = 0; c < 3; ++c) col[p * 3 + c] = acc[p][c];
    col[15] = _mm512_setzero_ps();
    transpose16(col);
    for (int x = 0; x < 16; ++x) _mm512_storeu_ps(vt + (size_t)(i + x) * 16, col[x]);
  }
}

// Horizontal pass of all the band's rows at once on the column-major sums (vt + s * 16: source
// column lo + s), then clamp and normalisation (convert_rgb_planar's arithmetic, per lane):
// out + o * 16 = clamp(sum_j w[o, j] * column first[o] + j) * gain + bias, FMAs in tap order
// (the non-zero taps only: adding 0 * x changes no sum).
ENGINE_AVX512_TARGET void hpass_columns_avx512(const float* vt, const TapTable& t, const float* gain,
                                               const float* bias, float* out) {
  const int n = t.hi - t.lo, K = t.K;
  const __m512 g = _mm512_loadu_ps(gain), nb = _mm512_loadu_ps(bias);
  for (int o = 0; o < n; ++o) {
    const float* x = vt + (size_t)(t.first[o] - t.src_lo) * 16;
    const float* w = &t.w[(size_t)o * K];
    __m512 acc = _mm512_setzero_ps();
    for (int j = t.nz_lo[o]; j < t.nz_hi[o]; ++j)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), _mm512_loadu_ps(x + j * 16), acc);
    _mm512_storeu_ps(out + (size_t)o * 16, _mm512_fmadd_ps(clamp255_512(acc), g, nb));
  }
}

// Column-major outputs (out + o * 16, o < n, zero up to a multiple of 16) back to rows:
// rows + l * rstride holds lane l of outputs 0..n.
ENGINE_AVX512_TARGET void columns_to_rows_avx512(const float* out, int n, float* rows, int rstride) {
  for (int o = 0; o < n; o += 16) {
    __m512 v[16];
    for (int q = 0; q < 16; ++q) v[q] = _mm512_loadu_ps(out + (size_t)(o + q) * 16);
    transpose16(v);
    for (int l = 0; l < 16; ++l) _mm512_storeu_ps(rows + (size_t)l * rstride + o, v[l]);
  }
}

// process_rows_source in registers (Note [converted in registers]), bands of kBand output rows.
void process_rows_banded(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1,
                         void* out, ThreadBuffers& buf) {
  const FrameDesc& f = *fw.frame;
  const TapTable& ty = *fw.ty[0];
  const TapTable& tx = *fw.tx[0];
  const int nx = tx.hi - tx.lo, K = ty.K;
  const int ry0 = std::max(y0, ty.lo), ry1 = std::min(y1, ty.hi);
  for (int y = y0; y < y1; ++y)
    if (y < ry0 || y >= ry1 || nx <= 0) store_pad_row(out, a, b, y);
  if (nx <= 0 || ry0 >= ry1) return;
  const YuvToRgb m = make_yuv_to_rgb(f.matrix, f.full_range, f.bit_depth);
  const int lo = tx.src_lo, ns = tx.src_hi - tx.src_lo;
  const int sx = f.planes[1].sub_x, sy = f.planes[1].sub_y;

  // the longest window of a band, for the chroma ring and the tables
  int max_rows = 0;
  for (int y = ry0; y < ry1; y += kBand) {
    const int iy = y - ty.lo, np = std::min(kBand, ry1 - y);
    max_rows = std::max(max_rows, ty.first[iy + np - 1] + K - ty.first[iy]);
  }
  ChromaRows chroma{f, m, buf, lo / sx, 0, 0, 0};
  chroma.nc = (lo + ns - 1) / sx - chroma.clo + 1;
  chroma.stride = odd_lines(chroma.nc + 32);  // + the lanes a last chunk reads past the end
  chroma.slots = (max_rows + sy - 1) / sy + 1;
  buf.slot_row.assign(chroma.slots, -1);
  if (buf.tf.size() < (size_t)chroma.slots * 3 * chroma.stride)
    buf.tf.resize((size_t)chroma.slots * 3 * chroma.stride);
  if (buf.trow.size() < (size_t)max_rows) buf.trow.resize(max_rows);
  if (buf.wband.size() < (size_t)max_rows * kBand) buf.wband.resize((size_t)max_rows * kBand);
  // column-major sums of the band (16 floats per source column), the outputs likewise, and the
  // outputs back as 15 rows
  const int ncol = (ns + 15) / 16 * 16, nout = (nx + 15) / 16 * 16;
  if (buf.vtmp[0].size() < (size_t)ncol * 16) buf.vtmp[0].resize((size_t)ncol * 16);
  if (buf.vtmp[1].size() < (size_t)nout * 16) buf.vtmp[1].resize((size_t)nout * 16);
  if (buf.vtmp[2].size() < (size_t)nout * 16) buf.vtmp[2].resize((size_t)nout * 16);
  float* vt = buf.vtmp[0].data();
  float* ot = buf.vtmp[1].data();
  float* orow = buf.vtmp[2].data();
  std::fill(ot + (size_t)nx * 16, ot + (size_t)nout * 16, 0.0f);
  // lane p * 3 + c (band row p, colour c) feeds output channel c, or 2 - c for BGR output
  float lane_gain[16] = {}, lane_bias[16] = {};
  for (int l = 0; l < 3 * kBand; ++l) {
    const int oc = a.bgr_out ? 2 - l % 3 : l % 3;
    lane_gain[l] = a.norm.gain[oc];
    lane_bias[l] = a.norm.bias[oc];
  }
  float* wb = buf.wband.data();
  if (buf.rowcode.size() < (size_t)max_rows) buf.rowcode.resize(max_rows);
  int* codes = buf.rowcode.data();
  const int bps = f.bit_depth > 8 ? 2 : 1;
  Prefetch pf{buf.prefetch};
  pf.a_num = bps;  // luma rows
  pf.b_num = f.planes[1].channels * bps;  // chroma rows
  pf.b_den = sx;

  for (int y = ry0; y < ry1; y += kBand) {
    const int iy = y - ty.lo, np = std::min(kBand, ry1 - y);
    const int r0 = ty.first[iy], r1 = ty.first[iy + np - 1] + K;  // first[] is non-decreasing
    for (int r = r0; r < r1; ++r) {
      buf.trow[r - r0] = chroma.row(r / sy);
      int pa = kBand, pb = 0;  // band rows with a non-zero weight for row r (a run: see above)
      for (int p = 0; p < kBand; ++p) {
        const int j = p < np ? r - ty.first[iy + p] : -1;
        const float w = (j >= 0 && j < K) ? ty.w[(size_t)(iy + p) * K + j] : 0.0f;
        wb[(r - r0) * kBand + p] = w;
        if (w != 0.0f) pa = std::min(pa, p), pb = p + 1;
      }
      codes[r - r0] = pa < pb ? (pa << 8 | pb) : (kBand << 8);
    }
    // rows [r1, next r1) of the next band's window
    pf.rows.clear();
    pf.na = 0;
    if (y + kBand < ry1) {
      const int next_r1 = ty.first[iy + std::min(2 * kBand, ry1 - y) - 1] + K;
      const int from = std::max(r1, ty.first[iy + kBand]);
      for (int r = from; r < next_r1; ++r)
        pf.rows.push_back(static_cast<const char*>(f.planes[0].data) + (long long)r * f.planes[0].row_stride +
                          (long long)lo * bps);
      pf.na = (int)pf.rows.size();
      for (int r = from; r < next_r1; ++r)
        if (r % sy == 0 || r == from)
          for (int q = 1; q < f.num_planes; ++q)
            pf.rows.push_back(static_cast<const char*>(f.planes[q].data) +
                              (long long)(r / sy) * f.planes[q].row_stride +
                              (long long)chroma.clo * f.planes[q].channels * bps);
    }
    if (f.bit_depth > 8)
      band_sweep_avx512<uint16_t>(f, m, buf.trow.data(), chroma.stride, lo, ns, r0, r1, wb, codes, pf, vt);
    else
      band_sweep_avx512<uint8_t>(f, m, buf.trow.data(), chroma.stride, lo, ns, r0, r1, wb, codes, pf, vt);
    hpass_columns_avx512(vt, tx, lane_gain, lane_bias, ot);
    columns_to_rows_avx512(ot, nx, orow, nout);
    for (int p = 0; p < np; ++p) {
      const float* hr[3];  // output channel order
      for (int oc = 0; oc < 3; ++oc) hr[oc] = orow + (size_t)(p * 3 + (a.bgr_out ? 2 - oc : oc)) * nout;
      if (a.fp16) store_row<uint16_t>(out, a, b, y + p, hr, tx.lo, tx.hi);
      else store_row<float>(out, a, b, y + p, hr, tx.lo, tx.hi);
    }
  }
}
#endif

}  // namespace

// process_rows for clamp="source" Y'CbCr frames (Note [clamp before resampling]): per output row
// the vertical pass over converted, clamped source rows (all three channels with the luma taps),
// then the horizontal pass per channel, normalisation and store.
void process_rows_source(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1,
                         void* out, ThreadBuffers& buf) {
#if ENGINE_HAVE_AVX512_KERNELS
  if (g_use_avx512) return process_rows_banded(fw, a, b, y0, y1, out, buf);
#endif
  const FrameDesc& f = *fw.frame;
  const TapTable& ty = *fw.ty[0];
  const TapTable& tx = *fw.tx[0];
  const int nx = tx.hi - tx.lo, ns = tx.src_hi - tx.src_lo, K = ty.K;
  SourceRows src(f, ty, tx, make_yuv_to_rgb(f.matrix, f.full_range, f.bit_depth), buf);
  const int stride = src.stride();
  for (int c = 0; c < 3; ++c) {
    if (buf.vtmp[c].size() < (size_t)stride + 16) buf.vtmp[c].resize((size_t)stride + 16);
    if (buf.hrow[c].size() < (size_t)std::max(nx, 1)) buf.hrow[c].resize((size_t)std::max(nx, 1));
  }
  if (buf.rgb.size() < (size_t)std::max(nx, 1) * 3) buf.rgb.resize((size_t)std::max(nx, 1) * 3);
  float* vt[3] = {buf.vtmp[0].data(), buf.vtmp[1].data(), buf.vtmp[2].data()};
  float* hrw[3] = {buf.hrow[0].data(), buf.hrow[1].data(), buf.hrow[2].data()};
  const float* hr[3] = {hrw[0], hrw[1], hrw[2]};
  const int st = std::max(nx, 1);
  float* rgb[3] = {buf.rgb.data(), buf.rgb.data() + st, buf.rgb.data() + 2 * st};
  const float* crgb[3] = {rgb[0], rgb[1], rgb[2]};
  std::vector<const float*> rows(K);

  for (int y = y0; y < y1; ++y) {
    if (y < ty.lo || y >= ty.hi || nx <= 0) {
      store_pad_row(out, a, b, y);
      continue;
    }
    const int iy = y - ty.lo;
    const float* w = &ty.w[(size_t)iy * K];
    const int k = ty.nz_lo[iy], kend = ty.nz_hi[iy];
    if (k < kend) {
      for (int j = k; j < kend; ++j) rows[j - k] = src.row(ty.first[iy] + j);
      vpass_rgb(rows.data(), w + k, kend - k, stride, ns, vt);
    } else {
      for (int c = 0; c < 3; ++c) std::fill(vt[c], vt[c] + ns, 0.0f);
    }
    for (int c = 0; c < 3; ++c)
      std::fill(vt[c] + ns, vt[c] + ns + 16, 0.0f);  // the dot pass reads up to KP past the end
    hpass_planar3(vt, tx, hrw);
    convert_rgb_planar(hr, nx, a.norm, a.bgr_out, rgb[0], rgb[1], rgb[2]);
    if (a.fp16) store_row<uint16_t>(out, a, b, y, crgb, tx.lo, tx.hi);
    else store_row<float>(out, a, b, y, crgb, tx.lo, tx.hi);
  }
}

}  // namespace detail
}  // namespace engine_ops
