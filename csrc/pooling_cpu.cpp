// pooling_cpu.cpp - host glue and CPU loops of masked_mean and segment_pool. See Note [pooling].
//
// Note [pooling CPU loops]
// Every output element gets the operations of the scalar element loops (and of the CUDA element
// functions in cuda/pooling_kernel.cuh) in the same order, so sums, means, max and window_max are
// bit-identical to them (normalize's sum of squares alone runs in 4 float64 lanes):
// float64 sums taken row by row (float32 x float32 products are exact in float64, so an FMA equals
// multiply-then-add), zero-weight rows skipped, the window_max running sum with its exact
// re-summation every 64 steps, fmax_nan for max. Only the loop nest changes, vectorised across D
// (4 float64 / 8 float32 lanes, GCC/Clang vector extensions compiled twice, Note [portable SIMD]):
// * sums (masked_mean, segment mean) and max stream the rows front to back, kRows at a time: per
//   group of 4 (8) dimensions the accumulator is loaded from a per-call buffer (float64 sums) or
//   from out (max), updated by the kRows rows in order in a register, stored back - sequential
//   reads the prefetcher follows, one accumulator store per kRows rows;
// * window_max keeps run and best of 16 dimensions in registers while the window slides down the
//   segment (no stores in the slide; measured faster than streaming rows through buffers).
// masked_mean lists the non-zero weights of a row once, so masked tokens are never read. The last
// D % 4 (D % 8) dimensions take the scalar loop. No heap allocation per row or segment.
#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/pooling.h"
#include "ops.h"
#include "simd.h"

namespace engine_ops {

using namespace engine;

namespace {

int omp_threads(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// Row sources of the weighted sums: the token rows of one batch item listed by index (the
// non-zero mask weights), or a contiguous run of rows (a segment).
struct ListedRows {
  const float* base;
  long long D;
  const long long* idx;
  ENGINE_ALWAYS_INLINE const float* operator()(long long k) const { return base + idx[k] * D; }
};
struct RunRows {
  const float* base;
  long long D;
  ENGINE_ALWAYS_INLINE const float* operator()(long long k) const { return base + k * D; }
};

#if ENGINE_HAVE_VEC8
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4l __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
using engine_simd::v8f;

// element-wise construction: GCC 12 compiles it to one vcvtps2pd ymm (AVX clone), where
// __builtin_convertvector of a loaded float32x4 takes two half-width conversions and an insert
ENGINE_ALWAYS_INLINE v4d load4d(const float* p) { return (v4d){p[0], p[1], p[2], p[3]}; }
ENGINE_ALWAYS_INLINE v4d splat4d(double w) { return (v4d){w, w, w, w}; }
ENGINE_ALWAYS_INLINE void store4d(double* p, v4d v) { memcpy(p, &v, sizeof(v)); }
ENGINE_ALWAYS_INLINE void store4f(float* p, v4d v) {
  const v4f f = __builtin_convertvector(v, v4f);
  memcpy(p, &f, sizeof(f));
}

// acc[d] = (kInit ? 0 : acc[d]) + sum over the R rows p[0 .. R) of w[r] * p[r][d] (w == nullptr:
// weights 1), for all d < D, rows in order: per dimension the FMA chain of the scalar loop, kept in
// a register over the R rows (m * x of two floats is exact in double: the FMA equals
// multiply-then-add).
template <int R, bool kWeighted, bool kInit>
ENGINE_ALWAYS_INLINE void add_rows(const float* const* p, const double* w, long long D, double* acc) {
  long long d = 0;
  v4d m[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) m[r] = splat4d(kWeighted ? w[r] : 1.0);
  for (; d + 4 <= D; d += 4) {
    v4d a = splat4d(0.0);
    if (!kInit) memcpy(&a, acc + d, sizeof(a));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (kWeighted)
        a += m[r] * load4d(p[r] + d);
      else
        a += load4d(p[r] + d);
    }
    store4d(acc + d, a);
  }
  for (; d < D; ++d) {
    double a = kInit ? 0.0 : acc[d];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a += (kWeighted ? w[r] : 1.0) * (double)p[r][d];
    acc[d] = a;
  }
}
#endif

// acc[0 .. D) = sum_k w[k] * rows(k)[d] (w == nullptr: weights 1), float64, k ascending; the rows
// are read kRows at a time front to back (sequential streams for the prefetcher).
constexpr int kRows = 4;
template <bool kWeighted, class Rows>
ENGINE_ALWAYS_INLINE void sum_rows_impl(const Rows& rows, const double* w, long long n, long long D,
                                        double* acc) {
  long long k = 0;
#if ENGINE_HAVE_VEC8
  const float* p[kRows];
  if (n >= kRows) {
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) p[r] = rows(r);
    add_rows<kRows, kWeighted, true>(p, w, D, acc);
    k = kRows;
  } else if (n > 0) {
    p[0] = rows(0);
    add_rows<1, kWeighted, true>(p, w, D, acc);
    k = 1;
  }
  for (; k + kRows <= n; k += kRows) {
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) p[r] = rows(k + r);
    add_rows<kRows, kWeighted, false>(p, kWeighted ? w + k : nullptr, D, acc);
  }
  for (; k < n; ++k) {
    p[0] = rows(k);
    add_rows<1, kWeighted, false>(p, kWeighted ? w + k : nullptr, D, acc);
  }
#endif
  if (k == 0)
    for (long long d = 0; d < D; ++d) acc[d] = 0.0;
  for (; k < n; ++k) {
    const float* q = rows(k);
    const double m = kWeighted ? w[k] : 1.0;
    for (long long d = 0; d < D; ++d) acc[d] += m * (double)q[d];
  }
}

