// simd.h - CPU-only helpers for runtime-dispatched SIMD (never included by device code).
#pragma once

// Note [portable SIMD]
// The extension is built for the x86-64 baseline (no -march=native). Hot loops are compiled
// twice with GCC/Clang function multi-versioning: an x86-64-v3 clone (AVX2 + FMA + F16C) and the
// baseline; the loader picks one at run time from the CPU (ifunc). Other compilers/architectures
// get the plain loop.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(_M_X64)) && !defined(__CUDACC__) && \
    !defined(ENGINE_NO_CLONES) && defined(__linux__)
#define ENGINE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define ENGINE_HAVE_CLONES 1
#else
#define ENGINE_SIMD_CLONES
#define ENGINE_HAVE_CLONES 0
#endif

// Hand-written AVX2/FMA kernels (intrinsics in functions compiled for that target only, picked at
// run time with __builtin_cpu_supports) where GCC's auto-vectoriser falls short.
#if ENGINE_HAVE_CLONES
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and -Wmaybe-uninitialized flags
// them where they are inlined (GCC bug 105593); the diagnostic state of the header's lines counts.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define ENGINE_HAVE_AVX2_KERNELS 1
#define ENGINE_AVX2_TARGET __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
// AVX-512 (F, BW, VL) kernels where 32 vector registers change the algorithm (Note [converted in
// registers] in preprocess_clamp_source.cpp), picked at run time like the AVX2 ones.
#define ENGINE_HAVE_AVX512_KERNELS 1
#define ENGINE_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
inline bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#else
#define ENGINE_HAVE_AVX2_KERNELS 0
#define ENGINE_HAVE_AVX512_KERNELS 0
#define ENGINE_AVX2_TARGET
#define ENGINE_AVX512_TARGET
inline bool cpu_has_avx2_fma() { return false; }
inline bool cpu_has_avx512() { return false; }
#endif

#if defined(__GNUC__)
#define ENGINE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ENGINE_ALWAYS_INLINE inline
#endif

// Portable 8-wide float vectors (GCC/Clang vector extensions): compiled to AVX2 in the
// x86-64-v3 clone and to pairs of SSE2 registers in the baseline clone.
#if defined(__GNUC__) && !defined(ENGINE_NO_VECTOR_EXT)
#define ENGINE_HAVE_VEC8 1
#include <stdint.h>
#include <string.h>
namespace engine_simd {
typedef float v8f __attribute__((vector_size(32)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
ENGINE_ALWAYS_INLINE v8f loadu(const float* p) { v8f v; memcpy(&v, p, sizeof(v)); return v; }
ENGINE_ALWAYS_INLINE void storeu(float* p, v8f v) { memcpy(p, &v, sizeof(v)); }
ENGINE_ALWAYS_INLINE v8f load8(const uint8_t* p) {
  v8u8 v; memcpy(&v, p, sizeof(v)); return __builtin_convertvector(v, v8f);
}
ENGINE_ALWAYS_INLINE v8f load8(const uint16_t* p) {
  v8u16 v; memcpy(&v, p, sizeof(v)); return __builtin_convertvector(v, v8f);
}
ENGINE_ALWAYS_INLINE v8f splat(float w) { return (v8f){w, w, w, w, w, w, w, w}; }
#if defined(__clang__)
#define ENGINE_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int v8i __attribute__((vector_size(32)));
#define ENGINE_SHUF(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif
// hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]  (AVX vhaddps)
ENGINE_ALWAYS_INLINE v8f hadd(v8f a, v8f b) {
  return ENGINE_SHUF(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + ENGINE_SHUF(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}
// r[i] = sum of the elements of p[i]
ENGINE_ALWAYS_INLINE v8f reduce8(const v8f* p) {
  const v8f t0 = hadd(hadd(p[0], p[1]), hadd(p[2], p[3]));
  const v8f t1 = hadd(hadd(p[4], p[5]), hadd(p[6], p[7]));
  return ENGINE_SHUF(t0, t1, 0, 1, 2, 3, 8, 9, 10, 11) + ENGINE_SHUF(t0, t1, 4, 5, 6, 7, 12, 13, 14, 15);
}
}  // namespace engine_simd
#else
#define ENGINE_HAVE_VEC8 0
#endif
