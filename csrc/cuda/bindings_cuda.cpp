// cuda/bindings_cuda.cpp - pybind11 bindings of engine._C_cuda. No logic: every function is
// declared in cuda/ops_cuda.h; this file only converts Python arguments into its structs.
// The module never links torch: pointers, shapes, strides and streams arrive as integers
// (engine/ops/cuda.py takes them from any __cuda_array_interface__ producer).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/ops_cuda.h"

namespace py = pybind11;
using namespace pybind11::literals;

#ifndef VERSION_INFO
#define VERSION_INFO dev
#endif
#ifndef ENGINE_CUDA_ARCHS
#define ENGINE_CUDA_ARCHS unknown
#endif
#define ENGINE_STR2(x) #x
#define ENGINE_STR(x) ENGINE_STR2(x)

namespace {

engine_cuda::PreprocessCall make_call(
    std::uintptr_t out, int batch, int out_h, int out_w, bool nhwc, bool fp16, int format,
    int bit_depth, int width, int height, int matrix, bool full_range,
    std::vector<std::uintptr_t> planes, std::vector<long long> row_strides, int mode, int to_h,
    int to_w, int filter, double scale, std::array<double, 3> mean, std::array<double, 3> stdv,
    bool bgr_out, double pad_value, std::uintptr_t stream, int device, bool force_direct,
    int sar_num, int sar_den, bool clamp_source) {
  engine_cuda::PreprocessCall c;
  c.out = out; c.batch = batch; c.out_h = out_h; c.out_w = out_w; c.nhwc = nhwc; c.fp16 = fp16;
  c.format = format; c.bit_depth = bit_depth; c.width = width; c.height = height;
  c.matrix = matrix; c.full_range = full_range;
  c.planes = std::move(planes); c.row_strides = std::move(row_strides);
  c.mode = mode; c.to_h = to_h; c.to_w = to_w; c.filter = filter; c.scale = scale;
  c.mean = mean; c.stdv = stdv; c.bgr_out = bgr_out; c.pad_value = pad_value;
  c.stream = stream; c.device = device; c.force_direct = force_direct;
  c.sar_num = sar_num; c.sar_den = sar_den; c.clamp_source = clamp_source;
  return c;
}

template <bool kEmulate>
std::string preprocess_entry(std::uintptr_t out, int batch, int out_h, int out_w, bool nhwc,
                             bool fp16, int format, int bit_depth, int width, int height,
                             int matrix, bool full_range, std::vector<std::uintptr_t> planes,
                             std::vector<long long> row_strides, int mode, int to_h, int to_w,
                             int filter, double scale, std::array<double, 3> mean,
                             std::array<double, 3> stdv, bool bgr_out, double pad_value,
                             std::uintptr_t stream, int device, bool force_direct, int sar_num,
                             int sar_den, bool clamp_source) {
  const engine_cuda::PreprocessCall c =
      make_call(out, batch, out_h, out_w, nhwc, fp16, format, bit_depth, width, height, matrix,
                full_range, std::move(planes), std::move(row_strides), mode, to_h, to_w, filter,
                scale, mean, stdv, bgr_out, pad_value, stream, device, force_direct, sar_num,
                sar_den, clamp_source);
  py::gil_scoped_release nogil;
  return kEmulate ? engine_cuda::preprocess_emulate(c) : engine_cuda::preprocess(c);
}

py::dict build_info() {
  const engine_cuda::RuntimeInfo r = engine_cuda::runtime_info();
  py::dict d;
  d["cuda_compiled"] = true;
  d["cuda_runtime_version"] = r.runtime_version;
  d["cuda_archs"] = std::string(ENGINE_STR(ENGINE_CUDA_ARCHS));
  d["cuda_driver_version"] = r.driver_version;
  d["cuda_device_count"] = r.device_count;
  d["cuda_error"] = r.error;
  d["version"] = std::string(ENGINE_STR(VERSION_INFO));
  return d;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = R"pbdoc(
    engine._C_cuda - CUDA kernels of the moderation engine (built when nvcc is found).
    Entry points take raw device pointers, shapes, strides and a stream handle (int, 0 = legacy
    default stream); use the typed wrappers in engine.ops.cuda instead of calling these directly.
  )pbdoc";

  // --- preprocessing ------------------------------------------------------------------------
  const char* pre_doc = R"pbdoc(
    Fused resize + colour conversion + crop/letterbox + normalisation of a batch of frames of one
    format and size, ONE kernel launch on `stream`. Returns the kernel variant ("staged",
    "direct", "vfirst", "vfirst-planes", ...).

