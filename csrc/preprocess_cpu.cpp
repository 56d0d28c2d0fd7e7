// preprocess_cpu.cpp - host glue and CPU loops of the fused preprocessing op.
//
// One pass per output row, over the source columns inside the horizontal support of the ROI:
// * clamp="output" and RGB input (process_rows): for every plane a vertical pass over the source
//   rows the row's taps touch, a horizontal pass to the output pixels, then colour conversion +
//   clamp + normalisation + layout/dtype store. See Note [fused resize order].
// * clamp="source" on Y'CbCr (process_rows_source): source rows converted to clamped RGB once
//   each, then the same two passes on the three RGB planes. See Note [clamp before resampling].
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/preprocess.h"
#include "ops.h"
#include "simd.h"

namespace engine_ops {

using namespace engine;

namespace {

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

  bool same(int f, int il, int r, int o, int off, int s, int pin) const {
    return f == filter && il == in_luma && r == resized && o == out && off == offset && s == sub &&
           pin == plane_in;
  }
};

void build_table(TapTable& t) {
  t.lo = std::max(0, -t.offset);
  t.hi = std::min(t.out, t.resized - t.offset);
  if (t.hi < t.lo) t.hi = t.lo;
  const double luma_scale = (double)t.in_luma / (double)t.resized;
  const int kmax = max_plane_taps(t.filter, luma_scale, t.sub);
  t.K = std::min(kmax, t.plane_in);
  const int n = t.hi - t.lo;
  t.first.assign(n, 0);
  t.w.assign((size_t)n * t.K, 0.0f);
  std::vector<float> tmp(max_taps(t.filter, luma_scale) + 1);
  t.src_lo = t.plane_in;
  t.src_hi = 0;
  for (int i = 0; i < n; ++i) {
    const int r = t.lo + i + t.offset;
    int first = 0;
    const int cnt = compute_plane_taps(t.filter, t.in_luma, luma_scale, r, t.sub, tmp.data(), &first);
    // normalise_taps: shift the window left so that first + K <= plane_in, weights move right.
    int nf = std::min(first, t.plane_in - t.K);
    if (nf < 0) nf = 0;
    const int d = first - nf;
    float* w = &t.w[(size_t)i * t.K];
    for (int j = 0; j < cnt && j + d < t.K; ++j) w[j + d] = tmp[j];
    t.first[i] = nf;
    t.src_lo = std::min(t.src_lo, nf);
    t.src_hi = std::max(t.src_hi, nf + t.K);
  }
  if (n == 0) { t.src_lo = 0; t.src_hi = 0; }
  // first[] is non-decreasing, so each source sample is held by a contiguous run of windows
  const int ns = t.src_hi - t.src_lo;
  t.inv_lo.assign(std::max(ns, 0), 0);
  t.inv_hi.assign(std::max(ns, 0), 0);
  for (int s = 0, a = 0, b = 0; s < ns; ++s) {
    const int src = t.src_lo + s;
    while (a < n && t.first[a] + t.K <= src) ++a;
    if (b < a) b = a;
    while (b < n && t.first[b] <= src) ++b;
    t.inv_lo[s] = a;
    t.inv_hi[s] = b;
  }
  t.KP = t.K <= 8 ? 8 : (t.K <= 16 ? 16 : 0);
  if (t.KP) {
    t.wp.assign((size_t)n * t.KP, 0.0f);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < t.K; ++j) t.wp[(size_t)i * t.KP + j] = t.w[(size_t)i * t.K + j];
  }
}

// Small cache so a batch of same-sized frames builds each table once per call.
struct TableCache {
  std::vector<std::unique_ptr<TapTable>> tables;
  const TapTable* get(int f, int il, int r, int o, int off, int s, int pin) {
    for (auto& t : tables)
      if (t->same(f, il, r, o, off, s, pin)) return t.get();
    auto t = std::make_unique<TapTable>();
    t->filter = f; t->in_luma = il; t->resized = r; t->out = o; t->offset = off; t->sub = s;
    t->plane_in = pin;
    build_table(*t);
    tables.push_back(std::move(t));
    return tables.back().get();
  }
};

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

// ---- vertical pass: tmp[i] = sum_k w[k] * row_{first+k}[i], i < n (SIMD via target clones) ----
template <typename T>
ENGINE_ALWAYS_INLINE void vpass_impl(const unsigned char* base, long long stride, int K,
                                     const float* w, int n, float* __restrict tmp) {
  int k, kend;
  if (!nonzero_taps(w, K, &k, &kend)) {
    for (int i = 0; i < n; ++i) tmp[i] = 0.0f;
    return;
  }
  {
    const T* __restrict s0 = reinterpret_cast<const T*>(base + (long long)k * stride);
    const float w0 = w[k];
    if (k + 1 < kend) {
      const T* __restrict s1 = reinterpret_cast<const T*>(base + (long long)(k + 1) * stride);
      const float w1 = w[k + 1];
      for (int i = 0; i < n; ++i) tmp[i] = w0 * (float)s0[i] + w1 * (float)s1[i];
      k += 2;
    } else {
      for (int i = 0; i < n; ++i) tmp[i] = w0 * (float)s0[i];
      k += 1;
    }
  }
  for (; k + 1 < kend; k += 2) {
    const T* __restrict s0 = reinterpret_cast<const T*>(base + (long long)k * stride);
    const T* __restrict s1 = reinterpret_cast<const T*>(base + (long long)(k + 1) * stride);
    const float w0 = w[k], w1 = w[k + 1];
    for (int i = 0; i < n; ++i) tmp[i] += w0 * (float)s0[i] + w1 * (float)s1[i];
  }
  if (k < kend) {
    const T* __restrict s0 = reinterpret_cast<const T*>(base + (long long)k * stride);
    const float w0 = w[k];
    for (int i = 0; i < n; ++i) tmp[i] += w0 * (float)s0[i];
  }
}

