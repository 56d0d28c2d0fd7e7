// frame_args.h - the frame tuple shared by the ops that read decoded pictures (preprocess,
// to_sdr_rgb24): parsed and checked into an engine::FrameDesc once.
#pragma once

#include <string>
#include <vector>

#include "engine/preprocess.h"
#include "ops.h"

namespace engine_ops {

// frame: (format, bit_depth, width, height, matrix, full_range, planes, (sar_num, sar_den)),
// planes 2-D uint8 / uint16 arrays (rows, samples) with unit column stride. The plane arrays are appended to keep,
// which must outlive every use of the returned pointers (the GIL is released while they are read).
// Errors start with `where`. The matrix is any ColourMatrix; callers narrow it.
engine::FrameDesc parse_frame(const py::handle& frame, const std::string& where,
                              std::vector<py::array>& keep);

}  // namespace engine_ops