// masked mean of one batch item: acc = sum over the listed tokens, then out (Note [pooling]).
ENGINE_SIMD_CLONES void masked_mean_row(const float* xb, const long long* idx, const double* w,
                                        long long n, double msum, long long D, bool normalize,
                                        double* acc, float* out) {
  sum_rows_impl<true>(ListedRows{xb, D, idx}, w, n, D, acc);
  const double inv = 1.0 / safe_denominator(msum);
  long long d = 0;
  double ss = 0.0;
#if ENGINE_HAVE_VEC8
  v4d ssv = splat4d(0.0);
  const v4d invv = splat4d(inv);
  for (; d + 4 <= D; d += 4) {
    v4d a;
    memcpy(&a, acc + d, sizeof(a));
    a *= invv;
    store4d(acc + d, a);
    ssv += a * a;
  }
  ss = (ssv[0] + ssv[1]) + (ssv[2] + ssv[3]);
#endif
  for (; d < D; ++d) {
    acc[d] *= inv;
    ss += acc[d] * acc[d];
  }
  const double sc = normalize ? l2_scale(ss) : 1.0;
  d = 0;
#if ENGINE_HAVE_VEC8
  const v4d scv = splat4d(sc);
  for (; d + 4 <= D; d += 4) {
    v4d a;
    memcpy(&a, acc + d, sizeof(a));
    store4f(out + d, a * scv);
  }
#endif
  for (; d < D; ++d) out[d] = (float)(acc[d] * sc);
}

// mean of rows xa[0 .. L) (L >= 1): out[d] = (float)(sum / L).
ENGINE_SIMD_CLONES void segment_mean_rows(const float* xa, long long L, long long D, double* acc,
                                          float* out) {
  sum_rows_impl<false>(RunRows{xa, D}, nullptr, L, D, acc);
  const double l = (double)L;
  long long d = 0;
#if ENGINE_HAVE_VEC8
  const v4d lv = splat4d(l);
  for (; d + 4 <= D; d += 4) {
    v4d a;
    memcpy(&a, acc + d, sizeof(a));
    store4f(out + d, a / lv);
  }
#endif
  for (; d < D; ++d) out[d] = (float)(acc[d] / l);
}

#if ENGINE_HAVE_VEC8
ENGINE_ALWAYS_INLINE v8f fmax_nan8(v8f a, v8f b) {  // fmax_nan (pooling.h) per lane
  const v8i keep = (a != a) | (a > b);
  return keep ? a : b;
}

