// headers_check.cu - compile-only check that every engine/*.h math header builds under nvcc and
// that the ENGINE_HD functions are callable from device code (tests/kernels/test_headers_nvcc.py).
#include "engine/colour.h"
#include "engine/common.h"
#include "engine/mel.h"
#include "engine/normalize.h"
#include "engine/pooling.h"
#include "engine/preprocess.h"
#include "engine/resample.h"
#include "engine/transfer.h"

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
  float terms[3];
  yuv_chroma_terms(m, sample_to_float(512u), byte_to_float(0x80402010u, i & 3), terms);
  out[i] += yuv_luma_plus(m, 500.0f, terms[1]);
  half_out[i] = float_to_half_bits(out[i]);
  // resampling taps + geometry + plane description
  float w[16];
  int first = 0;
  const int taps = compute_plane_taps(kFilterAntialias, 1920, 1920.0 / 455.0, i % 455, 2, w, &first);
  const int taps2 = compute_plane_taps(kFilterBilinear, 960, 0.5, i % 1920, 1, w + 8, &first);
  AxisGeometry gy, gx;
  const int st = compute_geometry(kResizeShorter, 1080, 1920, 224, 224, 256, 256, &gy, &gx);
  PlaneDesc planes[3];
  const int np = describe_planes(kFmtNV12, 1920, 1080, planes);
  out[i] += (float)(taps + taps2 + st + gy.offset + gx.resized + np + max_taps(0, 2.0) +
                    max_plane_taps(0, 4.2, 2)) + w[0];
  // pooling + mel
  out[i] += (float)(safe_denominator(0.0) + l2_scale(4.0)) + fmax_nan(1.0f, 2.0f);
  out[i] += (float)(mel_fbank_weight(i % 257, 3, 257, 16000, 125.0, 7500.0, 64) +
                    padded_hann(i % 512, 400, 512) + hz_to_mel_htk(1000.0) +
                    mel_to_hz_htk(1000.0)) + log_mel(1.0);
  double re[8] = {1, 0, 0, 0, 0, 0, 0, 0}, im[8] = {0};
  const double c[4] = {1, 0.70710678, 0, -0.70710678}, s[4] = {0, 0.70710678, 1, 0.70710678};
  fft_radix2(re, im, 8, c, s);
  out[i] += (float)re[3] + (float)(is_yuv(kFmtI420) ? 1 : 0) + (float)(mini(1, 2) + maxi(1, 2));
  // HDR -> SDR
  double m2020[3][3];
  bt2020_to_bt709(m2020);
  out[i] += (float)(linearize(kTransferPQ, 0.5) + linearize(kTransferHLG, 0.75) +
                    linearize(kTransferSDR, 0.5) + hlg_display_gain(0.25) + sdr_encode(0.5) +
                    m2020[0][0]);
}

#ifdef ENGINE_HEADERS_CHECK_MAIN
// Host driver (tests/kernels/test_headers_nvcc.py, GPU machines only): evaluates the ENGINE_HD
// math on the device and on the host from the same headers and compares the results.
#include <cstdio>
#include <cmath>
#include <vector>