ENGINE_SIMD_CLONES void vpass_u8_generic(const unsigned char* base, long long stride, int K,
                                         const float* w, int n, float* tmp) {
  vpass_impl<uint8_t>(base, stride, K, w, n, tmp);
}
ENGINE_SIMD_CLONES void vpass_u16_generic(const unsigned char* base, long long stride, int K,
                                          const float* w, int n, float* tmp) {
  vpass_impl<uint16_t>(base, stride, K, w, n, tmp);
}

#if ENGINE_HAVE_AVX2_KERNELS
// AVX2 + FMA vertical pass: 32 columns at a time, accumulators kept in registers over all taps
// (the generic loop re-reads and re-writes tmp once per pair of taps). Chosen at run time.
ENGINE_AVX2_TARGET inline __m256 cvt8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ENGINE_AVX2_TARGET inline __m256 cvt8(const uint16_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <typename T>
ENGINE_AVX2_TARGET void vpass_avx2(const unsigned char* base, long long stride, int K,
                                   const float* w, int n, float* tmp) {
  int k, kend;
  if (!nonzero_taps(w, K, &k, &kend)) {
    for (int i = 0; i < n; ++i) tmp[i] = 0.0f;
    return;
  }
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    const T* s = reinterpret_cast<const T*>(base + (long long)k * stride) + i;
    __m256 wv = _mm256_set1_ps(w[k]);
    __m256 a0 = _mm256_mul_ps(wv, cvt8(s)), a1 = _mm256_mul_ps(wv, cvt8(s + 8));
    __m256 a2 = _mm256_mul_ps(wv, cvt8(s + 16)), a3 = _mm256_mul_ps(wv, cvt8(s + 24));
    for (int kk = k + 1; kk < kend; ++kk) {
      s = reinterpret_cast<const T*>(base + (long long)kk * stride) + i;
      wv = _mm256_set1_ps(w[kk]);
      a0 = _mm256_fmadd_ps(wv, cvt8(s), a0);
      a1 = _mm256_fmadd_ps(wv, cvt8(s + 8), a1);
      a2 = _mm256_fmadd_ps(wv, cvt8(s + 16), a2);
      a3 = _mm256_fmadd_ps(wv, cvt8(s + 24), a3);
    }
    _mm256_storeu_ps(tmp + i, a0);
    _mm256_storeu_ps(tmp + i + 8, a1);
    _mm256_storeu_ps(tmp + i + 16, a2);
    _mm256_storeu_ps(tmp + i + 24, a3);
  }
  for (; i + 8 <= n; i += 8) {
    const T* s = reinterpret_cast<const T*>(base + (long long)k * stride) + i;
    __m256 a0 = _mm256_mul_ps(_mm256_set1_ps(w[k]), cvt8(s));
    for (int kk = k + 1; kk < kend; ++kk) {
      s = reinterpret_cast<const T*>(base + (long long)kk * stride) + i;
      a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[kk]), cvt8(s), a0);
    }
    _mm256_storeu_ps(tmp + i, a0);
  }
  for (; i < n; ++i) {
    float acc = 0.0f;
    for (int kk = k; kk < kend; ++kk)
      acc += w[kk] * (float)reinterpret_cast<const T*>(base + (long long)kk * stride)[i];
    tmp[i] = acc;
  }
}
#endif

#if ENGINE_HAVE_AVX2_KERNELS
// Two consecutive output rows in one sweep: their tap windows overlap (9 taps, stride ~4 source
// rows at 1080p -> 256), so each shared source row is loaded and converted once for both.
// Rows are given as the union window [r0, r0 + nr) with per-row weights wa / wb (0 = unused).
template <typename T>
ENGINE_AVX2_TARGET void vpass2_avx2(const unsigned char* base, long long stride, int nr,
                                    const float* wa, const float* wb, int n, float* ta,
                                    float* tb) {
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int r = 0; r < nr; ++r) {
      const T* s = reinterpret_cast<const T*>(base + (long long)r * stride) + i;
      const __m256 x0 = cvt8(s), x1 = cvt8(s + 8), x2 = cvt8(s + 16), x3 = cvt8(s + 24);
      if (wa[r] != 0.0f) {
        const __m256 w = _mm256_set1_ps(wa[r]);
        a0 = _mm256_fmadd_ps(w, x0, a0); a1 = _mm256_fmadd_ps(w, x1, a1);
        a2 = _mm256_fmadd_ps(w, x2, a2); a3 = _mm256_fmadd_ps(w, x3, a3);
      }
      if (wb[r] != 0.0f) {
        const __m256 w = _mm256_set1_ps(wb[r]);
        b0 = _mm256_fmadd_ps(w, x0, b0); b1 = _mm256_fmadd_ps(w, x1, b1);
        b2 = _mm256_fmadd_ps(w, x2, b2); b3 = _mm256_fmadd_ps(w, x3, b3);
      }
    }
    _mm256_storeu_ps(ta + i, a0); _mm256_storeu_ps(ta + i + 8, a1);
    _mm256_storeu_ps(ta + i + 16, a2); _mm256_storeu_ps(ta + i + 24, a3);
    _mm256_storeu_ps(tb + i, b0); _mm256_storeu_ps(tb + i + 8, b1);
    _mm256_storeu_ps(tb + i + 16, b2); _mm256_storeu_ps(tb + i + 24, b3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a0 = _mm256_setzero_ps(), b0 = a0;
    for (int r = 0; r < nr; ++r) {
      const __m256 x0 = cvt8(reinterpret_cast<const T*>(base + (long long)r * stride) + i);
      a0 = _mm256_fmadd_ps(_mm256_set1_ps(wa[r]), x0, a0);
      b0 = _mm256_fmadd_ps(_mm256_set1_ps(wb[r]), x0, b0);
    }
    _mm256_storeu_ps(ta + i, a0);
    _mm256_storeu_ps(tb + i, b0);
  }
  for (; i < n; ++i) {
    float sa = 0.0f, sb = 0.0f;
    for (int r = 0; r < nr; ++r) {
      const float x = (float)reinterpret_cast<const T*>(base + (long long)r * stride)[i];
      sa += wa[r] * x;
      sb += wb[r] * x;
    }
    ta[i] = sa;
    tb[i] = sb;
  }
}
#endif

