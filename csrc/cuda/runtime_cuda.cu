// cuda/runtime_cuda.cu - what the CUDA runtime sees (for build_info), a checked synchronize, and
// the ordering and ownership queries the Python wrappers need for foreign device arrays.
// The runtime is linked statically; it loads the driver (libcuda) on first use, so importing the
// extension works on machines without one and the calls report cudaErrorInsufficientDriver /
// cudaErrorNoDevice instead.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/host_utils.cuh"
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

void stream_wait(std::uintptr_t waiter, std::uintptr_t producer, int device) {
  DeviceGuard guard(device);
  cudaEvent_t event;
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  cudaError_t e = cudaEventRecord(event, reinterpret_cast<cudaStream_t>(producer));
  if (e == cudaSuccess) e = cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(waiter), event, 0);
  cudaEventDestroy(event);  // released once the recorded work has run
  check_cuda(e, "stream_wait (cudaEventRecord / cudaStreamWaitEvent)");
}

int pointer_device(std::uintptr_t ptr) {
  cudaPointerAttributes a;
  check_cuda(cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(ptr)),
             "cudaPointerGetAttributes");
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    fail("address " + std::to_string(ptr) + " is not device memory");
  return a.device;
}

}  // namespace engine_cuda
