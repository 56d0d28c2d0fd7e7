// pooling_cpu.cpp - host glue and CPU loops of masked_mean and segment_pool. See Note [pooling].
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/pooling.h"
#include "ops.h"

namespace engine_ops {

using namespace engine;

namespace {
int nthreads(int threads) { return threads > 0 ? threads : 0; }
}  // namespace

void masked_mean(py::array_t<float> out, py::array_t<float> x, py::array_t<float> mask,
                 bool normalize, int threads) {
  if (x.ndim() != 3) fail("x must be (batch, tokens, dim)");               // (B, T, D)
  if (mask.ndim() != 2) fail("mask must be (batch, tokens)");              // (B, T)
  if (out.ndim() != 2) fail("out must be (batch, dim)");                   // (B, D)
  const long long B = x.shape(0), T = x.shape(1), D = x.shape(2);
  if (mask.shape(0) != B || mask.shape(1) != T) fail("mask shape must match x[:, :, 0]");
  if (out.shape(0) != B || out.shape(1) != D) fail("out shape must be (batch, dim)");
  auto xv = x.unchecked<3>();
  auto mv = mask.unchecked<2>();
  auto ov = out.mutable_unchecked<2>();
  py::gil_scoped_release nogil;
  (void)nthreads(threads);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : omp_get_max_threads()) if (B > 1)
#endif
  for (long long b = 0; b < B; ++b) {
    std::vector<double> acc(D, 0.0);
    double msum = 0.0;
    for (long long t = 0; t < T; ++t) {
      const double m = mv(b, t);
      if (m == 0.0) continue;
      msum += m;
      for (long long d = 0; d < D; ++d) acc[d] += m * (double)xv(b, t, d);
    }
    const double inv = 1.0 / safe_denominator(msum);
    double ss = 0.0;
    for (long long d = 0; d < D; ++d) {
      acc[d] *= inv;
      ss += acc[d] * acc[d];
    }
    const double s = normalize ? l2_scale(ss) : 1.0;
    for (long long d = 0; d < D; ++d) ov(b, d) = (float)(acc[d] * s);
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
  auto xv = x.unchecked<2>();
  auto ov = out.mutable_unchecked<2>();
  py::gil_scoped_release nogil;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : omp_get_max_threads()) if (S > 1)
#endif
  for (long long s = 0; s < S; ++s) {
    const long long a = ofs(s), e = ofs(s + 1), L = e - a;
    if (L == 0) {
      for (long long d = 0; d < D; ++d) ov(s, d) = 0.0f;
      continue;
    }
    if (mode == 1) {
      for (long long d = 0; d < D; ++d) {
        float m = xv(a, d);
        for (long long i = a + 1; i < e; ++i) m = fmax_nan(m, xv(i, d));
        ov(s, d) = m;
      }
      continue;
    }
    const long long W = (mode == 2 && L > window) ? window : L;
    std::vector<double> run(D, 0.0), best(D, -std::numeric_limits<double>::infinity());
    for (long long i = a; i < a + W; ++i)
      for (long long d = 0; d < D; ++d) run[d] += xv(i, d);
    for (long long d = 0; d < D; ++d) best[d] = run[d];
    // slide: exact re-summation every 64 steps bounds the drift of the running sum
    for (long long j = a + 1; j + W <= e; ++j) {
      if (((j - a) & 63) == 0) {
        for (long long d = 0; d < D; ++d) run[d] = 0.0;
        for (long long i = j; i < j + W; ++i)
          for (long long d = 0; d < D; ++d) run[d] += xv(i, d);
      } else {
        for (long long d = 0; d < D; ++d) run[d] += (double)xv(j + W - 1, d) - (double)xv(j - 1, d);
      }
      for (long long d = 0; d < D; ++d)
        if (run[d] > best[d] || run[d] != run[d]) best[d] = run[d];
    }
    for (long long d = 0; d < D; ++d) ov(s, d) = (float)(best[d] / (double)W);
  }
}

}  // namespace engine_ops