// ENGINE_DISABLE_AVX2=1 forces the portable loops (tests compare both paths).
const bool g_use_avx2 = cpu_has_avx2_fma() && !std::getenv("ENGINE_DISABLE_AVX2");

void vpass_u8(const unsigned char* base, long long stride, int K, const float* w, int n,
              float* tmp) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return vpass_avx2<uint8_t>(base, stride, K, w, n, tmp);
#endif
  vpass_u8_generic(base, stride, K, w, n, tmp);
}
void vpass_u16(const unsigned char* base, long long stride, int K, const float* w, int n,
               float* tmp) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return vpass_avx2<uint16_t>(base, stride, K, w, n, tmp);
#endif
  vpass_u16_generic(base, stride, K, w, n, tmp);
}

// ---- horizontal pass: dst[o * NC + c] = sum_j w[o, j] * tmp[(first[o] - src_lo + j) * NC + c] ----
template <int NC, int KF>
ENGINE_ALWAYS_INLINE void hpass_fixed(const float* __restrict tmp, const TapTable& t,
                                      float* __restrict dst) {
  const int n = t.hi - t.lo;
  const int K = KF > 0 ? KF : t.K;
  for (int o = 0; o < n; ++o) {
    const float* __restrict s = tmp + (size_t)(t.first[o] - t.src_lo) * NC;
    const float* __restrict w = &t.w[(size_t)o * K];
    float acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
    for (int j = 0; j < K; ++j) {
      const float wj = w[j];
      for (int c = 0; c < NC; ++c) acc[c] += wj * s[j * NC + c];
    }
    for (int c = 0; c < NC; ++c) dst[o * NC + c] = acc[c];
  }
}

#if ENGINE_HAVE_VEC8
// NC == 1: each output is a dot product of KP contiguous samples (tmp is zero-padded past its
// end) with its zero-padded weights; 8 outputs are reduced together (reduce8).
template <int KP>
ENGINE_ALWAYS_INLINE void hpass_dot(const float* __restrict tmp, const TapTable& t,
                                    float* __restrict dst) {
  using namespace engine_simd;
  const int n = t.hi - t.lo;
  const float* wp = t.wp.data();
  const int* first = t.first.data();
  int o = 0;
  for (; o + 8 <= n; o += 8) {
    v8f p[8];
    for (int q = 0; q < 8; ++q) {
      const float* s = tmp + (first[o + q] - t.src_lo);
      const float* w = wp + (size_t)(o + q) * KP;
      v8f acc = loadu(s) * loadu(w);
      if (KP == 16) acc += loadu(s + 8) * loadu(w + 8);
      p[q] = acc;
    }
    storeu(dst + o, reduce8(p));
  }
  for (; o < n; ++o) {
    const float* s = tmp + (first[o] - t.src_lo);
    const float* w = wp + (size_t)o * KP;
    float acc = 0.0f;
    for (int j = 0; j < KP; ++j) acc += s[j] * w[j];
    dst[o] = acc;
  }
}
#endif

template <int NC>
ENGINE_ALWAYS_INLINE void hpass_impl(const float* tmp, const TapTable& t, float* dst) {
#if ENGINE_HAVE_VEC8
  if (NC == 1 && t.KP == 8) { hpass_dot<8>(tmp, t, dst); return; }
  if (NC == 1 && t.KP == 16) { hpass_dot<16>(tmp, t, dst); return; }
#endif
  switch (t.K) {
    case 1: hpass_fixed<NC, 1>(tmp, t, dst); break;
    case 2: hpass_fixed<NC, 2>(tmp, t, dst); break;
    case 3: hpass_fixed<NC, 3>(tmp, t, dst); break;
    case 5: hpass_fixed<NC, 5>(tmp, t, dst); break;
    case 7: hpass_fixed<NC, 7>(tmp, t, dst); break;
    case 9: hpass_fixed<NC, 9>(tmp, t, dst); break;
    case 11: hpass_fixed<NC, 11>(tmp, t, dst); break;
    default: hpass_fixed<NC, 0>(tmp, t, dst); break;
  }
}

ENGINE_SIMD_CLONES void hpass1(const float* tmp, const TapTable& t, float* dst) {
  hpass_impl<1>(tmp, t, dst);
}
ENGINE_SIMD_CLONES void hpass2(const float* tmp, const TapTable& t, float* dst) {
  hpass_impl<2>(tmp, t, dst);
}
ENGINE_SIMD_CLONES void hpass3(const float* tmp, const TapTable& t, float* dst) {
  hpass_impl<3>(tmp, t, dst);
}

// ---- colour conversion + clamp + normalise into planar float rows rgb[c][n] (output order) ----
ENGINE_SIMD_CLONES void convert_yuv(const float* y, const float* cb, const float* cr, int cstride,
                                    int n, const YuvToRgb& m, const Normalize& nm, bool bgr_out,
                                    float* r0, float* r1, float* r2) {
  float* dst[3] = {r0, r1, r2};
  for (int oc = 0; oc < 3; ++oc) {
    const int c = bgr_out ? 2 - oc : oc;  // RGB index feeding output channel oc
    const float yg = m.y_gain, cbg = m.cb_gain[c], crg = m.cr_gain[c], b = m.bias[c];
    const float g = nm.gain[oc], nb = nm.bias[oc];
    float* __restrict d = dst[oc];
    for (int i = 0; i < n; ++i) {
      float v = yg * y[i] + cbg * cb[i * cstride] + crg * cr[i * cstride] + b;
      v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
      d[i] = v * g + nb;
    }
  }
}

