// preprocess_cpu.cpp - host glue and CPU loops of the fused preprocessing op.
//
// One pass per output row: for every plane, a vertical pass over the contiguous source rows that
// the row's taps touch (only the source columns inside the horizontal support of the output ROI),
// then a horizontal pass producing the plane's samples at the output pixels, then colour
// conversion + clamp + normalisation + layout/dtype store. See Note [fused resize order].
#include <algorithm>
#include <atomic>
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
// corr: null, or the clamp correction of the row as [3][n] in RGB order (Note [clamp before
// resampling]), added before the clamp.
ENGINE_SIMD_CLONES void convert_yuv(const float* y, const float* cb, const float* cr, int cstride,
                                    int n, const YuvToRgb& m, const Normalize& nm, bool bgr_out,
                                    const float* corr, float* r0, float* r1, float* r2) {
  float* dst[3] = {r0, r1, r2};
  for (int oc = 0; oc < 3; ++oc) {
    const int c = bgr_out ? 2 - oc : oc;  // RGB index feeding output channel oc
    const float yg = m.y_gain, cbg = m.cb_gain[c], crg = m.cr_gain[c], b = m.bias[c];
    const float g = nm.gain[oc], nb = nm.bias[oc];
    float* __restrict d = dst[oc];
    if (corr) {
      const float* __restrict k = corr + (size_t)c * n;
      for (int i = 0; i < n; ++i) {
        float v = yg * y[i] + cbg * cb[i * cstride] + crg * cr[i * cstride] + b + k[i];
        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        d[i] = v * g + nb;
      }
      continue;
    }
    for (int i = 0; i < n; ++i) {
      float v = yg * y[i] + cbg * cb[i * cstride] + crg * cr[i * cstride] + b;
      v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
      d[i] = v * g + nb;
    }
  }
}

