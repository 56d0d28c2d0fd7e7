// engine/preprocess.h - framework-free description of a fused preprocessing call.
// One parameter struct for the CPU loops and the later CUDA kernel; the host glue fills it once.
#pragma once

#include "engine/colour.h"
#include "engine/common.h"
#include "engine/normalize.h"
#include "engine/resample.h"

namespace engine {

enum PixelFormat : int {
  kFmtI420 = 0,   // Y, U, V planes; chroma ceil(w/2) x ceil(h/2)
  kFmtNV12 = 1,   // Y plane, interleaved UV plane ceil(h/2) rows of 2*ceil(w/2) samples
  kFmtI422 = 2,   // Y, U, V; chroma ceil(w/2) x h
  kFmtI444 = 3,   // Y, U, V; chroma w x h
  kFmtRGB24 = 4,  // one interleaved plane, h rows of 3*w samples
  kFmtBGR24 = 5,
};

struct PlaneDesc {
  const void* data;    // first sample of row 0
  long long row_stride;  // bytes between rows (>= width * channels * bytes per sample)
  int width;           // samples per row per channel (pixels)
  int height;          // rows
  int channels;        // interleaved channels: 1 (Y/U/V), 2 (NV12 UV), 3 (RGB)
  int sub_x, sub_y;    // subsampling relative to luma (1 or 2), see Note [chroma upsampling]
};

struct FrameDesc {
  int format;       // PixelFormat
  int bit_depth;    // 8 or 10 (10-bit samples are little-endian uint16)
  int width, height;
  int matrix;       // ColourMatrix
  bool full_range;
  int num_planes;
  PlaneDesc planes[3];
  int sar_num, sar_den;  // sample aspect ratio (Note [sample aspect ratio] in resample.h)
};

struct PreprocessArgs {
  int out_h, out_w;
  int mode;          // ResizeMode
  int to_h, to_w;    // stretch target / shorter side (to_h)
  int filter;        // FilterKind
  Normalize norm;    // in output channel order
  bool bgr_out;      // output channel order B, G, R
  bool nhwc;         // layout [B, H, W, 3] instead of [B, 3, H, W]
  bool fp16;         // float16 output (bits via float_to_half_bits) instead of float32
  float pad_value;   // letterbox / outside-image value, already in output units
  bool clamp_source; // clamp converted source pixels before resampling (exact RGB-pipeline
                     // semantics) instead of the output after; see Note [clamp before resampling]
};

ENGINE_HD_INLINE bool is_yuv(int format) { return format <= kFmtI444; }

// Fills geometry fields (width, height, channels, subsampling) of the planes of a frame
// of the given format and luma size; the caller sets data / row_stride. Returns the plane count.
ENGINE_HD_INLINE int describe_planes(int format, int w, int h, PlaneDesc* p) {
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  for (int i = 0; i < 3; ++i) {
    p[i].data = 0; p[i].row_stride = 0;
    p[i].width = w; p[i].height = h; p[i].channels = 1;
    p[i].sub_x = 1; p[i].sub_y = 1;
  }
  switch (format) {
    case kFmtI420:
    case kFmtI422:
      for (int i = 1; i < 3; ++i) {
        p[i].width = cw; p[i].sub_x = 2;
        if (format == kFmtI420) { p[i].height = ch; p[i].sub_y = 2; }
      }
      return 3;
    case kFmtNV12:
      p[1].width = cw; p[1].height = ch; p[1].channels = 2;
      p[1].sub_x = 2; p[1].sub_y = 2;
      return 2;
    case kFmtI444:
      return 3;
    case kFmtRGB24:
    case kFmtBGR24:
      p[0].channels = 3;
      return 1;
    default:
      return 0;
  }
}

}  // namespace engine