// RGB samples s[c][i * STEP] (c in R, G, B order) -> clamp + normalise, output order.
template <int STEP>
ENGINE_ALWAYS_INLINE void convert_rgb_impl(const float* const s[3], int n, const Normalize& nm,
                                           bool bgr_out, float* r0, float* r1, float* r2) {
  float* dst[3] = {r0, r1, r2};
  for (int oc = 0; oc < 3; ++oc) {
    const int c = bgr_out ? 2 - oc : oc;  // RGB colour feeding output channel oc
    const float g = nm.gain[oc], nb = nm.bias[oc];
    const float* __restrict src = s[c];
    float* __restrict d = dst[oc];
    for (int i = 0; i < n; ++i) {
      float v = src[i * STEP];
      v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
      d[i] = v * g + nb;
    }
  }
}
// interleaved RGB24 / BGR24 rows
ENGINE_SIMD_CLONES void convert_rgb(const float* src, bool src_bgr, int n, const Normalize& nm,
                                    bool bgr_out, float* r0, float* r1, float* r2) {
  const float* s[3] = {src + (src_bgr ? 2 : 0), src + 1, src + (src_bgr ? 0 : 2)};
  convert_rgb_impl<3>(s, n, nm, bgr_out, r0, r1, r2);
}
// planar R, G, B rows
ENGINE_SIMD_CLONES void convert_rgb_planar(const float* const s[3], int n, const Normalize& nm,
                                           bool bgr_out, float* r0, float* r1, float* r2) {
  convert_rgb_impl<1>(s, n, nm, bgr_out, r0, r1, r2);
}

// ---- stores ----
template <typename O>
ENGINE_ALWAYS_INLINE O to_out(float v);
template <>
ENGINE_ALWAYS_INLINE float to_out<float>(float v) { return v; }
template <>
ENGINE_ALWAYS_INLINE uint16_t to_out<uint16_t>(float v) { return float_to_half_bits(v); }

template <typename O>
ENGINE_ALWAYS_INLINE void store_row_impl(void* out_base, const PreprocessArgs& a, int b, int y,
                                         const float* const rgb[3], int x_lo, int x_hi) {
  O* out = static_cast<O*>(out_base);
  const int W = a.out_w, H = a.out_h;
  const O pad = to_out<O>(a.pad_value);
  if (a.nhwc) {
    O* __restrict row = out + ((size_t)b * H + y) * W * 3;
    for (int x = 0; x < x_lo; ++x) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = pad;
    const float* __restrict s0 = rgb[0] - x_lo;
    const float* __restrict s1 = rgb[1] - x_lo;
    const float* __restrict s2 = rgb[2] - x_lo;
    for (int x = x_lo; x < x_hi; ++x) {
      row[3 * x] = to_out<O>(s0[x]);
      row[3 * x + 1] = to_out<O>(s1[x]);
      row[3 * x + 2] = to_out<O>(s2[x]);
    }
    for (int x = x_hi; x < W; ++x) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = pad;
  } else {
    for (int c = 0; c < 3; ++c) {
      O* __restrict row = out + (((size_t)b * 3 + c) * H + y) * W;
      for (int x = 0; x < x_lo; ++x) row[x] = pad;
      const float* __restrict s = rgb[c] - x_lo;
      for (int x = x_lo; x < x_hi; ++x) row[x] = to_out<O>(s[x]);
      for (int x = x_hi; x < W; ++x) row[x] = pad;
    }
  }
}

ENGINE_SIMD_CLONES void store_row_f32(void* out, const PreprocessArgs& a, int b, int y,
                                      const float* const rgb[3], int x_lo, int x_hi) {
  store_row_impl<float>(out, a, b, y, rgb, x_lo, x_hi);
}
ENGINE_SIMD_CLONES void store_row_f16(void* out, const PreprocessArgs& a, int b, int y,
                                      const float* const rgb[3], int x_lo, int x_hi) {
  store_row_impl<uint16_t>(out, a, b, y, rgb, x_lo, x_hi);
}

template <typename O>
void store_row(void* out, const PreprocessArgs& a, int b, int y, const float* const rgb[3],
               int x_lo, int x_hi) {
  if (sizeof(O) == 2) store_row_f16(out, a, b, y, rgb, x_lo, x_hi);
  else store_row_f32(out, a, b, y, rgb, x_lo, x_hi);
}

void store_pad_row(void* out, const PreprocessArgs& a, int b, int y) {
  const float* none[3] = {nullptr, nullptr, nullptr};
  if (a.fp16) store_row<uint16_t>(out, a, b, y, none, 0, 0);
  else store_row<float>(out, a, b, y, none, 0, 0);
}

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

// The rows output row iy adds to the window of row iy - 1.
ENGINE_ALWAYS_INLINE void prefetch_rows_of(const PlaneDesc& pl, const TapTable& ty,
                                           const TapTable& tx, int iy, int bps) {
  const int n = ty.hi - ty.lo;
  if (iy <= 0 || iy >= n) return;
  const int r0 = std::max(ty.first[iy - 1] + ty.K, ty.first[iy]);
  const int r1 = ty.first[iy] + ty.K;
  const long long c0 = (long long)tx.src_lo * pl.channels * bps;
  const long long c1 = (long long)tx.src_hi * pl.channels * bps;
  for (int r = r0; r < r1; ++r) prefetch_lines(pl, r, c0, c1);
}

#ifndef ENGINE_PREFETCH_DIST
#define ENGINE_PREFETCH_DIST 2
#endif
constexpr int kPrefetchRows = ENGINE_PREFETCH_DIST;  // output rows ahead

