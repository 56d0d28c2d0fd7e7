// engine/pooling.h - element math of the pooling kernels (masked mean, segment mean/max/window max).
#pragma once

#include "engine/common.h"

namespace engine {

// Note [pooling]
// masked_mean:  out[b, d] = sum_t m[b, t] x[b, t, d] / max(sum_t m[b, t], 1e-9)
//               (sentence-transformers mean pooling; an all-zero mask gives zeros), then optionally
//               out /= max(||out||_2, 1e-12) (torch.nn.functional.normalize).
// segment_pool: rows offsets[s] .. offsets[s+1]-1 of x; "mean", "max" (per dimension), or
//               "window_max": max over every length-W window (stride 1) of the window mean, per
//               dimension; a segment shorter than W uses its full mean. Empty segments give zeros.
// Accumulation is in double so long segments do not lose precision.
// The CPU loops (Note [pooling CPU loops], pooling_cpu.cpp) vectorise across d but keep every
// element's operations and their order: CPU means, max and window_max equal a scalar loop over t
// (over rows) per element bit for bit; only the L2 norm's sum of squares is taken in 4 lanes.

ENGINE_HD_INLINE double safe_denominator(double s) { return s > 1e-9 ? s : 1e-9; }

ENGINE_HD_INLINE double l2_scale(double sum_sq) {
  const double n = sqrt(sum_sq);
  return 1.0 / (n > 1e-12 ? n : 1e-12);
}

ENGINE_HD_INLINE float fmax_nan(float a, float b) {  // propagates NaN like torch.max
  return (a != a || a > b) ? a : b;
}

}  // namespace engine