ENGINE_SIMD_CLONES void convert_rgb(const float* src, bool src_bgr, int n, const Normalize& nm,
                                    bool bgr_out, float* r0, float* r1, float* r2) {
  float* dst[3] = {r0, r1, r2};
  for (int oc = 0; oc < 3; ++oc) {
    const int c = bgr_out ? 2 - oc : oc;        // RGB colour feeding output channel oc
    const int sc = src_bgr ? 2 - c : c;         // its interleaved index in the source
    const float g = nm.gain[oc], nb = nm.bias[oc];
    float* __restrict d = dst[oc];
    for (int i = 0; i < n; ++i) {
      float v = src[i * 3 + sc];
      v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
      d[i] = v * g + nb;
    }
  }
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
// prefetchers ramp up late; request the rows output row y+2 adds while row y computes.
inline void prefetch_rows_of(const PlaneDesc& pl, const TapTable& ty, const TapTable& tx, int iy,
                             int bps) {
#if defined(__GNUC__)
  const int n = ty.hi - ty.lo;
  if (iy <= 0 || iy >= n) return;
  const int r0 = std::max(ty.first[iy - 1] + ty.K, ty.first[iy]);  // rows new in row iy
  const int r1 = ty.first[iy] + ty.K;
  const long long c0 = (long long)tx.src_lo * pl.channels * bps;
  const long long c1 = (long long)tx.src_hi * pl.channels * bps;
  for (int r = r0; r < r1; ++r) {
    const char* row = static_cast<const char*>(pl.data) + (long long)r * pl.row_stride;
    for (long long c = c0; c < c1; c += 64) __builtin_prefetch(row + c, 0, 3);
  }
#else
  (void)pl; (void)ty; (void)tx; (void)iy; (void)bps;
#endif
}

#ifndef ENGINE_PREFETCH_DIST
#define ENGINE_PREFETCH_DIST 2
#endif
constexpr int kPrefetchRows = ENGINE_PREFETCH_DIST;  // output rows ahead

inline void prefetch_next_rows(const PlaneDesc& pl, const TapTable& ty, const TapTable& tx, int iy,
                               int bps, bool block_start) {
  if (block_start)
    for (int d = 1; d < kPrefetchRows; ++d) prefetch_rows_of(pl, ty, tx, iy + d, bps);
  prefetch_rows_of(pl, ty, tx, iy + kPrefetchRows, bps);
}

struct ThreadBuffers {
  std::vector<float> vtmp[3];
  std::vector<float> vtmp2[3];  // second row of a paired vertical pass
  std::vector<float> hrow[3];
  std::vector<float> rgb;
  // clamp correction (Note [clamp before resampling])
  std::vector<uint16_t> glo, ghi;    // gamut bounds at chroma resolution
  std::vector<uint16_t> glox, ghix;  // ... replicated onto the luma grid
  std::vector<uint16_t> cbx, crx;    // chroma of one chroma row on the luma grid
  std::vector<int> cand;             // dirty chunks / candidate columns of one source row
  std::vector<float> acc;            // ring of output rows at source columns: [ring][3][astride]
  std::vector<int> ring_lo, ring_hi; // per ring row: source columns written
  std::vector<float*> rows;          // ring rows one source row feeds ...
  std::vector<float> ws;             // ... with its vertical weights
  std::vector<float> corr;           // [2][3][nx]: correction of the rows being finished
};

std::atomic<long long> g_gamut_candidates{0}, g_gamut_corrected{0};

// ---- clamp correction (Note [clamp before resampling]) ----
constexpr float kGamutMargin = 0.02f;  // luma sample units; far above float rounding of the map

// Conservative gamut bounds of n chroma samples (cb[i * cs], cr[i * cs]) as sample values:
// every luma sample Y with lo[i] <= Y <= hi[i] converts in gamut; empty: lo = tmax, hi = 0.
template <typename T, typename B>
ENGINE_ALWAYS_INLINE void gamut_bounds_impl(const T* cb, const T* cr, int cs, int n,
                                            const YuvToRgb& m, float tmax, B* __restrict lo,
                                            B* __restrict hi) {
  for (int i = 0; i < n; ++i) {
    float l, h;
    yuv_gamut_luma_interval(m, (float)cb[i * cs], (float)cr[i * cs], &l, &h);
    float L = ceilf(l + kGamutMargin), H = floorf(h - kGamutMargin);
    L = L < 0.0f ? 0.0f : L;
    H = H > tmax ? tmax : H;
    const bool empty = !(L <= H);
    lo[i] = empty ? (B)tmax : (B)(int)L;
    hi[i] = empty ? (B)0 : (B)(int)H;
  }
}

ENGINE_SIMD_CLONES void gamut_bounds_u8(const uint8_t* cb, const uint8_t* cr, int cs, int n,
                                        const YuvToRgb& m, uint8_t* lo, uint8_t* hi) {
  gamut_bounds_impl<uint8_t, uint8_t>(cb, cr, cs, n, m, 255.0f, lo, hi);
}
ENGINE_SIMD_CLONES void gamut_bounds_u16(const uint16_t* cb, const uint16_t* cr, int cs, int n,
                                         const YuvToRgb& m, uint16_t* lo, uint16_t* hi) {
  gamut_bounds_impl<uint16_t, uint16_t>(cb, cr, cs, n, m, 65535.0f, lo, hi);
}

template <typename T>
ENGINE_ALWAYS_INLINE void replicate2_impl(const T* __restrict s, int n, T* __restrict d) {
  for (int i = 0; i < n; ++i) {
    d[2 * i] = s[i];
    d[2 * i + 1] = s[i];
  }
}
ENGINE_SIMD_CLONES void replicate2(const uint16_t* s, int n, uint16_t* d) { replicate2_impl(s, n, d); }
#if ENGINE_HAVE_AVX2_KERNELS
ENGINE_AVX2_TARGET void replicate2_u8_avx2(const uint8_t* s, int n, uint8_t* d) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 2 * i),
                        _mm256_set_m128i(_mm_unpackhi_epi8(v, v), _mm_unpacklo_epi8(v, v)));
  }
  replicate2_impl(s + i, n - i, d + 2 * i);
}
#endif
// the auto-vectoriser leaves the byte interleave scalar
void replicate2(const uint8_t* s, int n, uint8_t* d) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) return replicate2_u8_avx2(s, n, d);
#endif
  replicate2_impl(s, n, d);
}