ENGINE_ALWAYS_INLINE void prefetch_next_rows(const PlaneDesc& pl, const TapTable& ty,
                                             const TapTable& tx, int iy, int bps, bool block_start) {
  if (block_start)
    for (int d = 1; d < kPrefetchRows; ++d) prefetch_rows_of(pl, ty, tx, iy + d, bps);
  prefetch_rows_of(pl, ty, tx, iy + kPrefetchRows, bps);
}

struct ThreadBuffers {
  std::vector<float> vtmp[3];
  std::vector<float> vtmp2[3];  // second row of a paired vertical pass
  std::vector<float> hrow[3];
  std::vector<float> rgb;
  // clamp="source" (Note [clamp before resampling]): converted source rows, a ring of K slots
  std::vector<int> slot_row;       // source row held by each slot (-1: none)
  std::vector<float> ring;         // [slot][3][stride] clamped RGB
  std::vector<float> tf;           // chroma terms of one chroma row on the luma grid [3][..]
};

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
template <typename T>
ENGINE_AVX2_TARGET void chroma_terms_avx2(const T* cb, const T* cr, int cs, int n, const YuvToRgb& m,
                                          int sub, float* const t[3]) {
  __m256 G[3], H[3], E[3];
  for (int c = 0; c < 3; ++c) {
    G[c] = _mm256_set1_ps(m.cb_gain[c]);
    H[c] = _mm256_set1_ps(m.cr_gain[c]);
    E[c] = _mm256_set1_ps(m.bias[c]);
  }
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
        const __m256 x = _mm256_fmadd_ps(G[c], u, _mm256_fmadd_ps(H[c], v, E[c]));
        if (sub == 2) {  // in-lane unpack, then the lanes in order
          const __m256 lo = _mm256_unpacklo_ps(x, x), hi = _mm256_unpackhi_ps(x, x);
          _mm256_storeu_ps(t[c] + 2 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
          _mm256_storeu_ps(t[c] + 2 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        } else {
          _mm256_storeu_ps(t[c] + k, x);
        }
      }
    }
  }
  if (k < n) {
    float* tail[3] = {t[0] + k * sub, t[1] + k * sub, t[2] + k * sub};
    chroma_terms_impl(cb + k * cs, cr + k * cs, cs, n - k, m, sub, tail);
  }
}

template <typename T>
ENGINE_AVX2_TARGET void convert_row_avx2(const T* y, int n, float yg, const float* const t[3],
                                         float* const rgb[3]) {
  const __m256 g = _mm256_set1_ps(yg), zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 Y = cvt8(y + i);
    for (int c = 0; c < 3; ++c) {
      const __m256 v = _mm256_fmadd_ps(Y, g, _mm256_loadu_ps(t[c] + i));
      _mm256_storeu_ps(rgb[c] + i, _mm256_min_ps(_mm256_max_ps(v, zero), top));
    }
  }
  if (i < n) {
    const float* tt[3] = {t[0] + i, t[1] + i, t[2] + i};
    float* rr[3] = {rgb[0] + i, rgb[1] + i, rgb[2] + i};
    convert_row_impl(y + i, n - i, yg, tt, rr);
  }
}

// 32 columns per sweep in registers, the taps innermost.
ENGINE_AVX2_TARGET void vpass_rgb_avx2(const float* const* rows, const float* w, int nk,
                                       long long cstride, int n, float* const d[3]) {
  for (int c = 0; c < 3; ++c) {
    const long long off = c * cstride;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int j = 0; j < nk; ++j) {
        const __m256 wv = _mm256_set1_ps(w[j]);
        const float* p = rows[j] + off + i;
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 8), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 16), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p + 24), a3);
      }
      _mm256_storeu_ps(d[c] + i, a0);
      _mm256_storeu_ps(d[c] + i + 8, a1);
      _mm256_storeu_ps(d[c] + i + 16, a2);
      _mm256_storeu_ps(d[c] + i + 24, a3);
    }
    for (; i + 8 <= n; i += 8) {
      __m256 a0 = _mm256_setzero_ps();
      for (int j = 0; j < nk; ++j)
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(rows[j] + off + i), a0);
      _mm256_storeu_ps(d[c] + i, a0);
    }
  }
}
#endif

template <typename T>
void chroma_terms(const T* cb, const T* cr, int cs, int n, const YuvToRgb& m, int sub,
                  float* const t[3]) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return chroma_terms_avx2(cb, cr, cs, n, m, sub, t);
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
  int done = 0;
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) {
    done = n / 8 * 8;
    vpass_rgb_avx2(rows, w, nk, cstride, done, d);
  }
#endif
  vpass_rgb_impl(rows, w, nk, cstride, done, n, d);
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
    stride_ = std::max(n_, 1);
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
    const bool nv12 = f_.format == kFmtNV12;
    const PlaneDesc& pu = f_.planes[1];
    const PlaneDesc& pv = f_.planes[nv12 ? 1 : 2];
    const int cs = nv12 ? 2 : 1;
    const int bps = f_.bit_depth > 8 ? 2 : 1;
    const unsigned char* u = static_cast<const unsigned char*>(pu.data) + (long long)cr * pu.row_stride +
                             (long long)clo_ * cs * bps;
    const unsigned char* v = static_cast<const unsigned char*>(pv.data) + (long long)cr * pv.row_stride +
                             ((long long)clo_ * cs + (nv12 ? 1 : 0)) * bps;
    float* t[3] = {buf_.tf.data(), buf_.tf.data() + grid_, buf_.tf.data() + 2 * grid_};
    if (bps == 1)
      chroma_terms(u, v, cs, nc_, m_, sx_, t);
    else
      chroma_terms(reinterpret_cast<const uint16_t*>(u), reinterpret_cast<const uint16_t*>(v), cs, nc_,
                   m_, sx_, t);
  }

  const FrameDesc& f_;
  const YuvToRgb m_;
  ThreadBuffers& buf_;
  const int K_, lo_, n_;
  int stride_ = 1, sx_ = 1, sy_ = 1, clo_ = 0, nc_ = 0, t_row_ = -1;
  size_t grid_ = 0;
};

