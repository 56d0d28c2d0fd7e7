// engine/resample.h - resampling filter taps and resize geometry, shared by CPU and GPU code.
#pragma once

#include "engine/common.h"

namespace engine {

enum FilterKind : int {
  kFilterAntialias = 0,  // torch interpolate(mode="bilinear", antialias=True) == PIL BILINEAR
  kFilterBilinear = 1,   // half-pixel bilinear without antialias == OpenCV INTER_LINEAR,
                         // torch interpolate(mode="bilinear", align_corners=False)
};

// Note [pixel centres and filter support]
// Continuous coordinates: input pixel k covers [k, k+1) and has its centre at k + 0.5. For an axis
// resized from `in` to `resized` samples, scale = in / resized (align_corners=False) and output
// sample r has its centre at   centre = scale * (r + 0.5)   in input coordinates.
// * antialias (torch `_upsample_bilinear2d_aa`, PIL ImagingResample BILINEAR):
//     support  = scale if scale >= 1 (downscaling) else 1
//     taps k in [max(trunc(centre - support + 0.5), 0), min(trunc(centre + support + 0.5), in))
//     weight   = max(0, 1 - |t|),  t = (k - centre + 0.5) * (1/scale if scale >= 1 else 1)
//     weights are divided by their sum; taps outside the image are dropped (not clamped).
// * bilinear (OpenCV INTER_LINEAR, torch align_corners=False):
//     src = max(centre - 0.5, 0); k0 = trunc(src); weights (1 - f, f) on (k0, k0 + 1), f = src - k0;
//     at the last pixel all weight goes to k0 (replicate border).
// The two filters agree when upscaling except at the borders (dropped vs replicated taps).
//
// Note [chroma upsampling]
// A subsampled chroma plane is taken as upsampled to the luma grid by replication: chroma sample
// c covers luma samples [c * sub, c * sub + sub) on each subsampled axis. That is what FFmpeg's
// swscale does in its default YUV -> RGB conversion (PyAV `to_ndarray("rgb24")`), so the fused
// kernel reproduces the pipeline users validate their models with; resampling the chroma plane
// on its own grid instead (a sited bilinear upsampler) moves saturated colour edges by up to
// 17 levels against it. The replicated plane is then filtered with the LUMA taps. Both steps
// are linear, so they fold into one set of chroma taps (compute_plane_taps):
//     weight(c) = sum of the luma tap weights w_k over the k with k / sub == c
// The chroma plane has ceil(luma / sub) samples, so every folded index lies inside it.
//
// Note [fused resize order]
// Separable filtering is linear and Y'CbCr -> R'G'B' is affine with weights summing to one, so
// resample(convert(img)) == convert(resample(planes)) exactly as long as nothing is clamped in
// between. clamp="output" uses that: each plane is resampled to the output pixels only and those
// are converted and clamped (cheapest: chroma is filtered at its own resolution). Torch runs the
// horizontal pass first; we run the vertical pass first (contiguous source rows, SIMD friendly) -
// the same sum in a different order, so results agree to float rounding, not bit for bit.
//
// Note [clamp before resampling]
// The pipeline users validate against (PyAV rgb24, then a resizer) clamps every SOURCE pixel to
// [0, 255] (its rgb24 is uint8) and resamples afterwards. Decoded 4:2:0 photographs hold ~1-2%
// out-of-gamut pixels at saturated colour edges (Y'CbCr has more room than R'G'B'), and clamping
// only the resampled value moves those outputs by up to ~19 levels. clamp="source" (the default)
// therefore computes exactly
//     out = clamp(R(clamp(C(Y, up Cb, up Cr))))      (R resampling, C conversion, up replication)
// in that order: each source row inside the vertical support of the output ROI is converted and
// clamped once (only the columns inside the horizontal support), kept in a ring of K rows (every
// output row's window spans <= K consecutive rows), and the three RGB planes are filtered with
// the luma taps - vertical pass over the ring, then horizontal pass
// (csrc/preprocess_clamp_source.cpp, SourceRows). All in float32: the GPU kernels, which evaluate
// the same formula per output pixel, agree with it to float rounding. (An int16 fixed-point
// variant was ~12% faster on 1080p photographs but 0.035 levels off, too far for that agreement.)

// Largest tap count compute_taps can produce for this filter and scale.
ENGINE_HD_INLINE int max_taps(int filter, double scale) {
  if (filter == kFilterBilinear) return 2;
  const double support = scale >= 1.0 ? scale : 1.0;
  return (int)ceil(support) * 2 + 1;
}

// Taps for one output sample whose centre lies at `centre` (input coordinates, see Note [pixel
// centres and filter support]). Writes up to max_taps(filter, scale) weights, returns the count
// and the first input index in *first. Never returns 0 taps: a centre outside the image falls
// back to the nearest edge pixel.
ENGINE_HD_INLINE int compute_taps(int filter, int in_size, double scale, double centre,
                                  float* weights, int* first) {
  if (filter == kFilterBilinear) {
    double src = centre - 0.5;
    if (src < 0.0) src = 0.0;
    int k0 = (int)src;
    double f = src - (double)k0;
    if (k0 >= in_size - 1) {
      *first = in_size - 1;
      weights[0] = 1.0f;
      return 1;
    }
    *first = k0;
    weights[0] = (float)(1.0 - f);
    weights[1] = (float)f;
    return 2;
  }
  const double support = scale >= 1.0 ? scale : 1.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  int lo = (int)(centre - support + 0.5);
  if (lo < 0) lo = 0;
  int hi = (int)(centre + support + 0.5);
  if (hi > in_size) hi = in_size;
  int n = hi - lo;
  double w[64];  // only used for the normalising sum; weights are also written out directly
  double total = 0.0;
  const int cap = max_taps(filter, scale);
  if (n > cap) n = cap;
  for (int j = 0; j < n; ++j) {
    double t = ((double)(j + lo) - centre + 0.5) * invscale;
    double v = 1.0 - (t < 0.0 ? -t : t);
    v = v > 0.0 ? v : 0.0;
    if (j < 64) w[j] = v;
    total += v;
  }
  if (n <= 0 || total <= 0.0) {
    int k = (int)floor(centre);
    *first = k < 0 ? 0 : (k >= in_size ? in_size - 1 : k);
    weights[0] = 1.0f;
    return 1;
  }
  *first = lo;
  for (int j = 0; j < n; ++j) {
    double v;
    if (j < 64) {
      v = w[j];
    } else {
      double t = ((double)(j + lo) - centre + 0.5) * invscale;
      v = 1.0 - (t < 0.0 ? -t : t);
      v = v > 0.0 ? v : 0.0;
    }
    weights[j] = (float)(v / total);
  }
  return n;
}

// Most taps compute_plane_taps can produce for a plane subsampled by `sub` (1 or 2).
ENGINE_HD_INLINE int max_plane_taps(int filter, double luma_scale, int sub) {
  const int k = max_taps(filter, luma_scale);
  return sub == 1 ? k : k / sub + 2;
}

// Taps on a plane subsampled by `sub` for resized sample r of an axis with in_luma luma samples
// and luma_scale = in_luma / resized: the luma taps folded onto the plane (see Note [chroma
// upsampling]). `w` must hold max_taps(filter, luma_scale) floats (the luma taps are computed
// in place first); returns the folded count and the first plane index in *first.
ENGINE_HD_INLINE int compute_plane_taps(int filter, int in_luma, double luma_scale, int r, int sub,
                                        float* w, int* first) {
  int f = 0;
  const int n = compute_taps(filter, in_luma, luma_scale, luma_scale * ((double)r + 0.5), w, &f);
  if (sub == 1) {
    *first = f;
    return n;
  }
  // In place: the folded index m = (f + j) / sub - f / sub never exceeds j, so every slot is
  // read before it is written.
  const int c0 = f / sub;
  int last = -1;
  for (int j = 0; j < n; ++j) {
    const int m = (f + j) / sub - c0;
    const float v = w[j];
    if (m != last) {
      w[m] = v;
      last = m;
    } else {
      w[m] += v;
    }
  }
  *first = c0;
  return last + 1;
}

enum ResizeMode : int { kResizeStretch = 0, kResizeShorter = 1, kResizeLetterbox = 2 };

// Note [resize geometry]
// Output sample o on an axis reads resized sample r = o + offset; samples with r outside
// [0, resized) are padding (letterbox, or a crop larger than the resized image).
// * stretch:   resized = resize_to (default: the output size); centre crop to the output.
// * shorter:   shorter side -> S, longer side -> floor(S * long / short) (torchvision Resize);
//              centre crop to the output.
// * letterbox: scale = min(out_h / h, out_w / w); the limiting side is exactly the output size,
//              the other round(side * scale) (half up, at least 1); centred with padding.
// Centre crop offset (resized >= out): round-half-even((resized - out) / 2), as torchvision
// CenterCrop's int(round(...)). Centre pad (resized < out): offset = -floor((out - resized) / 2).
//
// Note [sample aspect ratio]
// An anamorphic frame (DVD, broadcast, HDV: pixels sar_num:sar_den wide:high) is shown w * sar
// wide. `shorter` and `letterbox` keep the displayed shape: the formulas above run on the display
// size (w * sar_num : h * sar_den, in integers), while each axis still resamples its coded
// samples (scale = in / resized), so the resize and the aspect correction are one resampling.
// With sar 1:1 this is the square-pixel geometry; `stretch` ignores the aspect, as it ignores the
// frame's own.
struct AxisGeometry {
  int in;       // input (luma) samples
  int resized;  // samples of the virtual resized image
  int out;      // output samples
  int offset;   // out index o <-> resized index o + offset
};

ENGINE_HD_INLINE int centre_offset(int resized, int out) {
  if (resized >= out) {
    const int d = resized - out;
    int h = d / 2;
    if ((d & 1) && (h & 1)) h += 1;  // .5 cases round to even
    return h;
  }
  return -((out - resized) / 2);
}

// Returns kOk or kBadArgument. to_h/to_w: stretch target (H, W) or shorter side S in to_h;
// sar_num:sar_den the frame's sample aspect ratio (Note [sample aspect ratio]).
ENGINE_HD_INLINE int compute_geometry(int mode, int in_h, int in_w, int out_h, int out_w,
                                      int to_h, int to_w, AxisGeometry* gy, AxisGeometry* gx,
                                      int sar_num = 1, int sar_den = 1) {
  if (in_h <= 0 || in_w <= 0 || out_h <= 0 || out_w <= 0 || sar_num <= 0 || sar_den <= 0)
    return kBadArgument;
  const long long dw = (long long)in_w * sar_num, dh = (long long)in_h * sar_den;  // display shape
  long long rh, rw;
  if (mode == kResizeStretch) {
    rh = to_h; rw = to_w;
  } else if (mode == kResizeShorter) {
    const long long s = to_h;
    if (dh <= dw) { rh = s; rw = s * dw / dh; }
    else { rw = s; rh = s * dh / dw; }
  } else if (mode == kResizeLetterbox) {
    if (out_h * dw <= out_w * dh) {  // height limits
      rh = out_h;
      rw = (2LL * dw * out_h + dh) / (2LL * dh);
    } else {
      rw = out_w;
      rh = (2LL * dh * out_w + dw) / (2LL * dw);
    }
  } else {
    return kBadArgument;
  }
  if (rh < 1) rh = 1;
  if (rw < 1) rw = 1;
  if (rh > (1 << 28) || rw > (1 << 28)) return kBadArgument;
  gy->in = in_h; gy->resized = (int)rh; gy->out = out_h; gy->offset = centre_offset((int)rh, out_h);
  gx->in = in_w; gx->resized = (int)rw; gx->out = out_w; gx->offset = centre_offset((int)rw, out_w);
  return kOk;
}

}  // namespace engine