// Columns i < n with y[i] outside [lo[i], hi[i]] -> idx; returns their count. Blocks of 64 are
// tested with a vectorised any-reduction first (nearly all of them are clean).
template <typename T>
ENGINE_ALWAYS_INLINE int gamut_candidates_impl(const T* __restrict y, const T* __restrict lo,
                                               const T* __restrict hi, int n, int* idx) {
  int cnt = 0, i = 0;
  for (; i + 64 <= n; i += 64) {
    T any = 0;
    for (int j = 0; j < 64; ++j)
      any |= (T)(((T)(y[i + j] < lo[i + j]) | (T)(y[i + j] > hi[i + j])));
    if (!any) continue;
    for (int j = i; j < i + 64; ++j)
      if (y[j] < lo[j] || y[j] > hi[j]) idx[cnt++] = j;
  }
  for (; i < n; ++i)
    if (y[i] < lo[i] || y[i] > hi[i]) idx[cnt++] = i;
  return cnt;
}
ENGINE_SIMD_CLONES int gamut_candidates_u8(const uint8_t* y, const uint8_t* lo, const uint8_t* hi,
                                           int n, int* idx) {
  return gamut_candidates_impl(y, lo, hi, n, idx);
}
ENGINE_SIMD_CLONES int gamut_candidates_u16(const uint16_t* y, const uint16_t* lo,
                                            const uint16_t* hi, int n, int* idx) {
  return gamut_candidates_impl(y, lo, hi, n, idx);
}

#if ENGINE_HAVE_AVX2_KERNELS
// AVX2 versions of the 8-bit detection: bounds of 16 chroma samples per step (float, packed to
// bytes with saturation, replicated to luma resolution in the same step when sub == 2), and the
// luma compare as unsigned byte min/max + movemask, candidates extracted bit by bit.
ENGINE_AVX2_TARGET void gamut_bounds_u8_avx2(const uint8_t* cb, const uint8_t* cr, int n,
                                             const YuvToRgb& m, int sub, uint8_t* lo, uint8_t* hi) {
  const float inv = 1.0f / m.y_gain;
  // lo_c = a_c cb + b_c cr + e_c (luma units); hi_c = lo_c + 255 / y_gain
  __m256 A[3], Bv[3], E[3];
  for (int c = 0; c < 3; ++c) {
    A[c] = _mm256_set1_ps(-m.cb_gain[c] * inv);
    Bv[c] = _mm256_set1_ps(-m.cr_gain[c] * inv);
    E[c] = _mm256_set1_ps(-m.bias[c] * inv);
  }
  const __m256 span = _mm256_set1_ps(255.0f * inv);
  const __m256 mg = _mm256_set1_ps(kGamutMargin);
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i Li[2], Hi[2];
    for (int h = 0; h < 2; ++h) {
      const __m256 u = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cb + i + 8 * h))));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cr + i + 8 * h))));
      __m256 l0 = _mm256_fmadd_ps(A[0], u, _mm256_fmadd_ps(Bv[0], v, E[0]));
      __m256 l1 = _mm256_fmadd_ps(A[1], u, _mm256_fmadd_ps(Bv[1], v, E[1]));
      __m256 l2 = _mm256_fmadd_ps(A[2], u, _mm256_fmadd_ps(Bv[2], v, E[2]));
      __m256 L = _mm256_max_ps(_mm256_max_ps(l0, l1), l2);
      __m256 H = _mm256_add_ps(_mm256_min_ps(_mm256_min_ps(l0, l1), l2), span);
      L = _mm256_max_ps(_mm256_ceil_ps(_mm256_add_ps(L, mg)), zero);
      H = _mm256_min_ps(_mm256_floor_ps(_mm256_sub_ps(H, mg)), top);
      const __m256 empty = _mm256_cmp_ps(L, H, _CMP_NLE_UQ);  // !(L <= H)
      L = _mm256_blendv_ps(L, top, empty);
      H = _mm256_blendv_ps(H, zero, empty);
      Li[h] = _mm256_cvtps_epi32(L);
      Hi[h] = _mm256_cvtps_epi32(H);
    }
    // 2 x 8 int32 -> 16 bytes in order
    const __m256i lw = _mm256_permute4x64_epi64(_mm256_packs_epi32(Li[0], Li[1]), 0xD8);
    const __m256i hw = _mm256_permute4x64_epi64(_mm256_packs_epi32(Hi[0], Hi[1]), 0xD8);
    const __m128i lb = _mm_packus_epi16(_mm256_castsi256_si128(lw), _mm256_extracti128_si256(lw, 1));
    const __m128i hb = _mm_packus_epi16(_mm256_castsi256_si128(hw), _mm256_extracti128_si256(hw, 1));
    if (sub == 2) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + 2 * i),
                          _mm256_set_m128i(_mm_unpackhi_epi8(lb, lb), _mm_unpacklo_epi8(lb, lb)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + 2 * i),
                          _mm256_set_m128i(_mm_unpackhi_epi8(hb, hb), _mm_unpacklo_epi8(hb, hb)));
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(lo + i), lb);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(hi + i), hb);
    }
  }
  if (i < n) {
    uint8_t tl[16], th[16];
    gamut_bounds_impl<uint8_t, uint8_t>(cb + i, cr + i, 1, n - i, m, 255.0f, tl, th);
    for (int j = 0; j < n - i; ++j)
      for (int r = 0; r < sub; ++r) {
        lo[(i + j) * sub + r] = tl[j];
        hi[(i + j) * sub + r] = th[j];
      }
  }
}

