// cuda/pooling_kernel.cuh - framework-free masked mean / segment pooling kernels (Note [pooling]).
// One thread per output element (row, dimension): loads are coalesced along D. The per-element
// functions are ENGINE_HD so the host emulation (tests without a GPU) runs the same code.
#pragma once

#include "engine/common.h"
#include "engine/pooling.h"

namespace engine {
namespace cuda {

constexpr int kPoolThreads = 128;  // dimensions per block

// mean over t of mask[b, t] * x[b, t, d]; accumulation in double (Note [pooling])
ENGINE_HD_INLINE double masked_mean_element(const float* x, const float* mask, long long T,
                                            long long D, long long b, long long d) {
  double acc = 0.0, msum = 0.0;
  const float* xb = x + b * T * D + d;
  const float* mb = mask + b * T;
  // branch-free so the loop unrolls (loads in flight); a zero weight still skips its row's
  // value (NaN / inf there do not leak in), as the CPU loop does
#pragma unroll 4
  for (long long t = 0; t < T; ++t) {
    const double m = mb[t];
    const double v = xb[t * D];
    msum += m;
    acc += m != 0.0 ? m * v : 0.0;
  }
  return acc / safe_denominator(msum);
}

// segment s of x (rows offsets[s] .. offsets[s+1]-1, clamped to [0, N] and made non-decreasing
// so that bad offsets cannot read out of bounds), dimension d; mode 0 mean, 1 max, 2 window_max.
// The same running sum with exact re-summation every 64 steps as the CPU loop.
ENGINE_HD_INLINE float segment_pool_element(const float* x, const long long* offsets, long long N,
                                            long long D, long long s, long long d, int mode,
                                            int window) {
  long long a = offsets[s], e = offsets[s + 1];
  a = a < 0 ? 0 : (a > N ? N : a);
  e = e < a ? a : (e > N ? N : e);
  const long long L = e - a;
  if (L == 0) return 0.0f;
  const float* xd = x + d;
  if (mode == 1) {
    float m = xd[a * D];
#pragma unroll 4
    for (long long i = a + 1; i < e; ++i) m = fmax_nan(m, xd[i * D]);
    return m;
  }
  const long long W = (mode == 2 && L > window) ? window : L;
  double run = 0.0;
#pragma unroll 4
  for (long long i = a; i < a + W; ++i) run += xd[i * D];
  double best = run;
  for (long long j = a + 1; j + W <= e; ++j) {
    if (((j - a) & 63) == 0) {
      run = 0.0;
      for (long long i = j; i < j + W; ++i) run += xd[i * D];
    } else {
      run += (double)xd[(j + W - 1) * D] - (double)xd[(j - 1) * D];
    }
    if (run > best || run != run) best = run;
  }
  return (float)(best / (double)W);
}

#if defined(__CUDACC__)
// grid (B, ceil(D / kPoolThreads))
__global__ void __launch_bounds__(kPoolThreads)
    masked_mean_kernel(float* out, const float* x, const float* mask, long long T, long long D) {
  const long long b = blockIdx.x;
  const long long d = (long long)blockIdx.y * kPoolThreads + threadIdx.x;
  if (d < D) out[b * D + d] = (float)masked_mean_element(x, mask, T, D, b, d);
}

// grid (B): out[b] /= max(||out[b]||_2, 1e-12), sum of squares in double
__global__ void __launch_bounds__(256) l2_normalize_kernel(float* out, long long D) {
  __shared__ double part[256];
  float* row = out + (long long)blockIdx.x * D;
  double ss = 0.0;
  for (long long d = threadIdx.x; d < D; d += blockDim.x) ss += (double)row[d] * (double)row[d];
  part[threadIdx.x] = ss;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const double k = l2_scale(part[0]);
  for (long long d = threadIdx.x; d < D; d += blockDim.x) row[d] = (float)(row[d] * k);
}

// grid (S, ceil(D / kPoolThreads))
__global__ void __launch_bounds__(kPoolThreads)
    segment_pool_kernel(float* out, const float* x, const long long* offsets, long long N,
                        long long D, int mode, int window) {
  const long long s = blockIdx.x;
  const long long d = (long long)blockIdx.y * kPoolThreads + threadIdx.x;
  if (d < D) out[s * D + d] = segment_pool_element(x, offsets, N, D, s, d, mode, window);
}
#endif

}  // namespace cuda
}  // namespace engine