// out[d] = fmax_nan(out[d], p[0][d], ..., p[R-1][d]) for all d < D, rows in order.
template <int R>
ENGINE_ALWAYS_INLINE void max_rows(const float* const* p, long long D, float* out) {
  long long d = 0;
  for (; d + 8 <= D; d += 8) {
    v8f m = engine_simd::loadu(out + d);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) m = fmax_nan8(m, engine_simd::loadu(p[r] + d));
    engine_simd::storeu(out + d, m);
  }
  for (; d < D; ++d) {
    float m = out[d];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) m = fmax_nan(m, p[r][d]);
    out[d] = m;
  }
}
#endif

// per-dimension fmax_nan over rows xa[0 .. L) (L >= 1), in row order (rows kRows at a time front
// to back, the running maximum in out).
ENGINE_SIMD_CLONES void segment_max_rows(const float* xa, long long L, long long D, float* out) {
  std::copy(xa, xa + D, out);
  long long i = 1;
#if ENGINE_HAVE_VEC8
  const float* p[kRows];
  for (; i + kRows <= L; i += kRows) {
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) p[r] = xa + (i + r) * D;
    max_rows<kRows>(p, D, out);
  }
  for (; i < L; ++i) {
    p[0] = xa + i * D;
    max_rows<1>(p, D, out);
  }
#endif
  for (; i < L; ++i)
    for (long long d = 0; d < D; ++d) out[d] = fmax_nan(out[d], xa[i * D + d]);
}

#if ENGINE_HAVE_VEC8
// window_max over rows xa[0 .. L), L > W (Note [pooling]), dimensions d0 .. d0 + 4 NV: per lane the
// scalar loop's float64 running sum of the window, re-summed exactly every 64 steps, and its
// maximum, both held in registers while the window slides down the rows (a slice of D at a time
// beats streaming whole rows through run / best buffers here: no stores in the slide).
template <int NV>
ENGINE_ALWAYS_INLINE void window_max_block(const float* xa, long long L, long long W, long long D,
                                           long long d0, float* out) {
  const float* xd = xa + d0;
  v4d run[NV], best[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) run[j] = splat4d(0.0);
  for (long long i = 0; i < W; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) run[j] += load4d(xd + i * D + 4 * j);
  }
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) best[j] = run[j];
  for (long long j0 = 1; j0 + W <= L; ++j0) {
    if ((j0 & 63) == 0) {
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) run[j] = splat4d(0.0);
      for (long long i = j0; i < j0 + W; ++i) {
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) run[j] += load4d(xd + i * D + 4 * j);
      }
    } else {
      const float* pa = xd + (j0 + W - 1) * D;
      const float* ps = xd + (j0 - 1) * D;
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) run[j] += load4d(pa + 4 * j) - load4d(ps + 4 * j);
    }
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const v4l take = (run[j] > best[j]) | (run[j] != run[j]);
      best[j] = take ? run[j] : best[j];
    }
  }
  const v4d wd = splat4d((double)W);
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) store4f(out + d0 + 4 * j, best[j] / wd);
}
#endif
ENGINE_SIMD_CLONES void segment_window_max_rows(const float* xa, long long L, long long W,
                                                long long D, float* out) {
  long long d0 = 0;
#if ENGINE_HAVE_VEC8
  for (; d0 + 16 <= D; d0 += 16) window_max_block<4>(xa, L, W, D, d0, out);
  for (; d0 + 4 <= D; d0 += 4) window_max_block<1>(xa, L, W, D, d0, out);
#endif
  for (long long d = d0; d < D; ++d) {
    const float* xd = xa + d;
    double run = 0.0;
    for (long long i = 0; i < W; ++i) run += xd[i * D];
    double best = run;
    for (long long j = 1; j + W <= L; ++j) {
      if ((j & 63) == 0) {
        run = 0.0;
        for (long long i = j; i < j + W; ++i) run += xd[i * D];
      } else {
        run += (double)xd[(j + W - 1) * D] - (double)xd[(j - 1) * D];
      }
      if (run > best || run != run) best = run;
    }
    out[d] = (float)(best / (double)W);
  }
}

}  // namespace