// Full 32-column chunks c < n / 32 of a luma row holding a pixel outside [lo, hi] -> chunks;
// returns their count and adds the number of such pixels to *cand. The n % 32 tail is left to
// the caller (a whole chunk there could read past the plane).
ENGINE_AVX2_TARGET int dirty_chunks_u8_avx2(const uint8_t* y, const uint8_t* lo, const uint8_t* hi,
                                            int n, int* chunks, long long* cand) {
  int cnt = 0;
  long long pixels = 0;
  for (int c = 0; c < n / 32; ++c) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * c));
    const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + 32 * c));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + 32 * c));
    const __m256i in = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_max_epu8(v, l), v),
                                        _mm256_cmpeq_epi8(_mm256_min_epu8(v, h), v));
    const uint32_t out = ~(uint32_t)_mm256_movemask_epi8(in);
    if (out) {
      chunks[cnt++] = c;
      pixels += __builtin_popcount(out);
    }
  }
  *cand += pixels;
  return cnt;
}

// For each listed 32-column chunk: delta = clamp(rgb) - rgb of its pixels (the exact float
// conversion of luma y and chroma cb, cr given on the luma grid; zero in gamut), added with
// weight ws[r] into each planar [3][astride] row acc[r]. Returns the pixels with delta != 0.
ENGINE_AVX2_TARGET long long scatter_chunks_u8_avx2(const uint8_t* y, const uint8_t* cb,
                                                    const uint8_t* cr, const int* chunks, int nch,
                                                    const YuvToRgb& m, float* const* acc,
                                                    const float* ws, int nr, size_t astride) {
  const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 yg = _mm256_set1_ps(m.y_gain);
  __m256 cbg[3], crg[3], bias[3];
  for (int c = 0; c < 3; ++c) {
    cbg[c] = _mm256_set1_ps(m.cb_gain[c]);
    crg[c] = _mm256_set1_ps(m.cr_gain[c]);
    bias[c] = _mm256_set1_ps(m.bias[c]);
  }
  long long corrected = 0;
  for (int k = 0; k < nch; ++k) {
    const int s = 32 * chunks[k];
    __m256 d[3][4];
    for (int q = 0; q < 4; ++q) {
      const int i = s + 8 * q;
      const __m256 Y = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(y + i))));
      const __m256 U = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cb + i))));
      const __m256 V = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(cr + i))));
      for (int c = 0; c < 3; ++c) {
        // same association as yuv_to_rgb: ((yg Y + cbg Cb) + crg Cr) + bias
        const __m256 v = _mm256_add_ps(_mm256_fmadd_ps(crg[c], V, _mm256_fmadd_ps(yg, Y, _mm256_mul_ps(cbg[c], U))), bias[c]);
        d[c][q] = _mm256_sub_ps(_mm256_min_ps(_mm256_max_ps(v, zero), top), v);
      }
      const __m256 any = _mm256_andnot_ps(sign, _mm256_or_ps(_mm256_or_ps(d[0][q], d[1][q]), d[2][q]));
      corrected += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(any, zero, _CMP_NEQ_UQ)));
    }
    for (int r = 0; r < nr; ++r) {
      const __m256 w = _mm256_set1_ps(ws[r]);
      for (int c = 0; c < 3; ++c) {
        float* p = acc[r] + (size_t)c * astride + s;
        for (int q = 0; q < 4; ++q)
          _mm256_storeu_ps(p + 8 * q, _mm256_fmadd_ps(w, d[c][q], _mm256_loadu_ps(p + 8 * q)));
      }
    }
  }
  return corrected;
}
#endif

