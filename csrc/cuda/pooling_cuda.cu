// cuda/pooling_cuda.cu - host glue of the CUDA pooling ops: validation, launch on the caller's
// stream. See Note [pooling] (engine/pooling.h) and cuda/pooling_kernel.cuh.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/host_utils.cuh"
#include "cuda/ops_cuda.h"
#include "cuda/pooling_kernel.cuh"

namespace engine_cuda {

using engine::cuda::kPoolThreads;

namespace {

void check_masked_mean(std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B,
                       long long T, long long D) {
  if (B < 0 || T < 0 || D < 0) fail("shapes must be >= 0");           // (B, T, D)
  if (B > 0 && D > 0 && (out == 0 || (T > 0 && (x == 0 || mask == 0))))
    fail("null pointer");
  if ((D + kPoolThreads - 1) / kPoolThreads > 65535) fail("dim too large");
  if (B > 2147483647LL) fail("batch too large");
}

void check_segment_pool(std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets, long long N,
                        long long D, long long S, int mode, int window) {
  if (N < 0 || D < 0 || S < 0) fail("shapes must be >= 0");           // (N, D), (S + 1,)
  if (mode < 0 || mode > 2) fail("mode must be 0 (mean), 1 (max) or 2 (window_max)");
  if (mode == 2 && window < 1) fail("window must be >= 1");
  if (offsets == 0 || (S > 0 && D > 0 && (out == 0 || (N > 0 && x == 0)))) fail("null pointer");
  if ((D + kPoolThreads - 1) / kPoolThreads > 65535) fail("dim too large");
  if (S > 2147483647LL) fail("too many segments");
}

}  // namespace

void masked_mean(std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B,
                 long long T, long long D, bool normalize, std::uintptr_t stream, int device) {
  check_masked_mean(out, x, mask, B, T, D);
  if (B == 0 || D == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid((unsigned)B, (unsigned)((D + kPoolThreads - 1) / kPoolThreads));
  engine::cuda::masked_mean_kernel<<<grid, kPoolThreads, 0, st>>>(
      reinterpret_cast<float*>(out), reinterpret_cast<const float*>(x),
      reinterpret_cast<const float*>(mask), T, D);
  check_cuda(cudaGetLastError(), "masked_mean kernel launch");
  if (normalize) {
    engine::cuda::l2_normalize_kernel<<<(unsigned)B, 256, 0, st>>>(reinterpret_cast<float*>(out), D);
    check_cuda(cudaGetLastError(), "l2_normalize kernel launch");
  }
}

void segment_pool(std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets, long long N,
                  long long D, long long S, int mode, int window, std::uintptr_t stream,
                  int device) {
  check_segment_pool(out, x, offsets, N, D, S, mode, window);
  if (S == 0 || D == 0) return;
  DeviceGuard guard(device);
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid((unsigned)S, (unsigned)((D + kPoolThreads - 1) / kPoolThreads));
  engine::cuda::segment_pool_kernel<<<grid, kPoolThreads, 0, st>>>(
      reinterpret_cast<float*>(out), reinterpret_cast<const float*>(x),
      reinterpret_cast<const long long*>(offsets), N, D, mode, window);
  check_cuda(cudaGetLastError(), "segment_pool kernel launch");
}

void masked_mean_emulate(std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B,
                         long long T, long long D, bool normalize) {
  check_masked_mean(out, x, mask, B, T, D);
  float* o = reinterpret_cast<float*>(out);
  for (long long b = 0; b < B; ++b) {
    for (long long d = 0; d < D; ++d)
      o[b * D + d] = (float)engine::cuda::masked_mean_element(
          reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(mask), T, D, b, d);
    if (normalize) {  // as l2_normalize_kernel: from the float means
      double ss = 0.0;
      for (long long d = 0; d < D; ++d) ss += (double)o[b * D + d] * (double)o[b * D + d];
      const double k = engine::l2_scale(ss);
      for (long long d = 0; d < D; ++d) o[b * D + d] = (float)(o[b * D + d] * k);
    }
  }
}

void segment_pool_emulate(std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets,
                          long long N, long long D, long long S, int mode, int window) {
  check_segment_pool(out, x, offsets, N, D, S, mode, window);
  float* o = reinterpret_cast<float*>(out);
  for (long long s = 0; s < S; ++s)
    for (long long d = 0; d < D; ++d)
      o[s * D + d] = engine::cuda::segment_pool_element(
          reinterpret_cast<const float*>(x), reinterpret_cast<const long long*>(offsets), N, D, s,
          d, mode, window);
}

}  // namespace engine_cuda
