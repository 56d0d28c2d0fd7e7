// engine/normalize.h - per-channel normalisation with the scale folded in.
#pragma once

#include "engine/common.h"

namespace engine {

// Note [normalisation]
// out[c] = (clamp(rgb[c], 0, 255) * scale - mean[c]) / std[c] = clamp(rgb[c]) * gain[c] + bias[c]
// with gain = scale * inv_std and bias = -mean * inv_std computed once (inv_std stored, no divide
// per pixel). mean/std are given in the OUTPUT channel order.
struct Normalize {
  float gain[3];
  float bias[3];
  bool identity;  // gain == 1 and bias == 0: the kernels may skip the multiply-add
};

ENGINE_HD_INLINE Normalize make_normalize(double scale, const double mean[3], const double std[3]) {
  Normalize n;
  n.identity = true;
  for (int c = 0; c < 3; ++c) {
    const double inv_std = 1.0 / std[c];
    n.gain[c] = (float)(scale * inv_std);
    n.bias[c] = (float)(-mean[c] * inv_std);
    if (n.gain[c] != 1.0f || n.bias[c] != 0.0f) n.identity = false;
  }
  return n;
}

ENGINE_HD_INLINE float normalize_value(const Normalize& n, int c, float rgb) {
  return clampf(rgb, 0.0f, 255.0f) * n.gain[c] + n.bias[c];
}

}  // namespace engine
