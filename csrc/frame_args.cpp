// frame_args.cpp - see frame_args.h.
#include "frame_args.h"

namespace engine_ops {

using namespace engine;

FrameDesc parse_frame(const py::handle& frame, const std::string& where,
                      std::vector<py::array>& keep) {
  py::tuple t = frame.cast<py::tuple>();
  if (t.size() != 8) fail(where + "frame tuple must have 8 fields");
  FrameDesc f;
  f.format = t[0].cast<int>();
  f.bit_depth = t[1].cast<int>();
  f.width = t[2].cast<int>();
  f.height = t[3].cast<int>();
  f.matrix = t[4].cast<int>();
  f.full_range = t[5].cast<bool>();
  if (f.format < 0 || f.format > kFmtBGR24) fail(where + "bad format code");
  if (f.bit_depth != 8 && !(f.bit_depth == 10 && is_yuv(f.format)))
    fail(where + "bit depth must be 8 (or 10 for YUV)");
  if (f.width <= 0 || f.height <= 0) fail(where + "width and height must be positive");
  if (f.matrix != kBT601 && f.matrix != kBT709 && f.matrix != kBT2020) fail(where + "bad matrix");
  py::tuple sar = t[7].cast<py::tuple>();
  if (sar.size() != 2) fail(where + "sar must be (num, den)");
  f.sar_num = sar[0].cast<int>();
  f.sar_den = sar[1].cast<int>();
  if (f.sar_num < 1 || f.sar_den < 1 || f.sar_num > 65535 || f.sar_den > 65535)
    fail(where + "sar terms must be in [1, 65535]");
  f.num_planes = describe_planes(f.format, f.width, f.height, f.planes);
  py::tuple planes = t[6].cast<py::tuple>();
  if ((int)planes.size() != f.num_planes)
    fail(where + "expected " + std::to_string(f.num_planes) + " planes, got " +
         std::to_string(planes.size()));
  const int bps = f.bit_depth > 8 ? 2 : 1;
  for (int p = 0; p < f.num_planes; ++p) {
    keep.push_back(planes[p].cast<py::array>());
    const py::array& arr = keep.back();
    PlaneDesc& pl = f.planes[p];
    const std::string pw = where + "plane " + std::to_string(p) + ": ";
    // plane: (rows >= height, samples >= width * channels), unit column stride
    if (arr.ndim() != 2) fail(pw + "must be 2-D (rows, samples)");
    if (arr.dtype().kind() != 'u' || arr.itemsize() != bps)
      fail(pw + (bps == 1 ? "dtype must be uint8" : "dtype must be uint16"));
    if (arr.strides(1) != bps) fail(pw + "columns must be contiguous");
    if (arr.shape(0) < pl.height || arr.shape(1) < (long long)pl.width * pl.channels)
      fail(pw + "shape (" + std::to_string(arr.shape(0)) + ", " + std::to_string(arr.shape(1)) +
           ") smaller than (" + std::to_string(pl.height) + ", " +
           std::to_string(pl.width * pl.channels) + ")");
    if (arr.strides(0) < (long long)pl.width * pl.channels * bps) fail(pw + "row stride too small");
    pl.data = arr.data();
    pl.row_stride = arr.strides(0);
  }
  return f;
}

}  // namespace engine_ops