// Clamp correction of one row block, incremental with the row loop: advance(r) detects the
// out-of-gamut pixels of the luma source rows below r not yet handled and adds their deltas,
// weighted vertically, into the rows of a ring of output rows kept at source-column resolution;
// row(iy) resamples output row iy's ring row horizontally (luma taps) and recycles it.
struct GamutPass {
  const FrameDesc* f;
  const TapTable* ty;
  const TapTable* tx;
  const YuvToRgb* m;
  ThreadBuffers* buf;
  int iy0, iy1, nx, n;    // block rows (table indices), output columns, source columns
  int next_row, row_end;  // next luma source row to detect, end of the block's rows
  int last_cy = -1;
  bool chroma_ready = false;  // buf->cbx/crx hold chroma row last_cy
  int cx0, ncx, xoff;     // chroma columns [cx0, cx0 + ncx); luma src_lo - cx0 * sub_x
  int ring;               // ring rows: output rows open at once (see init)
  size_t astride;         // floats per channel of a ring row (zero padded past n)
  long long cand = 0, corrected = 0;

  void init(const FrameWork& fw, const YuvToRgb& mm, ThreadBuffers& b, int i0, int i1) {
    f = fw.frame; ty = fw.ty[0]; tx = fw.tx[0]; m = &mm; buf = &b; iy0 = i0; iy1 = i1;
    nx = tx->hi - tx->lo;
    n = tx->src_hi - tx->src_lo;
    next_row = ty->first[iy0];
    row_end = ty->first[iy1 - 1] + ty->K;
    const int sx = f->planes[1].sub_x;
    cx0 = tx->src_lo / sx;
    ncx = (tx->src_hi - 1) / sx + 1 - cx0;
    xoff = tx->src_lo - cx0 * sx;
    const size_t nl = (size_t)ncx * sx + 64;
    if (b.glo.size() < (size_t)ncx + 64) { b.glo.resize(ncx + 64); b.ghi.resize(ncx + 64); }
    if (b.glox.size() < nl) { b.glox.resize(nl); b.ghix.resize(nl); b.cbx.resize(nl); b.crx.resize(nl); }
    if (b.cand.size() < (size_t)n + 64) b.cand.resize(n + 64);
    // Rows are finished in order (in pairs) after advance(first[row + 1] + K), so when row iy is
    // the oldest open one, the rows written reach at most inv_hi of that window's last source row.
    ring = 1;
    for (int iy = iy0; iy < iy1; ++iy) {
      const int last = std::min(ty->first[std::min(iy + 1, iy1 - 1)] + ty->K, row_end) - 1;
      ring = std::max(ring, std::min(ty->inv_hi[last - ty->src_lo], iy1) - iy);
    }
    astride = (size_t)(n + 31) / 32 * 32 + 16;  // hpass_dot reads up to 16 past a window
    // the ring is all zero between blocks (row() clears what it used), so growing keeps that
    if (b.acc.size() < (size_t)ring * 3 * astride) b.acc.assign((size_t)ring * 3 * astride, 0.0f);
    b.ring_lo.assign(ring, INT32_MAX);
    b.ring_hi.assign(ring, 0);
    if (b.corr.size() < (size_t)2 * 3 * nx) b.corr.resize((size_t)2 * 3 * nx);
  }

