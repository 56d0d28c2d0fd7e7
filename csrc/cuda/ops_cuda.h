// cuda/ops_cuda.h - every entry point of engine._C_cuda, declared in one place (outputs first,
// written in place). Plain C++ (no pybind11, no CUDA headers): implemented by the .cu host glue
// (validation + launch on the caller's stream), bound in bindings_cuda.cpp with no logic.
//
// Pointers are raw addresses (device memory; host memory for the *_emulate variants, which run
// the same block code on the CPU for tests). `stream` is a cudaStream_t as an integer (0: the
// legacy default stream); `device` the CUDA ordinal the pointers live on. Argument errors throw
// std::invalid_argument, CUDA errors std::runtime_error (pybind11: ValueError / RuntimeError).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace engine_cuda {

// --- fused preprocessing (preprocess_cuda.cu) -----------------------------------------------------
struct PreprocessCall {
  // out: [batch, 3, out_h, out_w] (nhwc = false) or [batch, out_h, out_w, 3], C-contiguous
  std::uintptr_t out = 0;
  int batch = 0, out_h = 0, out_w = 0;
  bool nhwc = false, fp16 = false;
  // frames: one format / size / matrix / range for the whole batch
  int format = 0, bit_depth = 8, width = 0, height = 0, matrix = 0;
  bool full_range = false;
  std::vector<std::uintptr_t> planes;    // [batch * num_planes] first sample of row 0
  std::vector<long long> row_strides;    // [batch * num_planes] bytes
  // resize / normalisation, as engine._C.preprocess
  int mode = 0, to_h = 0, to_w = 0, filter = 0;
  double scale = 1.0;
  std::array<double, 3> mean{{0.0, 0.0, 0.0}}, stdv{{1.0, 1.0, 1.0}};
  bool bgr_out = false;
  double pad_value = 0.0;
  std::uintptr_t stream = 0;
  int device = 0;
  bool force_direct = false;  // tests: the variant without the shared-memory stage
  int sar_num = 1, sar_den = 1;  // sample aspect ratio (Note [sample aspect ratio] in resample.h)
  // PreprocessSpec.clamp: true "source" (each converted source pixel), false "output" (only the
  // resampled value: Note [CUDA preprocess: clamp="output"] in preprocess_kernel.cuh)
  bool clamp_source = true;
};

// One launch on call.stream; returns the kernel variant used ("staged", "direct", "vfirst", ...).
std::string preprocess(const PreprocessCall& call);
// The same block code on the host (pointers are host addresses); for tests without a GPU.
std::string preprocess_emulate(const PreprocessCall& call);

// --- pooling (pooling_cuda.cu); all float32, C-contiguous --------------------------------------
// out [B, D]; x [B, T, D]; mask [B, T]
void masked_mean(std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B,
                 long long T, long long D, bool normalize, std::uintptr_t stream, int device);
// out [S, D]; x [N, D]; offsets [S + 1] int64 (device); mode 0 mean, 1 max, 2 window_max
void segment_pool(std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets, long long N,
                  long long D, long long S, int mode, int window, std::uintptr_t stream,
                  int device);
void masked_mean_emulate(std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B,
                         long long T, long long D, bool normalize);
void segment_pool_emulate(std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets,
                          long long N, long long D, long long S, int mode, int window);

// --- runtime / build (runtime_cuda.cu) ------------------------------------------------------------
struct RuntimeInfo {
  int runtime_version = 0;     // CUDART_VERSION compiled in
  int driver_version = 0;      // 0 when no driver
  int device_count = 0;
  std::string error;           // why device_count is 0, if it is
};
RuntimeInfo runtime_info();
void synchronize(int device);  // cudaDeviceSynchronize with the error raised
// Queue on `waiter` a wait for the work queued on `producer` so far (an event between them);
// both are cudaStream_t values of `device` (0 / 1: the legacy default stream, 2: per-thread).
void stream_wait(std::uintptr_t waiter, std::uintptr_t producer, int device);
// The device that owns a device (or managed) allocation; ValueError for host memory.
int pointer_device(std::uintptr_t ptr);

}  // namespace engine_cuda
