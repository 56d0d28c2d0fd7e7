// engine/common.h - portability macros shared by the CPU (.cpp) and the later CUDA (.cu) code.
//
// Every function marked ENGINE_HD must compile for host and device: no std:: calls, no exceptions,
// no dynamic allocation; only <math.h>-style functions that CUDA also provides on the device.
#pragma once

#include <stdint.h>
#include <math.h>

#if defined(__CUDACC__)
#define ENGINE_HD __host__ __device__
#define ENGINE_HD_INLINE __host__ __device__ __forceinline__
#else
#define ENGINE_HD
#define ENGINE_HD_INLINE inline
#endif

namespace engine {

// Status codes returned by the framework-free kernels (the host glue turns them into exceptions).
enum Status : int {
  kOk = 0,
  kBadArgument = 1,
  kUnsupported = 2,
};

ENGINE_HD_INLINE float clampf(float v, float lo, float hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Note [integer samples to float]
// A sample x < 2^23 (8- or 16-bit) as a float, exactly. On the device OR-ing x into the mantissa
// of 2^23 and subtracting 2^23 (an integer op and an FADD) replaces I2F, which runs on the
// quarter-rate conversion pipe; the host uses the plain conversion (the same value).
ENGINE_HD_INLINE float sample_to_float(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(0x4B000000u | x) - 8388608.0f;
#else
  return (float)x;
#endif
}

// Byte i (0..3, little-endian) of a 32-bit word of 8-bit samples as a float, exactly: on the
// device one PRMT puts the byte into the mantissa of 2^23 (see sample_to_float).
ENGINE_HD_INLINE float byte_to_float(uint32_t word, int i) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7440u + (uint32_t)i)) - 8388608.0f;
#else
  return (float)((word >> (8 * i)) & 0xffu);
#endif
}

ENGINE_HD_INLINE int mini(int a, int b) { return a < b ? a : b; }
ENGINE_HD_INLINE int maxi(int a, int b) { return a > b ? a : b; }

// Note [float -> half conversion]
// IEEE-754 binary16, round-to-nearest-even, overflow to +-inf, NaN kept quiet, subnormals exact.
// Pure bit manipulation so the same code runs on hosts without F16C and inside device code.
ENGINE_HD_INLINE uint16_t float_to_half_bits(float f) {
  union { float f; uint32_t u; } v;
  v.f = f;
  const uint32_t x = v.u;
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {                       // inf or NaN
    return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x0200u : 0u));
  }
  if (absx >= 0x477ff000u) {                       // >= 65520 rounds to inf
    return (uint16_t)(sign | 0x7c00u);
  }
  if (absx < 0x38800000u) {                        // below the smallest normal half (2^-14)
    if (absx < 0x33000000u) return (uint16_t)sign; // < 2^-25 rounds to zero
    const uint32_t e = absx >> 23;                 // 102..112
    const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;               // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
  }
  // normal range: rebias exponent 127 -> 15 and round 23 -> 10 mantissa bits
  uint32_t h = ((absx - 0x38000000u) >> 13);
  const uint32_t rem = absx & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return (uint16_t)(sign | h);
}

}  // namespace engine