  float* ring_row(int iy) const { return &buf->acc[(size_t)(iy % ring) * 3 * astride]; }

  // Correction of output row iy (table index) as RGB [3][nx] in corr slot `which`, or null when
  // no out-of-gamut pixel reaches it. Every source row of its window must have been advanced.
  const float* row(int iy, int which) {
    const int s = iy % ring;
    const int lo = buf->ring_lo[s], hi = buf->ring_hi[s];
    if (lo >= hi) return nullptr;
    float* a = ring_row(iy);
    float* out = &buf->corr[(size_t)which * 3 * nx];
    for (int c = 0; c < 3; ++c) {
      hpass1(a + c * astride, *tx, out + (size_t)c * nx);
      std::fill(a + c * astride + lo, a + c * astride + hi, 0.0f);
    }
    buf->ring_lo[s] = INT32_MAX;
    buf->ring_hi[s] = 0;
    return out;
  }

  template <typename T>
  void bounds_row(int cy) {
    const PlaneDesc& pc = f->planes[1];
    const T* cb;
    const T* cr;
    int cs = 1;
    chroma_rows<T>(cy, &cb, &cr, &cs);
    cb += (size_t)cx0 * cs;
    cr += (size_t)cx0 * cs;
    T* lo = reinterpret_cast<T*>(buf->glo.data());
    T* hi = reinterpret_cast<T*>(buf->ghi.data());
    T* lox = reinterpret_cast<T*>(buf->glox.data());
    T* hix = reinterpret_cast<T*>(buf->ghix.data());
    const bool rep = pc.sub_x == 2;
#if ENGINE_HAVE_AVX2_KERNELS
    if (sizeof(T) == 1 && cs == 1 && g_use_avx2) {
      gamut_bounds_u8_avx2(reinterpret_cast<const uint8_t*>(cb), reinterpret_cast<const uint8_t*>(cr), ncx, *m,
                           pc.sub_x, reinterpret_cast<uint8_t*>(lox), reinterpret_cast<uint8_t*>(hix));
      return;
    }
#endif
    if (sizeof(T) == 1) {
      gamut_bounds_u8(reinterpret_cast<const uint8_t*>(cb), reinterpret_cast<const uint8_t*>(cr), cs, ncx, *m,
                      reinterpret_cast<uint8_t*>(rep ? lo : lox), reinterpret_cast<uint8_t*>(rep ? hi : hix));
      if (rep) {
        replicate2(reinterpret_cast<uint8_t*>(lo), ncx, reinterpret_cast<uint8_t*>(lox));
        replicate2(reinterpret_cast<uint8_t*>(hi), ncx, reinterpret_cast<uint8_t*>(hix));
      }
    } else {
      gamut_bounds_u16(reinterpret_cast<const uint16_t*>(cb), reinterpret_cast<const uint16_t*>(cr), cs, ncx, *m,
                       reinterpret_cast<uint16_t*>(rep ? lo : lox), reinterpret_cast<uint16_t*>(rep ? hi : hix));
      if (rep) {
        replicate2(reinterpret_cast<uint16_t*>(lo), ncx, reinterpret_cast<uint16_t*>(lox));
        replicate2(reinterpret_cast<uint16_t*>(hi), ncx, reinterpret_cast<uint16_t*>(hix));
      }
    }
  }

  // Cb and Cr of chroma row cy (sample i at [i * cs]).
  template <typename T>
  void chroma_rows(int cy, const T** cb, const T** cr, int* cs) const {
    const PlaneDesc& pc = f->planes[1];
    const char* crow = static_cast<const char*>(pc.data) + (long long)cy * pc.row_stride;
    *cb = reinterpret_cast<const T*>(crow);
    if (f->format == kFmtNV12) {
      *cr = *cb + 1;
      *cs = 2;
    } else {
      const PlaneDesc& pv = f->planes[2];
      *cr = reinterpret_cast<const T*>(static_cast<const char*>(pv.data) + (long long)cy * pv.row_stride);
      *cs = 1;
    }
  }

