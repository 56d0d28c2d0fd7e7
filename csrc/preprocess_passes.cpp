// preprocess_passes.cpp - the passes both paths of the fused preprocessing op share (declared in
// preprocess_passes.h): tap tables, vertical and horizontal resampling, colour conversion +
// normalisation, stores.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "engine/preprocess.h"
#include "preprocess_passes.h"
#include "simd.h"

namespace engine_ops {
namespace detail {

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
  t.nz_lo.assign(n, 0);
  t.nz_hi.assign(n, 0);
  for (int i = 0; i < n; ++i) nonzero_taps(&t.w[(size_t)i * t.K], t.K, &t.nz_lo[i], &t.nz_hi[i]);
  t.KP = t.K <= 8 ? 8 : (t.K <= 16 ? 16 : 0);
  if (t.KP) {
    t.wp.assign((size_t)n * t.KP, 0.0f);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < t.K; ++j) t.wp[(size_t)i * t.KP + j] = t.w[(size_t)i * t.K + j];
  }
}

namespace {

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

}  // namespace

#if ENGINE_HAVE_AVX2_KERNELS
// Two consecutive output rows in one sweep: their tap windows overlap (9 taps, stride ~4 source
// rows at 1080p -> 256), so each shared source row is loaded and converted once for both.
// Rows are given as the union window [r0, r0 + nr) with per-row weights wa / wb (0 = unused).
template <typename T>
ENGINE_AVX2_TARGET void vpass2_avx2(const unsigned char* base, long long stride, int nr,
                                    const float* wa, const float* wb, int n, float* ta,
                                    float* tb, const Prefetch& pf) {
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    if ((i & 63) == 0) pf.columns(i, 64);
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

template void vpass2_avx2<uint8_t>(const unsigned char*, long long, int, const float*,
                                   const float*, int, float*, float*, const Prefetch&);
template void vpass2_avx2<uint16_t>(const unsigned char*, long long, int, const float*,
                                    const float*, int, float*, float*, const Prefetch&);
#endif

// ENGINE_DISABLE_AVX2=1 forces the portable loops (tests compare both paths).
extern const bool g_use_avx2 = cpu_has_avx2_fma() && !std::getenv("ENGINE_DISABLE_AVX2");
extern const bool g_use_avx512 = g_use_avx2 && cpu_has_avx512() && !std::getenv("ENGINE_DISABLE_AVX512");

void vpass(int bps, const unsigned char* base, long long stride, int K, const float* w, int n,
           float* tmp) {
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) {
    if (bps == 1) return vpass_avx2<uint8_t>(base, stride, K, w, n, tmp);
    return vpass_avx2<uint16_t>(base, stride, K, w, n, tmp);
  }
#endif
  if (bps == 1) return vpass_u8_generic(base, stride, K, w, n, tmp);
  vpass_u16_generic(base, stride, K, w, n, tmp);
}

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

ENGINE_SIMD_CLONES void store_row_f32(void* out, const PreprocessArgs& a, int b, int y,
                                      const float* const rgb[3], int x_lo, int x_hi) {
  store_row_impl<float>(out, a, b, y, rgb, x_lo, x_hi);
}
ENGINE_SIMD_CLONES void store_row_f16(void* out, const PreprocessArgs& a, int b, int y,
                                      const float* const rgb[3], int x_lo, int x_hi) {
  store_row_impl<uint16_t>(out, a, b, y, rgb, x_lo, x_hi);
}

void store_pad_row(void* out, const PreprocessArgs& a, int b, int y) {
  const float* none[3] = {nullptr, nullptr, nullptr};
  if (a.fp16) store_row<uint16_t>(out, a, b, y, none, 0, 0);
  else store_row<float>(out, a, b, y, none, 0, 0);
}

}  // namespace detail
}  // namespace engine_ops
