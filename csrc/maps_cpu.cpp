// maps_cpu.cpp - the per-call constants of the fused preprocessing, exported for implementations
// that are not C++ (the Triton kernels in kernels/): they take the YUV -> RGB map and the folded
// normalisation from these headers instead of a second copy of the formulas in Python.
#include "engine/colour.h"
#include "engine/normalize.h"
#include "ops.h"

namespace engine_ops {

using namespace engine;

py::tuple yuv_to_rgb_map(int matrix, bool full_range, int bit_depth) {
  if (matrix != kBT601 && matrix != kBT709) fail("matrix must be 0 (bt601) or 1 (bt709)");
  if (bit_depth != 8 && bit_depth != 10) fail("bit depth must be 8 or 10");
  const YuvToRgb m = make_yuv_to_rgb(matrix, full_range, bit_depth);
  auto three = [](const float* v) { return py::make_tuple(v[0], v[1], v[2]); };
  return py::make_tuple(m.y_gain, three(m.cb_gain), three(m.cr_gain), three(m.bias));
}

py::tuple normalize_map(double scale, std::array<double, 3> mean, std::array<double, 3> std) {
  for (int c = 0; c < 3; ++c)
    if (!(std[c] != 0.0)) fail("std must be non-zero");
  const Normalize n = make_normalize(scale, mean.data(), std.data());
  return py::make_tuple(py::make_tuple(n.gain[0], n.gain[1], n.gain[2]),
                        py::make_tuple(n.bias[0], n.bias[1], n.bias[2]));
}

}  // namespace engine_ops