    out        : address of [batch, 3, out_h, out_w] (nhwc=False) or [batch, out_h, out_w, 3]
                 float32 (fp16=False) / float16, C-contiguous.
    format     : 0 i420, 1 nv12, 2 i422, 3 i444, 4 rgb24, 5 bgr24; bit_depth 8 (or 10 for YUV:
                 little-endian uint16 samples); matrix 0 bt601, 1 bt709.
    planes     : batch * num_planes addresses (frame-major) of the first sample of row 0;
    row_strides: the same count of row strides in bytes; columns are contiguous.
    mode, to_h, to_w, filter, scale, mean, std, bgr_out, pad_value: as engine._C.preprocess.
    Semantics: every source pixel converted and clamped to [0, 255] (chroma replicated to the luma
    grid), then resampled (clamp before resampling), then normalised; clamp_source=False
    (PreprocessSpec clamp="output"): the planes resampled, then converted and clamped.
    force_direct: use the variant without the shared-memory stage (tests).
    sar_num, sar_den: the frames' sample aspect ratio (Note [sample aspect ratio] in resample.h).
    Raises ValueError on bad arguments, RuntimeError on CUDA errors. Releases the GIL.
  )pbdoc";
  m.def("preprocess", &preprocess_entry<false>, "out"_a, "batch"_a, "out_h"_a, "out_w"_a,
        "nhwc"_a, "fp16"_a, "format"_a, "bit_depth"_a, "width"_a, "height"_a, "matrix"_a,
        "full_range"_a, "planes"_a, "row_strides"_a, "mode"_a, "to_h"_a, "to_w"_a, "filter"_a,
        "scale"_a, "mean"_a, "std"_a, "bgr_out"_a, "pad_value"_a, "stream"_a = 0, "device"_a = 0,
        "force_direct"_a = false, "sar_num"_a = 1, "sar_den"_a = 1, "clamp_source"_a = true, pre_doc);
  m.def("preprocess_emulate", &preprocess_entry<true>, "out"_a, "batch"_a, "out_h"_a, "out_w"_a,
        "nhwc"_a, "fp16"_a, "format"_a, "bit_depth"_a, "width"_a, "height"_a, "matrix"_a,
        "full_range"_a, "planes"_a, "row_strides"_a, "mode"_a, "to_h"_a, "to_w"_a, "filter"_a,
        "scale"_a, "mean"_a, "std"_a, "bgr_out"_a, "pad_value"_a, "stream"_a = 0, "device"_a = 0,
        "force_direct"_a = false, "sar_num"_a = 1, "sar_den"_a = 1, "clamp_source"_a = true,
        R"pbdoc(
    preprocess with HOST addresses: the kernel's block code run on the CPU, one block at a time
    (tests of the kernel logic on machines without a GPU; slow). stream/device are ignored.
  )pbdoc");

  // --- pooling --------------------------------------------------------------------------------
  m.def(
      "masked_mean",
      [](std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B, long long T,
         long long D, bool normalize, std::uintptr_t stream, int device) {
        py::gil_scoped_release nogil;
        engine_cuda::masked_mean(out, x, mask, B, T, D, normalize, stream, device);
      },
      "out"_a, "x"_a, "mask"_a, "B"_a, "T"_a, "D"_a, "normalize"_a, "stream"_a = 0, "device"_a = 0,
      R"pbdoc(
    out[b] = sum_t mask[b,t] x[b,t] / max(sum_t mask[b,t], 1e-9), optionally L2-normalised.
    Addresses of out [B, D], x [B, T, D], mask [B, T], all float32 C-contiguous on `device`.
  )pbdoc");
  m.def(
      "segment_pool",
      [](std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets, long long N, long long D,
         long long S, int mode, int window, std::uintptr_t stream, int device) {
        py::gil_scoped_release nogil;
        engine_cuda::segment_pool(out, x, offsets, N, D, S, mode, window, stream, device);
      },
      "out"_a, "x"_a, "offsets"_a, "N"_a, "D"_a, "S"_a, "mode"_a, "window"_a = 1, "stream"_a = 0,
      "device"_a = 0,
      R"pbdoc(
    Pool rows offsets[s]:offsets[s+1] of x [N, D] into out [S, D] (float32, C-contiguous);
    offsets [S + 1] int64 on the device (clamped to [0, N], non-decreasing, in the kernel).
    mode 0 mean, 1 max, 2 window_max.
  )pbdoc");
  m.def(
      "masked_mean_emulate",
      [](std::uintptr_t out, std::uintptr_t x, std::uintptr_t mask, long long B, long long T,
         long long D, bool normalize) {
        py::gil_scoped_release nogil;
        engine_cuda::masked_mean_emulate(out, x, mask, B, T, D, normalize);
      },
      "out"_a, "x"_a, "mask"_a, "B"_a, "T"_a, "D"_a, "normalize"_a,
      "masked_mean's element code on the host (host addresses; tests).");
  m.def(
      "segment_pool_emulate",
      [](std::uintptr_t out, std::uintptr_t x, std::uintptr_t offsets, long long N, long long D,
         long long S, int mode, int window) {
        py::gil_scoped_release nogil;
        engine_cuda::segment_pool_emulate(out, x, offsets, N, D, S, mode, window);
      },
      "out"_a, "x"_a, "offsets"_a, "N"_a, "D"_a, "S"_a, "mode"_a, "window"_a = 1,
      "segment_pool's element code on the host (host addresses; tests).");

  // --- runtime / build ------------------------------------------------------------------------
  m.def(
      "synchronize",
      [](int device) {
        py::gil_scoped_release nogil;
        engine_cuda::synchronize(device);
      },
      "device"_a = 0, "cudaDeviceSynchronize on `device`; raises RuntimeError on a CUDA error.");
  m.def(
      "stream_wait",
      [](std::uintptr_t waiter, std::uintptr_t producer, int device) {
        engine_cuda::stream_wait(waiter, producer, device);
      },
      "waiter"_a, "producer"_a, "device"_a = 0,
      "Queue on stream `waiter` a wait for the work queued so far on stream `producer`.");
  m.def("pointer_device", &engine_cuda::pointer_device, "ptr"_a,
        "The device owning a device allocation (cudaPointerGetAttributes); ValueError for host memory.");
  m.def("build_info", &build_info, R"pbdoc(
    Dict: cuda_compiled (True), cuda_runtime_version, cuda_archs, cuda_driver_version (0: no
    driver), cuda_device_count, cuda_error (why no device, if none), version.
  )pbdoc");
  m.attr("__version__") = ENGINE_STR(VERSION_INFO);
}