  // buf->cbx / crx: chroma row last_cy on the luma grid (index = luma column - src_lo + xoff).
  template <typename T>
  void chroma_on_luma_grid() {
    if (chroma_ready) return;
    chroma_ready = true;
    const T* cb;
    const T* cr;
    int cs;
    chroma_rows<T>(last_cy, &cb, &cr, &cs);
    const int sx = f->planes[1].sub_x;
    T* u = reinterpret_cast<T*>(buf->cbx.data());
    T* v = reinterpret_cast<T*>(buf->crx.data());
    if (cs == 1 && sx == 2) {  // planar 4:2:0 / 4:2:2, the common case: SIMD replication
      replicate2(cb + cx0, ncx, u);
      replicate2(cr + cx0, ncx, v);
      return;
    }
    for (int i = 0; i < ncx; ++i)
      for (int r = 0; r < sx; ++r) {
        u[i * sx + r] = cb[(size_t)(cx0 + i) * cs];
        v[i * sx + r] = cr[(size_t)(cx0 + i) * cs];
      }
  }

  template <typename T>
  void advance_t(int upto) {
    if (upto > row_end) upto = row_end;
    const PlaneDesc& py = f->planes[0];
    const int sub_y = f->planes[1].sub_y;
    const int Ky = ty->K;
    std::vector<float*>& rows = buf->rows;
    std::vector<float>& ws = buf->ws;
    if (rows.size() < (size_t)ring) { rows.resize(ring); ws.resize(ring); }
    for (; next_row < upto; ++next_row) {
      const int sy = next_row;
      // output rows this source row feeds, with its vertical weight in each
      const int sr = sy - ty->src_lo;
      int nr = 0;
      const int a = std::max(ty->inv_lo[sr], iy0), b = std::min(ty->inv_hi[sr], iy1);
      for (int iy = a; iy < b; ++iy) {
        const float w = ty->w[(size_t)iy * Ky + (sy - ty->first[iy])];
        if (w == 0.0f) continue;
        rows[nr] = ring_row(iy);
        ws[nr++] = w;
      }
      if (nr == 0) continue;
      const int cy = sy / sub_y;
      if (cy != last_cy) {
        bounds_row<T>(cy);
        last_cy = cy;
        chroma_ready = false;
      }
      const T* yrow = reinterpret_cast<const T*>(static_cast<const char*>(py.data) + (long long)sy * py.row_stride) + tx->src_lo;
      const T* lox = reinterpret_cast<const T*>(buf->glox.data()) + xoff;
      const T* hix = reinterpret_cast<const T*>(buf->ghix.data()) + xoff;
      int cmin = INT32_MAX, cmax = 0;  // source columns written
      int tail = 0;                    // first column left to the scalar path
#if ENGINE_HAVE_AVX2_KERNELS
      if (sizeof(T) == 1 && g_use_avx2) {
        int* chunks = buf->cand.data();
        const int nch = dirty_chunks_u8_avx2(reinterpret_cast<const uint8_t*>(yrow), reinterpret_cast<const uint8_t*>(lox),
                                             reinterpret_cast<const uint8_t*>(hix), n, chunks, &cand);
        if (nch) {
          chroma_on_luma_grid<T>();
          corrected += scatter_chunks_u8_avx2(
              reinterpret_cast<const uint8_t*>(yrow), reinterpret_cast<const uint8_t*>(buf->cbx.data()) + xoff,
              reinterpret_cast<const uint8_t*>(buf->crx.data()) + xoff, chunks, nch, *m, rows.data(), ws.data(), nr,
              astride);
          cmin = 32 * chunks[0];
          cmax = 32 * chunks[nch - 1] + 32;
        }
        tail = n / 32 * 32;
      }
#endif
      // scalar path: the columns [tail, n)
      int* idx = buf->cand.data();
      int nc;
      if (sizeof(T) == 1)
        nc = gamut_candidates_u8(reinterpret_cast<const uint8_t*>(yrow) + tail, reinterpret_cast<const uint8_t*>(lox) + tail,
                                 reinterpret_cast<const uint8_t*>(hix) + tail, n - tail, idx);
      else
        nc = gamut_candidates_u16(reinterpret_cast<const uint16_t*>(yrow) + tail, reinterpret_cast<const uint16_t*>(lox) + tail,
                                  reinterpret_cast<const uint16_t*>(hix) + tail, n - tail, idx);
      if (nc) {
        cand += nc;
        chroma_on_luma_grid<T>();
        const T* u = reinterpret_cast<const T*>(buf->cbx.data()) + xoff;
        const T* v = reinterpret_cast<const T*>(buf->crx.data()) + xoff;
        for (int k = 0; k < nc; ++k) {
          const int s = tail + idx[k];
          float d[3];
          if (!yuv_clamp_delta(*m, (float)yrow[s], (float)u[s], (float)v[s], d)) continue;
          ++corrected;
          for (int r = 0; r < nr; ++r)
            for (int c = 0; c < 3; ++c) rows[r][(size_t)c * astride + s] += ws[r] * d[c];
          cmin = std::min(cmin, s);
          cmax = std::max(cmax, s + 1);
        }
      }
      if (cmin >= cmax) continue;
      for (int iy = a; iy < b; ++iy) {
        const int s = iy % ring;
        buf->ring_lo[s] = std::min(buf->ring_lo[s], cmin);
        buf->ring_hi[s] = std::max(buf->ring_hi[s], cmax);
      }
    }
  }