namespace {
constexpr int kN = 4096;
constexpr int kVals = 20;

ENGINE_HD void eval_all(int i, float* v) {
  using namespace engine;
  for (int k = 0; k < kVals; ++k) v[k] = 0.0f;
  // taps: antialias luma / chroma and bilinear at several scales
  float w[64];  // compute_taps writes up to max_taps(filter, scale) weights: keep scale <= 20
  int first = 0;
  const int in = 1 + (i % 2000);
  const int resized = in / 20 + 1 + ((i * 7919) % 700);
  const double scale = (double)in / resized;
  const int r = i % resized;
  int n = compute_plane_taps(kFilterAntialias, in, scale, r, 1, w, &first);
  v[0] = (float)n; v[1] = (float)first; v[2] = w[0]; v[3] = w[n / 2];
  n = compute_plane_taps(kFilterAntialias, in, scale, r, 2, w, &first);
  v[4] = (float)(n * 10000 + first); v[5] = w[n - 1];
  n = compute_plane_taps(kFilterBilinear, in, scale, r, 2, w, &first);
  v[6] = (float)(n * 10000 + first); v[7] = w[0];
  // colour + half
  YuvToRgb m = make_yuv_to_rgb(i & 1, (i >> 1) & 1, (i & 4) ? 10 : 8);
  float rgb[3];
  yuv_to_rgb(m, (float)(i % 1024), (float)((i * 3) % 1024), (float)((i * 5) % 1024), rgb);
  v[8] = rgb[0]; v[9] = rgb[1]; v[10] = rgb[2];
  union { float f; unsigned u; } bits;
  bits.u = 0x2f000000u + (unsigned)i * 0x00012345u;  // sweeps subnormal..overflow halves
  v[11] = (float)float_to_half_bits(bits.f);
  // mel + geometry
  v[12] = (float)mel_fbank_weight(i % 257, (i / 257) % 64, 257, 16000, 125.0, 7500.0, 64);
  v[13] = (float)padded_hann(i % 512, 400, 512);
  AxisGeometry gy, gx;
  compute_geometry(i % 3, 1 + i % 1080, 1 + (i * 13) % 1920, 224, 224, 256, 256, &gy, &gx,
                   1 + i % 5, 1 + i % 3);  // sample aspect ratios 1:1 .. 5:3
  v[14] = (float)(gy.resized * 1000 + gy.offset);
  v[15] = (float)(gx.resized * 1000 + gx.offset);
  // samples to float (Note [integer samples to float]): exact
  v[16] = sample_to_float((unsigned)(i * 37) % 65536u);
  const unsigned word = 0x01000000u * (unsigned)(i % 256) + (unsigned)(i * 2654435761u) % 0x1000000u;
  v[17] = byte_to_float(word, i % 4);
  // transfer functions (Note [HDR to SDR]) over the whole signal range
  v[18] = (float)linearize(i % 3, (double)(i % 1024) / 1023.0);
  v[19] = (float)(sdr_encode((double)i / kN) + hlg_display_gain((double)i / kN));
}

__global__ void eval_kernel(float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < kN) eval_all(i, out + (size_t)i * kVals);
}
}  // namespace

int main() {
  std::vector<float> host((size_t)kN * kVals), dev((size_t)kN * kVals);
  for (int i = 0; i < kN; ++i) eval_all(i, host.data() + (size_t)i * kVals);
  float* d = nullptr;
  if (cudaMalloc(&d, dev.size() * sizeof(float)) != cudaSuccess) { std::printf("no device\n"); return 2; }
  eval_kernel<<<(kN + 127) / 128, 128>>>(d);
  if (cudaDeviceSynchronize() != cudaSuccess) { std::printf("kernel failed\n"); return 2; }
  cudaMemcpy(dev.data(), d, dev.size() * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(d);
  // Integers and half bits must match exactly; float math within 1e-5 relative (device FMA
  // contraction and libdevice cos/log10/pow differ from glibc in the last bits). The RGB values
  // (k = 8..10) are sums of terms up to ~300 that cancel, so FMA moves them by ~1 ulp of 300
  // (3e-5 absolute): a few float32 ulps of max(512, |v|) there. Built with -fmad=false, host and device agree bit for bit.
  double worst = 0.0;
  int bad = 0;
  for (size_t j = 0; j < host.size(); ++j) {
    const int k = (int)(j % kVals);
    const bool exact =
        k == 0 || k == 1 || k == 4 || k == 6 || k == 11 || k == 14 || k == 15 || k == 16 || k == 17;
    const double diff = std::fabs((double)host[j] - (double)dev[j]);
    const double rel = diff / std::fmax(1.0, std::fabs((double)host[j]));
    const double mag = std::fabs((double)host[j]);
    const double tol = (k >= 8 && k <= 10) ? 3e-7 * std::fmax(512.0, mag) : 1e-5 * std::fmax(1.0, mag);
    if (exact ? diff != 0.0 : diff > tol) {
      if (++bad <= 20)
        std::printf("mismatch i=%zu k=%d host=%.9g device=%.9g\n", j / kVals, k, host[j], dev[j]);
    }
    if (!exact) worst = std::fmax(worst, rel);
    (void)tol;
  }
  std::printf("values=%zu mismatches=%d worst_rel=%.3g\n", host.size(), bad, worst);
  return bad ? 1 : 0;
}
#endif  // ENGINE_HEADERS_CHECK_MAIN
