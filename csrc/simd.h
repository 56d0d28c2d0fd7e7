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

#if defined(__GNUC__)
#define ENGINE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ENGINE_ALWAYS_INLINE inline
#endif
