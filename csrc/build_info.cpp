// build_info.cpp - how the extension was compiled and what the running CPU supports.
#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>

#include "ops.h"
#include "simd.h"

#ifndef VERSION_INFO
#define VERSION_INFO "dev"
#endif
#define ENGINE_STR2(x) #x
#define ENGINE_STR(x) ENGINE_STR2(x)

namespace engine_ops {

py::dict build_info() {
  py::dict d;
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  d["compiler"] = std::string("msvc ") + ENGINE_STR(_MSC_VER);
#else
  d["compiler"] = std::string("unknown");
#endif
#ifdef _OPENMP
  d["openmp"] = true;
  d["openmp_version"] = (int)_OPENMP;
  d["max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["openmp_version"] = 0;
  d["max_threads"] = 1;
#endif
  py::list compiled;
  compiled.append("baseline");
#if ENGINE_HAVE_CLONES
  compiled.append("avx2");  // x86-64-v3 clone: AVX2 + FMA + F16C
#endif
#if ENGINE_HAVE_AVX512_KERNELS
  compiled.append("avx512");  // hand-written AVX-512 F/BW/VL kernels
#endif
  d["simd_compiled"] = compiled;
  py::list runtime;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) runtime.append("sse4.2");
  if (__builtin_cpu_supports("avx")) runtime.append("avx");
  if (__builtin_cpu_supports("avx2")) runtime.append("avx2");
  if (__builtin_cpu_supports("fma")) runtime.append("fma");
  if (__builtin_cpu_supports("avx512f")) runtime.append("avx512f");
  bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            __builtin_cpu_supports("bmi2");
  d["simd_selected"] = std::string(ENGINE_HAVE_CLONES && v3 ? "avx2" : "baseline");
  d["avx2_kernels"] = avx2_kernels_active();
  d["avx512_kernels"] = avx512_kernels_active();
#else
  d["simd_selected"] = std::string("baseline");
#endif
  d["simd_runtime"] = runtime;
  d["cuda_compiled"] = false;
  d["version"] = std::string(ENGINE_STR(VERSION_INFO));
  return d;
}

}  // namespace engine_ops