  void advance(int upto) {
    if (f->bit_depth > 8) advance_t<uint16_t>(upto);
    else advance_t<uint8_t>(upto);
  }
  void finish() {
    if (cand) g_gamut_candidates.fetch_add(cand, std::memory_order_relaxed);
    if (corrected) g_gamut_corrected.fetch_add(corrected, std::memory_order_relaxed);
  }
};

// hpass + colour conversion + normalisation + store of output row y from the vertical-pass
// rows vt[p] of every plane.
void finish_row(const FrameWork& fw, const PreprocessArgs& a, int b, int y, float* const vt[3],
                void* out, ThreadBuffers& buf, const YuvToRgb& m, const float* corr) {
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
    convert_yuv(buf.hrow[0].data(), uv, uv + 1, 2, nx, m, a.norm, a.bgr_out, corr, rgb[0], rgb[1],
                rgb[2]);
  } else {
    convert_yuv(buf.hrow[0].data(), buf.hrow[1].data(), buf.hrow[2].data(), 1, nx, m, a.norm,
                a.bgr_out, corr, rgb[0], rgb[1], rgb[2]);
  }
  if (a.fp16) store_row<uint16_t>(out, a, b, y, crgb, x_lo, x_hi);
  else store_row<float>(out, a, b, y, crgb, x_lo, x_hi);
}

void process_rows(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1, void* out,
                  ThreadBuffers& buf) {
  const FrameDesc& f = *fw.frame;
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

  // clamp correction over the valid rows of this block (Note [clamp before resampling])
  const int vy0 = std::max(y0, ty0.lo), vy1 = std::min(y1, ty0.hi);
  const bool gamut = a.clamp_source && is_yuv(f.format) && nx > 0 && vy1 > vy0;
  GamutPass gp;
  if (gamut) gp.init(fw, m, buf, vy0 - ty0.lo, vy1 - ty0.lo);

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
    const float* c0 = nullptr;
    const float* c1 = nullptr;
    if (gamut) {
      const int iy = y - ty0.lo, il = pair ? iy + 1 : iy;
      gp.advance(ty0.first[il] + ty0.K);  // every source row of the windows being finished
      c0 = gp.row(iy, 0);
      if (pair) c1 = gp.row(iy + 1, 1);
    }
    finish_row(fw, a, b, y, vt, out, buf, m, c0);
    if (pair) {
      finish_row(fw, a, b, y + 1, vt2, out, buf, m, c1);
      ++y;
    }
  }
  if (gamut) gp.finish();
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

py::tuple clamp_correction_stats(bool reset) {
  const long long c = reset ? g_gamut_candidates.exchange(0) : g_gamut_candidates.load();
  const long long k = reset ? g_gamut_corrected.exchange(0) : g_gamut_corrected.load();
  return py::make_tuple(c, k);
}

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