// hpass + colour conversion + normalisation + store of output row y from the vertical-pass
// rows vt[p] of every plane.
void finish_row(const FrameWork& fw, const PreprocessArgs& a, int b, int y, float* const vt[3],
                void* out, ThreadBuffers& buf, const YuvToRgb& m) {
  const FrameDesc& f = *fw.frame;
  const TapTable& tx0 = *fw.tx[0];
  const int x_lo = tx0.lo, x_hi = tx0.hi, nx = x_hi - x_lo;
  for (int p = 0; p < f.num_planes; ++p) {
    const int nc = f.planes[p].channels;
    const TapTable& tx = *fw.tx[p];
    float* hr = buf.hrow[p].data();
    if (nc == 1) hpass1(vt[p], tx, hr);
    else if (nc == 2) hpass2(vt[p], tx, hr);
    else hpass3(vt[p], tx, hr);
  }
  const int st = std::max(nx, 1);
  float* rgb[3] = {buf.rgb.data(), buf.rgb.data() + st, buf.rgb.data() + 2 * st};
  const float* crgb[3] = {rgb[0], rgb[1], rgb[2]};
  if (f.format == kFmtRGB24 || f.format == kFmtBGR24) {
    convert_rgb(buf.hrow[0].data(), f.format == kFmtBGR24, nx, a.norm, a.bgr_out, rgb[0], rgb[1],
                rgb[2]);
  } else if (f.format == kFmtNV12) {
    const float* uv = buf.hrow[1].data();
    convert_yuv(buf.hrow[0].data(), uv, uv + 1, 2, nx, m, a.norm, a.bgr_out, rgb[0], rgb[1],
                rgb[2]);
  } else {
    convert_yuv(buf.hrow[0].data(), buf.hrow[1].data(), buf.hrow[2].data(), 1, nx, m, a.norm,
                a.bgr_out, rgb[0], rgb[1], rgb[2]);
  }
  if (a.fp16) store_row<uint16_t>(out, a, b, y, crgb, x_lo, x_hi);
  else store_row<float>(out, a, b, y, crgb, x_lo, x_hi);
}

// process_rows for clamp="source" Y'CbCr frames (Note [clamp before resampling]): per output row
// the vertical pass over converted, clamped source rows (all three channels with the luma taps),
// then the horizontal pass per channel, normalisation and store.
void process_rows_source(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1,
                         void* out, ThreadBuffers& buf) {
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
  const float* hr[3] = {buf.hrow[0].data(), buf.hrow[1].data(), buf.hrow[2].data()};
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
    int k, kend;
    if (nonzero_taps(w, K, &k, &kend)) {
      for (int j = k; j < kend; ++j) rows[j - k] = src.row(ty.first[iy] + j);
      vpass_rgb(rows.data(), w + k, kend - k, stride, ns, vt);
    } else {
      for (int c = 0; c < 3; ++c) std::fill(vt[c], vt[c] + ns, 0.0f);
    }
    for (int c = 0; c < 3; ++c) {
      std::fill(vt[c] + ns, vt[c] + ns + 16, 0.0f);  // hpass_dot reads up to KP past the end
      hpass1(vt[c], tx, buf.hrow[c].data());
    }
    convert_rgb_planar(hr, nx, a.norm, a.bgr_out, rgb[0], rgb[1], rgb[2]);
    if (a.fp16) store_row<uint16_t>(out, a, b, y, crgb, tx.lo, tx.hi);
    else store_row<float>(out, a, b, y, crgb, tx.lo, tx.hi);
  }
}