void masked_mean(py::array_t<float> out, py::array_t<float> x, py::array_t<float> mask,
                 bool normalize, int threads) {
  if (x.ndim() != 3) fail("x must be (batch, tokens, dim)");               // (B, T, D)
  if (mask.ndim() != 2) fail("mask must be (batch, tokens)");              // (B, T)
  if (out.ndim() != 2) fail("out must be (batch, dim)");                   // (B, D)
  const long long B = x.shape(0), T = x.shape(1), D = x.shape(2);
  if (mask.shape(0) != B || mask.shape(1) != T) fail("mask shape must match x[:, :, 0]");
  if (out.shape(0) != B || out.shape(1) != D) fail("out shape must be (batch, dim)");
  // the loops index raw rows: require C order (engine.ops.pooling passes contiguous arrays)
  auto c_order = [](const py::array& a) {
    return (a.flags() & py::array::c_style) != 0;
  };
  if (!c_order(x) || !c_order(mask) || !c_order(out)) fail("x, mask and out must be C-contiguous");
  if (B == 0 || D == 0) return;
  const float* xp = x.data();
  const float* mp = mask.data();
  float* op = out.mutable_data();
  py::gil_scoped_release nogil;
#ifdef _OPENMP
#pragma omp parallel num_threads(omp_threads(threads)) if (B > 1)
#endif
  {
    // per thread, once per call: the listed tokens of a row, their weights, the float64 sums
    std::vector<long long> idx((size_t)T);
    std::vector<double> w((size_t)T), acc((size_t)D);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (long long b = 0; b < B; ++b) {
      const float* mb = mp + b * T;
      long long n = 0;
      double msum = 0.0;
      for (long long t = 0; t < T; ++t) {
        const double m = mb[t];
        if (m == 0.0) continue;  // a zero weight skips its row (NaN / inf there do not leak in)
        msum += m;
        idx[n] = t;
        w[n++] = m;
      }
      masked_mean_row(xp + b * T * D, idx.data(), w.data(), n, msum, D, normalize, acc.data(),
                      op + b * D);
    }
  }
}

void segment_pool(py::array_t<float> out, py::array_t<float> x, py::array_t<long long> offsets,
                  int mode, int window, int threads) {
  if (x.ndim() != 2) fail("x must be (rows, dim)");                        // (N, D)
  if (offsets.ndim() != 1 || offsets.shape(0) < 1) fail("offsets must be (segments + 1,)");
  if (out.ndim() != 2) fail("out must be (segments, dim)");                // (S, D)
  const long long N = x.shape(0), D = x.shape(1), S = offsets.shape(0) - 1;
  if (out.shape(0) != S || out.shape(1) != D) fail("out shape must be (segments, dim)");
  if (mode < 0 || mode > 2) fail("mode must be 0 (mean), 1 (max) or 2 (window_max)");
  if (mode == 2 && window < 1) fail("window must be >= 1");
  auto ofs = offsets.unchecked<1>();
  for (long long s = 0; s <= S; ++s) {
    if (ofs(s) < 0 || ofs(s) > N) fail("offsets must lie in [0, rows]");
    if (s > 0 && ofs(s) < ofs(s - 1)) fail("offsets must be non-decreasing");
  }
  auto c_order = [](const py::array& a) {
    return (a.flags() & py::array::c_style) != 0;
  };
  if (!c_order(x) || !c_order(out)) fail("x and out must be C-contiguous");
  if (S == 0 || D == 0) return;
  const float* xp = x.data();
  float* op = out.mutable_data();
  py::gil_scoped_release nogil;
#ifdef _OPENMP
#pragma omp parallel num_threads(omp_threads(threads)) if (S > 1)
#endif
  {
    std::vector<double> acc(mode == 1 ? 0 : (size_t)D);  // per thread, once per call
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (long long s = 0; s < S; ++s) {
      const long long a = ofs(s), L = ofs(s + 1) - a;
      float* os = op + s * D;
      const float* xa = xp + a * D;
      if (L == 0) {
        std::fill(os, os + D, 0.0f);
      } else if (mode == 1) {
        segment_max_rows(xa, L, D, os);
      } else if (mode == 2 && L > window) {
        segment_window_max_rows(xa, L, window, D, os);
      } else {  // mean, or a window_max segment no longer than the window: its full mean
        segment_mean_rows(xa, L, D, acc.data(), os);
      }
    }
  }
}

}  // namespace engine_ops
