// headers_check.cu - compile-only check that every engine/*.h math header builds under nvcc and
// that the ENGINE_HD functions are callable from device code (tests/kernels/test_headers_nvcc.py).
#include "engine/colour.h"
#include "engine/common.h"
#include "engine/mel.h"
#include "engine/normalize.h"
#include "engine/pooling.h"
#include "engine/preprocess.h"
#include "engine/resample.h"

__global__ void engine_headers_check(float* out, unsigned short* half_out) {
  using namespace engine;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  // colour + normalisation
  YuvToRgb m = make_yuv_to_rgb(kBT709, false, 10);
  float rgb[3];
  yuv_to_rgb(m, 500.0f, 512.0f, 512.0f, rgb);
  const double mean[3] = {0.485, 0.456, 0.406}, stdv[3] = {0.229, 0.224, 0.225};
  Normalize n = make_normalize(1.0 / 255.0, mean, stdv);
  out[i] = normalize_value(n, 0, rgb[0]) + clampf(rgb[1], 0.0f, 255.0f);
  half_out[i] = float_to_half_bits(out[i]);
  // resampling taps + geometry + plane description
  float w[16];
  int first = 0;
  const double centre = plane_centre(1920.0 / 455.0, i, 2, 0.25);
  const int taps = compute_taps(kFilterAntialias, 960, 1920.0 / 455.0 / 2.0, centre, w, &first);
  const int taps2 = compute_taps(kFilterBilinear, 960, 0.5, centre, w + 8, &first);
  AxisGeometry gy, gx;
  const int st = compute_geometry(kResizeShorter, 1080, 1920, 224, 224, 256, 256, &gy, &gx);
  PlaneDesc planes[3];
  const int np = describe_planes(kFmtNV12, 1920, 1080, planes);
  out[i] += (float)(taps + taps2 + st + gy.offset + gx.resized + np + max_taps(0, 2.0)) + w[0];
  // pooling + mel
  out[i] += (float)(safe_denominator(0.0) + l2_scale(4.0)) + fmax_nan(1.0f, 2.0f);
  out[i] += (float)(mel_fbank_weight(i % 257, 3, 257, 16000, 125.0, 7500.0, 64) +
                    padded_hann(i % 512, 400, 512) + hz_to_mel_htk(1000.0) +
                    mel_to_hz_htk(1000.0)) + log_mel(1.0);
  double re[8] = {1, 0, 0, 0, 0, 0, 0, 0}, im[8] = {0};
  const double c[4] = {1, 0.70710678, 0, -0.70710678}, s[4] = {0, 0.70710678, 1, 0.70710678};
  fft_radix2(re, im, 8, c, s);
  out[i] += (float)re[3] + (float)(is_yuv(kFmtI420) ? 1 : 0) + (float)(mini(1, 2) + maxi(1, 2));
}
