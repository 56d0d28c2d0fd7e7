// cuda/runtime_cuda.cu - what the CUDA runtime sees (for build_info) and a checked synchronize.
// The runtime is linked statically; it loads the driver (libcuda) on first use, so importing the
// extension works on machines without one and the calls report cudaErrorInsufficientDriver /
// cudaErrorNoDevice instead.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/ops_cuda.h"

namespace engine_cuda {

RuntimeInfo runtime_info() {
  RuntimeInfo r;
  r.runtime_version = CUDART_VERSION;
  int v = 0;
  if (cudaDriverGetVersion(&v) == cudaSuccess) r.driver_version = v;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess) {
    r.device_count = n;
  } else {
    r.device_count = 0;
    r.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear, so it does not surface in a later launch check
  }
  return r;
}

void synchronize(int device) {
  int prev = 0;
  cudaError_t e = cudaGetDevice(&prev);
  if (e == cudaSuccess && prev != device) e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (prev != device) cudaSetDevice(prev);
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in synchronize: ") + cudaGetErrorName(e) +
                             " (" + cudaGetErrorString(e) + ")");
}

}  // namespace engine_cuda