void process_rows(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1, void* out,
                  ThreadBuffers& buf) {
  const FrameDesc& f = *fw.frame;
  if (a.clamp_source && is_yuv(f.format)) return process_rows_source(fw, a, b, y0, y1, out, buf);
  const TapTable& ty0 = *fw.ty[0];
  const TapTable& tx0 = *fw.tx[0];
  const int nx = tx0.hi - tx0.lo;
  for (int p = 0; p < f.num_planes; ++p) {
    const int nc = f.planes[p].channels;
    const TapTable& tx = *fw.tx[p];
    const size_t need = (size_t)std::max(tx.src_hi - tx.src_lo, 1) * nc + 16;  // + zero pad
    for (auto* v : {&buf.vtmp[p], &buf.vtmp2[p]})
      if (v->size() < need) v->resize(need);
    if (buf.hrow[p].size() < (size_t)std::max(nx, 1) * nc) buf.hrow[p].resize((size_t)std::max(nx, 1) * nc);
  }
  if (buf.rgb.size() < (size_t)std::max(nx, 1) * 3) buf.rgb.resize((size_t)std::max(nx, 1) * 3);
  const YuvToRgb m = make_yuv_to_rgb(f.matrix, f.full_range, f.bit_depth);
  const int bps = f.bit_depth > 8 ? 2 : 1;
  float* vt[3] = {buf.vtmp[0].data(), buf.vtmp[1].data(), buf.vtmp[2].data()};
  float* vt2[3] = {buf.vtmp2[0].data(), buf.vtmp2[1].data(), buf.vtmp2[2].data()};

  for (int y = y0; y < y1; ++y) {
    if (y < ty0.lo || y >= ty0.hi || nx <= 0) {
      store_pad_row(out, a, b, y);
      continue;
    }
    const bool pair = g_use_avx2 && y + 1 < y1 && y + 1 < ty0.hi;
    for (int p = 0; p < f.num_planes; ++p) {
      const PlaneDesc& pl = f.planes[p];
      const TapTable& ty = *fw.ty[p];
      const TapTable& tx = *fw.tx[p];
      const int iy = y - ty.lo;
      prefetch_next_rows(pl, ty, tx, iy, bps, y == y0);
      if (pair) prefetch_next_rows(pl, ty, tx, iy + 1, bps, false);
      const int nc = pl.channels;
      const unsigned char* col0 =
          static_cast<const unsigned char*>(pl.data) + (long long)tx.src_lo * nc * bps;
      const int n = (tx.src_hi - tx.src_lo) * nc;
      const float* w = &ty.w[(size_t)iy * ty.K];
      for (int i = n; i < n + 16; ++i) vt[p][i] = 0.0f;  // hpass_dot reads up to KP past the end
#if ENGINE_HAVE_AVX2_KERNELS
      if (pair) {
        for (int i = n; i < n + 16; ++i) vt2[p][i] = 0.0f;
        // union window of rows iy and iy + 1 with per-row weights (0 outside each window)
        const int fa = ty.first[iy], fb = ty.first[iy + 1], K = ty.K;
        const int r0 = std::min(fa, fb), r1 = std::max(fa, fb) + K;
        const int nr = r1 - r0;
        float wa[130], wb[130];
        if (nr <= 130) {
          for (int r = 0; r < nr; ++r) {
            const int ja = r0 + r - fa, jb = r0 + r - fb;
            wa[r] = (ja >= 0 && ja < K) ? w[ja] : 0.0f;
            wb[r] = (jb >= 0 && jb < K) ? ty.w[(size_t)(iy + 1) * K + jb] : 0.0f;
          }
          const unsigned char* base = col0 + (long long)r0 * pl.row_stride;
          if (bps == 1) vpass2_avx2<uint8_t>(base, pl.row_stride, nr, wa, wb, n, vt[p], vt2[p]);
          else vpass2_avx2<uint16_t>(base, pl.row_stride, nr, wa, wb, n, vt[p], vt2[p]);
          continue;
        }
        // very large downscale: fall through to two single passes
        const unsigned char* base2 = col0 + (long long)fb * pl.row_stride;
        if (bps == 1) vpass_u8(base2, pl.row_stride, K, &ty.w[(size_t)(iy + 1) * K], n, vt2[p]);
        else vpass_u16(base2, pl.row_stride, K, &ty.w[(size_t)(iy + 1) * K], n, vt2[p]);
      }
#endif
      const unsigned char* base = col0 + (long long)ty.first[iy] * pl.row_stride;
      if (bps == 1) vpass_u8(base, pl.row_stride, ty.K, w, n, vt[p]);
      else vpass_u16(base, pl.row_stride, ty.K, w, n, vt[p]);
    }
    finish_row(fw, a, b, y, vt, out, buf, m);
    if (pair) {
      finish_row(fw, a, b, y + 1, vt2, out, buf, m);
      ++y;
    }
  }
}

// CPU kernel: frames[0..n) -> out. Returns a Status.
int preprocess_cpu(const FrameDesc* frames, int n, const PreprocessArgs& a, void* out,
                   int threads) {
  TableCache cache;
  std::vector<FrameWork> work(n);
  for (int b = 0; b < n; ++b) {
    const FrameDesc& f = frames[b];
    AxisGeometry gy, gx;
    if (compute_geometry(a.mode, f.height, f.width, a.out_h, a.out_w, a.to_h, a.to_w, &gy, &gx) !=
        kOk)
      return kBadArgument;
    work[b].frame = &f;
    for (int p = 0; p < f.num_planes; ++p) {
      const PlaneDesc& pl = f.planes[p];
      work[b].ty[p] = cache.get(a.filter, gy.in, gy.resized, gy.out, gy.offset, pl.sub_y,
                                pl.height);
      work[b].tx[p] = cache.get(a.filter, gx.in, gx.resized, gx.out, gx.offset, pl.sub_x,
                                pl.width);
    }
  }
#ifdef _OPENMP
  const int nt_blk = threads > 0 ? threads : omp_get_max_threads();
#else
  const int nt_blk = 1;
#endif
  // Row blocks: long enough that the source rows stream through the prefetcher (each block
  // start is a cold miss on ~2 x scale source rows), short enough for >= 4 tasks per thread.
  const long long ideal = ((long long)a.out_h * n) / (4LL * nt_blk);
  const int block = (int)std::max(8LL, std::min<long long>(a.out_h, ideal));
  const int blocks_per_frame = (a.out_h + block - 1) / block;
  const long long tasks = (long long)n * blocks_per_frame;
#ifdef _OPENMP
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt) if (tasks > 1 && nt > 1)
#endif
  {
    ThreadBuffers buf;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (long long t = 0; t < tasks; ++t) {
      const int b = (int)(t / blocks_per_frame);
      const int y0 = (int)(t % blocks_per_frame) * block;
      const int y1 = std::min(y0 + block, a.out_h);
      process_rows(work[b], a, b, y0, y1, out, buf);
    }
  }
  (void)threads;
  return kOk;
}

}  // namespace

bool avx2_kernels_active() { return g_use_avx2; }

