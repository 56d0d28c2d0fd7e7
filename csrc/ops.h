// ops.h - every entry point of engine._C, declared in one place (outputs first, written in place).
// Implemented by the *_cpu.cpp host glue (validation + dispatch to the CPU loops); bound in
// bindings.cpp with no logic of its own.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine_ops {

namespace py = pybind11;

// Argument errors of the host glue; pybind11 turns them into Python ValueError.
[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// --- fused preprocessing (preprocess_cpu.cpp) ---------------------------------------------------
// out: [B, 3, H, W] or [B, H, W, 3] float32/float16, C-contiguous.
// frames: B tuples (format, bit_depth, width, height, matrix, full_range, planes tuple of 2-D
//         arrays with unit column stride, (sar_num, sar_den)): frame_args.h.
void preprocess(py::array out, const py::list& frames, int mode, int to_h, int to_w, int filter,
                double scale, std::array<double, 3> mean, std::array<double, 3> std, bool bgr_out,
                bool nhwc, double pad_value, bool clamp_source, int threads);

// Tap table of one axis (tests, and the Triton kernels' tables): returns (first[out],
// weights[out, K]) for the given plane.
py::tuple resample_taps(int filter, int in_size, int resized, int out, int offset, int sub,
                        int plane_in);

// Geometry of one frame: ((resized_h, offset_y), (resized_w, offset_x)).
py::tuple resize_geometry(int mode, int in_h, int in_w, int out_h, int out_w, int to_h, int to_w,
                          int sar_num, int sar_den);

// --- per-call constants for non-C++ implementations (maps_cpu.cpp) ----------------------------
// make_yuv_to_rgb as (y_gain, cb_gain[3], cr_gain[3], bias[3]) float32 values (R, G, B order).
py::tuple yuv_to_rgb_map(int matrix, bool full_range, int bit_depth);
// make_normalize as (gain[3], bias[3]) float32 values: out = clamp(rgb, 0, 255) * gain + bias.
py::tuple normalize_map(double scale, std::array<double, 3> mean, std::array<double, 3> std);

// --- HDR / wide gamut -> SDR (sdr_cpu.cpp) -------------------------------------------------------
// out: [H, W, 3] uint8 RGB, C-contiguous; frame: a Y'CbCr frame tuple as for preprocess (matrix
// 0 bt601, 1 bt709, 2 bt2020); transfer 0 sdr, 1 pq, 2 hlg; primaries 0 bt709, 1 bt2020.
void to_sdr_rgb24(py::array_t<uint8_t> out, const py::handle& frame, int transfer, int primaries,
                  int threads);

// --- pooling (pooling_cpu.cpp) ------------------------------------------------------------------
// out: [B, D] float32; x: [B, T, D] float32; mask: [B, T] float32 weights.
void masked_mean(py::array_t<float> out, py::array_t<float> x, py::array_t<float> mask,
                 bool normalize, int threads);
// out: [S, D] float32; x: [N, D] float32; offsets: [S + 1] int64; mode 0 mean, 1 max, 2 window_max.
void segment_pool(py::array_t<float> out, py::array_t<float> x, py::array_t<long long> offsets,
                  int mode, int window, int threads);

// --- audio (audio_cpu.cpp) ----------------------------------------------------------------------
// out: [T, n_mels] float32 log-mel of one chunk; waveform: [L] float32, L >= 512.
void log_mel_frames(py::array_t<float> out, py::array_t<float> waveform, int threads);
// [n_freqs, n_mels] float32 torchaudio HTK filterbank (norm=None).
py::array_t<float> mel_filterbank(int n_freqs, int sample_rate, double f_min, double f_max,
                                  int n_mels);

// --- build ----------------------------------------------------------------------------------------
py::dict build_info();
bool avx2_kernels_active();  // hand-written AVX2 kernels selected at load (preprocess_cpu.cpp)
bool avx512_kernels_active();  // hand-written AVX-512 kernels selected at load (preprocess_cpu.cpp)

}  // namespace engine_ops
