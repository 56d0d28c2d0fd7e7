// engine/colour.h - Y'CbCr -> R'G'B' conversion as one affine map per (matrix, range, bit depth).
#pragma once

#include "engine/common.h"

namespace engine {

enum ColourMatrix : int { kBT601 = 0, kBT709 = 1, kBT2020 = 2 };  // BT.2020: non-constant luminance

// Note [YUV -> RGB coefficients]
// Luma weights (ITU-R BT.601-7 / BT.709-6 / BT.2020-2):
//                                                 BT.601:  Kr = 0.299,  Kb = 0.114
//                                                 BT.709:  Kr = 0.2126, Kb = 0.0722
//                                                 BT.2020: Kr = 0.2627, Kb = 0.0593,  Kg = 1 - Kr - Kb
// (the fused preprocessing takes BT.601 and BT.709; BT.2020 frames are HDR or wide-gamut and go
// through Note [HDR to SDR] in transfer.h first)
// Normalised signals (ITU-T H.273, bit depth n, s = 2^(n-8)):
//   limited ("TV", MPEG) range: Y' = (Y - 16 s) / (219 s)      Pb,Pr = (C - 128 s) / (224 s)
//   full    ("PC", JPEG) range: Y' = Y / (2^n - 1)              Pb,Pr = (C - 2^(n-1)) / (2^n - 1)
// then R = Y' + 2 (1 - Kr) Pr
//      G = Y' - 2 Kb (1 - Kb) / Kg Pb - 2 Kr (1 - Kr) / Kg Pr
//      B = Y' + 2 (1 - Kb) Pb
// and the result is scaled by 255 so RGB lands on the familiar 0..255 scale for both 8 and 10 bit.
// The map is affine in (Y, Cb, Cr), so it commutes with any resampling whose weights sum to one:
// resampling the planes first and converting only output pixels equals converting first, up to
// the clamp to [0, 255] (see Note [fused resize order] and Note [clamp before resampling] in
// resample.h).
struct YuvToRgb {
  // rgb[c] = y_gain * Y + cb_gain[c] * Cb + cr_gain[c] * Cr + bias[c]   (c = R, G, B)
  float y_gain;
  float cb_gain[3];
  float cr_gain[3];
  float bias[3];
};

// Kr, Kb of a ColourMatrix (also the luminance weights of its primaries' linear RGB).
ENGINE_HD_INLINE void luma_weights(int matrix, double* kr, double* kb) {
  *kr = matrix == kBT2020 ? 0.2627 : (matrix == kBT709 ? 0.2126 : 0.299);
  *kb = matrix == kBT2020 ? 0.0593 : (matrix == kBT709 ? 0.0722 : 0.114);
}

ENGINE_HD_INLINE YuvToRgb make_yuv_to_rgb(int matrix, bool full_range, int bit_depth) {
  double kr, kb;
  luma_weights(matrix, &kr, &kb);
  const double kg = 1.0 - kr - kb;
  const double s = (double)(1 << (bit_depth - 8));
  const double maxv = (double)((1 << bit_depth) - 1);
  double y_scale, y_off, c_scale, c_off;
  if (full_range) {
    y_scale = 1.0 / maxv;  y_off = 0.0;
    c_scale = 1.0 / maxv;  c_off = (double)(1 << (bit_depth - 1));
  } else {
    y_scale = 1.0 / (219.0 * s);  y_off = 16.0 * s;
    c_scale = 1.0 / (224.0 * s);  c_off = 128.0 * s;
  }
  // per-channel gains on Pb / Pr
  const double pb[3] = {0.0, -2.0 * kb * (1.0 - kb) / kg, 2.0 * (1.0 - kb)};
  const double pr[3] = {2.0 * (1.0 - kr), -2.0 * kr * (1.0 - kr) / kg, 0.0};
  YuvToRgb m;
  m.y_gain = (float)(255.0 * y_scale);
  for (int c = 0; c < 3; ++c) {
    m.cb_gain[c] = (float)(255.0 * c_scale * pb[c]);
    m.cr_gain[c] = (float)(255.0 * c_scale * pr[c]);
    m.bias[c] = (float)(255.0 * (-y_off * y_scale - c_off * c_scale * (pb[c] + pr[c])));
  }
  return m;
}

ENGINE_HD_INLINE void yuv_to_rgb(const YuvToRgb& m, float y, float cb, float cr, float rgb[3]) {
  for (int c = 0; c < 3; ++c) {
    rgb[c] = m.y_gain * y + m.cb_gain[c] * cb + m.cr_gain[c] * cr + m.bias[c];
  }
}

// yuv_to_rgb split in two for pixels that share a chroma sample (4:2:x): the chroma terms
// cb_gain * Cb + cr_gain * Cr + bias once per sample, then one multiply-add per luma pixel.
// Equal to yuv_to_rgb up to float rounding (the sum is reassociated).
ENGINE_HD_INLINE void yuv_chroma_terms(const YuvToRgb& m, float cb, float cr, float t[3]) {
  for (int c = 0; c < 3; ++c) t[c] = m.cb_gain[c] * cb + (m.cr_gain[c] * cr + m.bias[c]);
}

ENGINE_HD_INLINE float yuv_luma_plus(const YuvToRgb& m, float y, float chroma_term) {
  return m.y_gain * y + chroma_term;
}

}  // namespace engine