void preprocess(py::array out, const py::list& frames, int mode, int to_h, int to_w, int filter,
                double scale, std::array<double, 3> mean, std::array<double, 3> stdv, bool bgr_out,
                bool nhwc, double pad_value, bool clamp_source, int threads) {
  // out: (B, 3, H, W) or (B, H, W, 3), C-contiguous float32 / float16
  if (out.ndim() != 4) fail("out must be 4-D, got ndim=" + std::to_string(out.ndim()));
  const bool fp16 = out.dtype().kind() == 'f' && out.itemsize() == 2;
  const bool fp32 = out.dtype().kind() == 'f' && out.itemsize() == 4;
  if (!fp16 && !fp32) fail("out dtype must be float32 or float16");
  if (!(out.flags() & py::array::c_style)) fail("out must be C-contiguous");
  if (!out.writeable()) fail("out must be writeable");
  const long long B = out.shape(0);
  if (B != (long long)frames.size())
    fail("out.shape[0]=" + std::to_string(B) + " != len(frames)=" + std::to_string(frames.size()));
  if ((nhwc ? out.shape(3) : out.shape(1)) != 3) fail("out must have 3 channels");
  PreprocessArgs a;
  a.out_h = (int)(nhwc ? out.shape(1) : out.shape(2));
  a.out_w = (int)(nhwc ? out.shape(2) : out.shape(3));
  a.mode = mode;
  a.to_h = to_h;
  a.to_w = to_w;
  a.filter = filter;
  if (mode < 0 || mode > 2) fail("bad resize mode");
  if (filter != kFilterAntialias && filter != kFilterBilinear) fail("bad filter");
  if (mode != kResizeLetterbox && (to_h <= 0 || (mode == kResizeStretch && to_w <= 0)))
    fail("resize target must be positive");
  for (int c = 0; c < 3; ++c)
    if (!(stdv[c] != 0.0)) fail("std must be non-zero");
  a.norm = make_normalize(scale, mean.data(), stdv.data());
  a.bgr_out = bgr_out;
  a.nhwc = nhwc;
  a.fp16 = fp16;
  a.pad_value = (float)pad_value;
  a.clamp_source = clamp_source;

  const int n = (int)B;
  std::vector<FrameDesc> descs(n);
  std::vector<py::array> keep;  // plane arrays stay referenced while the GIL is released
  keep.reserve((size_t)n * 3);
  for (int b = 0; b < n; ++b) {
    py::tuple t = frames[b].cast<py::tuple>();
    if (t.size() != 7) fail("frame tuple must have 7 fields");
    FrameDesc& f = descs[b];
    const std::string where = "frame " + std::to_string(b) + ": ";
    f.format = t[0].cast<int>();
    f.bit_depth = t[1].cast<int>();
    f.width = t[2].cast<int>();
    f.height = t[3].cast<int>();
    f.matrix = t[4].cast<int>();
    f.full_range = t[5].cast<bool>();
    if (f.format < 0 || f.format > kFmtBGR24) fail(where + "bad format code");
    if (f.bit_depth != 8 && !(f.bit_depth == 10 && is_yuv(f.format)))
      fail(where + "bit depth must be 8 (or 10 for YUV)");
    if (f.width <= 0 || f.height <= 0) fail(where + "width and height must be positive");
    if (f.matrix != kBT601 && f.matrix != kBT709) fail(where + "bad matrix");
    f.num_planes = describe_planes(f.format, f.width, f.height, f.planes);
    py::tuple planes = t[6].cast<py::tuple>();
    if ((int)planes.size() != f.num_planes)
      fail(where + "expected " + std::to_string(f.num_planes) + " planes, got " +
           std::to_string(planes.size()));
    const int bps = f.bit_depth > 8 ? 2 : 1;
    for (int p = 0; p < f.num_planes; ++p) {
      keep.push_back(planes[p].cast<py::array>());
      const py::array& arr = keep.back();
      PlaneDesc& pl = f.planes[p];
      const std::string pw = where + "plane " + std::to_string(p) + ": ";
      // plane: (rows >= height, samples >= width * channels), unit column stride
      if (arr.ndim() != 2) fail(pw + "must be 2-D (rows, samples)");
      if (arr.dtype().kind() != 'u' || arr.itemsize() != bps)
        fail(pw + (bps == 1 ? "dtype must be uint8" : "dtype must be uint16"));
      if (arr.strides(1) != bps) fail(pw + "columns must be contiguous");
      if (arr.shape(0) < pl.height || arr.shape(1) < (long long)pl.width * pl.channels)
        fail(pw + "shape (" + std::to_string(arr.shape(0)) + ", " + std::to_string(arr.shape(1)) +
             ") smaller than (" + std::to_string(pl.height) + ", " +
             std::to_string(pl.width * pl.channels) + ")");
      if (arr.strides(0) < (long long)pl.width * pl.channels * bps)
        fail(pw + "row stride too small");
      pl.data = arr.data();
      pl.row_stride = arr.strides(0);
    }
  }
  void* dst = out.mutable_data();
  int status;
  {
    py::gil_scoped_release nogil;
    status = preprocess_cpu(descs.data(), n, a, dst, threads);
  }
  if (status != kOk) fail("preprocess: invalid geometry (status " + std::to_string(status) + ")");
}

py::tuple resample_taps(int filter, int in_size, int resized, int out, int offset, int sub,
                        int plane_in) {
  if (in_size <= 0 || resized <= 0 || out <= 0 || plane_in <= 0 || sub < 1)
    fail("sizes must be positive");
  TapTable t;
  t.filter = filter; t.in_luma = in_size; t.resized = resized; t.out = out; t.offset = offset;
  t.sub = sub; t.plane_in = plane_in;
  build_table(t);
  const int n = t.hi - t.lo;
  py::array_t<long long> first({(py::ssize_t)out});
  py::array_t<float> w({(py::ssize_t)out, (py::ssize_t)t.K});
  auto fm = first.mutable_unchecked<1>();
  auto wm = w.mutable_unchecked<2>();
  for (int o = 0; o < out; ++o) {
    const bool valid = o >= t.lo && o < t.hi;
    fm(o) = valid ? t.first[o - t.lo] : -1;
    for (int j = 0; j < t.K; ++j) wm(o, j) = valid ? t.w[(size_t)(o - t.lo) * t.K + j] : 0.0f;
  }
  (void)n;
  return py::make_tuple(first, w);
}

py::tuple resize_geometry(int mode, int in_h, int in_w, int out_h, int out_w, int to_h, int to_w) {
  AxisGeometry gy, gx;
  if (compute_geometry(mode, in_h, in_w, out_h, out_w, to_h, to_w, &gy, &gx) != kOk)
    fail("invalid geometry");
  return py::make_tuple(py::make_tuple(gy.resized, gy.offset), py::make_tuple(gx.resized, gx.offset));
}

}  // namespace engine_ops
