// cuda/host_utils.cuh - error handling shared by the .cu host glue of engine._C_cuda.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace engine_cuda {

// Argument errors (pybind11: ValueError).
[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// CUDA runtime errors (pybind11: RuntimeError), naming the call that failed.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) +
                             " (" + cudaGetErrorString(e) + ")");
}

// Makes `device` current for the scope of the call, restoring the caller's device after.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
  }
};

}  // namespace engine_cuda
