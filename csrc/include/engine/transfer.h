// engine/transfer.h - HDR (PQ, HLG) and wide-gamut (BT.2020) pictures as an SDR BT.709 display
// shows them: transfer functions, the HLG system gamma and the primaries conversion.
#pragma once

#include "engine/common.h"

namespace engine {

enum Transfer : int {
  kTransferSDR = 0,  // BT.709 / BT.2020 SDR signal on a BT.1886 display (gamma 2.4)
  kTransferPQ = 1,   // SMPTE ST 2084 (HDR10)
  kTransferHLG = 2,  // ARIB STD-B67 / BT.2100 HLG (phones' HDR video)
};

enum Primaries : int { kPrimariesBT709 = 0, kPrimariesBT2020 = 1 };

// Note [HDR to SDR]
// The vision models were trained on SDR pictures. A frame whose transfer is PQ or HLG, or whose
// primaries are BT.2020, is turned into the picture an SDR BT.709 display shows, with BT.2408's
// rule that HDR reference white (203 cd/m^2; HLG 75%) becomes SDR white:
//   1. R'G'B' from Y'CbCr with the stream's matrix (BT.2020 non-constant luminance for HDR
//      video), clipped to the signal range [0, 1];
//   2. linear light relative to reference white, per channel:
//        PQ:  L = pq_eotf(E') / 203                                   (E' -> cd/m^2)
//        HLG: E = hlg_inverse_oetf(E') (scene light), then BT.2100's OOTF for the nominal
//             1000 cd/m^2 display: L = 1000 / 203 * Ys^(1.2 - 1) * E,
//             Ys = 0.2627 R + 0.6780 G + 0.0593 B (scene luminance with the luma weights of
//             the primaries, here BT.2020's: luma_weights in colour.h)
//        SDR: L = E'^2.4                                             (BT.1886, black at 0)
//   3. BT.2020 primaries to BT.709 in linear light (the matrix from the two sets of
//      chromaticities and D65, as BT.2087);
//   4. clipped to [0, 1] per channel: highlights above reference white clip, as they do on an
//      SDR camera, and colours outside BT.709 are clipped channel by channel;
//   5. encoded for the SDR display, V = L^(1/2.4), as 8-bit RGB (round(255 V)).
// On colours inside the BT.709 gamut this is what FFmpeg 8's colour-managed swscale does with its
// default relative-colorimetric intent (`scale=out_transfer=bt709:out_primaries=bt709`); outside
// it FFmpeg clips in a perceptual colour space (keeping the hue) where this clips each channel.
// FFmpeg builds a 3-D LUT per conversion context, which dominates a short video's conversion;
// the few 1-D tables here are built once per process (the decode suite's decode/hdr rows).
constexpr double kReferenceWhite = 203.0;  // cd/m^2, BT.2408
constexpr double kHlgPeak = 1000.0;        // cd/m^2, BT.2100's nominal HLG display
constexpr double kHlgGamma = 1.2;          // BT.2100 system gamma at 1000 cd/m^2
constexpr double kDisplayGamma = 2.4;      // BT.1886

// SMPTE ST 2084: non-linear signal E' in [0, 1] -> display light in cd/m^2.
ENGINE_HD_INLINE double pq_eotf(double e) {
  const double m1 = 2610.0 / 16384.0, m2 = 2523.0 / 4096.0 * 128.0;
  const double c1 = 3424.0 / 4096.0, c2 = 2413.0 / 4096.0 * 32.0, c3 = 2392.0 / 4096.0 * 32.0;
  const double p = pow(e, 1.0 / m2);
  const double num = p > c1 ? p - c1 : 0.0;
  return 10000.0 * pow(num / (c2 - c3 * p), 1.0 / m1);
}

// BT.2100 HLG: non-linear signal E' in [0, 1] -> normalised scene light E in [0, 1].
ENGINE_HD_INLINE double hlg_inverse_oetf(double e) {
  const double a = 0.17883277, b = 1.0 - 4.0 * a, c = 0.5 - a * log(4.0 * a);
  return e <= 0.5 ? e * e / 3.0 : (exp((e - c) / a) + b) / 12.0;
}

// Step 2 of Note [HDR to SDR] for one channel, before the HLG OOTF: PQ and SDR give display
// light relative to reference white; HLG gives scene light (hlg_display_gain completes it).
ENGINE_HD_INLINE double linearize(int transfer, double e) {
  e = e < 0.0 ? 0.0 : (e > 1.0 ? 1.0 : e);
  if (transfer == kTransferPQ) return pq_eotf(e) / kReferenceWhite;
  if (transfer == kTransferHLG) return hlg_inverse_oetf(e);
  return pow(e, kDisplayGamma);
}

// HLG OOTF gain relative to reference white: L = hlg_display_gain(Ys) * E.
ENGINE_HD_INLINE double hlg_display_gain(double ys) {
  return ys > 0.0 ? kHlgPeak / kReferenceWhite * pow(ys, kHlgGamma - 1.0) : 0.0;
}

// Step 5: linear light in [0, 1] -> SDR signal in [0, 1].
ENGINE_HD_INLINE double sdr_encode(double l) {
  l = l < 0.0 ? 0.0 : (l > 1.0 ? 1.0 : l);
  return pow(l, 1.0 / kDisplayGamma);
}

ENGINE_HD_INLINE double det3(const double m[3][3]) {
  return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
         m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
         m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
}

// RGB -> CIE XYZ of primaries with chromaticities xy[0..2] = R, G, B and white point w (Y = 1).
ENGINE_HD_INLINE void rgb_to_xyz(const double xy[3][2], const double w[2], double m[3][3]) {
  double p[3][3];  // columns: XYZ of each primary with Y = 1
  for (int i = 0; i < 3; ++i) {
    p[0][i] = xy[i][0] / xy[i][1];
    p[1][i] = 1.0;
    p[2][i] = (1.0 - xy[i][0] - xy[i][1]) / xy[i][1];
  }
  const double W[3] = {w[0] / w[1], 1.0, (1.0 - w[0] - w[1]) / w[1]};
  // scale each primary so that R = G = B = 1 gives the white point: S = p^-1 W (Cramer's rule)
  const double det = det3(p);
  double s[3];
  for (int i = 0; i < 3; ++i) {
    double q[3][3];
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c) q[r][c] = c == i ? W[r] : p[r][c];
    s[i] = det3(q) / det;
  }
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) m[r][c] = p[r][c] * s[c];
}

// Linear BT.2020 RGB -> linear BT.709 RGB (D65 both): M = XYZ_709^-1 XYZ_2020 (step 3).
ENGINE_HD_INLINE void bt2020_to_bt709(double m[3][3]) {
  const double d65[2] = {0.3127, 0.3290};
  const double p709[3][2] = {{0.640, 0.330}, {0.300, 0.600}, {0.150, 0.060}};
  const double p2020[3][2] = {{0.708, 0.292}, {0.170, 0.797}, {0.131, 0.046}};
  double a[3][3], b[3][3], inv[3][3];
  rgb_to_xyz(p709, d65, a);
  rgb_to_xyz(p2020, d65, b);
  const double det = det3(a);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {  // adjugate / det
      const int r1 = (c + 1) % 3, r2 = (c + 2) % 3, c1 = (r + 1) % 3, c2 = (r + 2) % 3;
      inv[r][c] = (a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]) / det;
    }
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c)
      m[r][c] = inv[r][0] * b[0][c] + inv[r][1] * b[1][c] + inv[r][2] * b[2][c];
}

}  // namespace engine
