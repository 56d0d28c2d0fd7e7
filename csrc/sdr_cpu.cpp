// sdr_cpu.cpp - HDR / wide-gamut Y'CbCr frames -> SDR BT.709 RGB24 (Note [HDR to SDR] in
// engine/transfer.h). The transfer functions are evaluated once into 1-D tables (linear
// interpolation); each row goes through the steps of the Note as passes over float rows, 8 pixels
// at a time with AVX2 (the table reads as gathers), the plain loops elsewhere and for the tails.
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/colour.h"
#include "engine/transfer.h"
#include "frame_args.h"
#include "ops.h"
#include "preprocess_passes.h"
#include "simd.h"

namespace engine_ops {

using namespace engine;
using detail::g_use_avx2;

namespace {

// Note [transfer tables]
// Each table samples a function on N + 1 evenly spaced points of [0, 1] and is read with linear
// interpolation. The two functions with an infinite slope at 0 are tabulated on a warped axis
// where they are smooth enough: the HLG gain Ys^0.2 over v = Ys^(1/4) (v^0.8), the display
// encoding L^(1/2.4) over s = sqrt(L) (s^(5/6)). With N = 4096 the 8-bit result stays within one
// level of the float64 formulas (tests/kernels/test_sdr.py: random frames, every 10-bit grey).
constexpr int kTableN = 4096;

struct Table {
  std::vector<float> v;  // kTableN + 2 entries: the last one repeats f(1) for x == 1
  template <typename F>
  void fill(F f) {
    v.resize(kTableN + 2);
    for (int i = 0; i <= kTableN; ++i) v[i] = (float)f((double)i / kTableN);
    v[kTableN + 1] = v[kTableN];
  }
  // f(x), x in [0, 1]
  ENGINE_ALWAYS_INLINE float operator()(float x) const {
    const float p = x * (float)kTableN;
    const int i = (int)p;
    return v[i] + (p - (float)i) * (v[i + 1] - v[i]);
  }
};

struct SdrTables {
  Table linear;   // E' -> L (PQ, SDR) or scene light E (HLG)
  Table hlg_gain; // v = Ys^(1/4) -> hlg_display_gain(Ys)
  Table encode;   // s = sqrt(L) -> 255 * sdr_encode(L)
};

const SdrTables& tables(int transfer) {
  static SdrTables t[3];
  static std::once_flag once[3];
  std::call_once(once[transfer], [transfer] {
    SdrTables& s = t[transfer];
    s.linear.fill([transfer](double e) { return linearize(transfer, e); });
    s.hlg_gain.fill([](double v) { return hlg_display_gain(v * v * v * v); });
    s.encode.fill([](double x) { return 255.0 * sdr_encode(x * x); });
  });
  return t[transfer];
}

ENGINE_ALWAYS_INLINE float clamp01(float v) { return std::min(std::max(v, 0.0f), 1.0f); }

struct SdrArgs {
  YuvToRgb yuv;          // scaled to [0, 1] signals
  int transfer;
  bool gamut;            // BT.2020 -> BT.709
  float m[3][3];
  float wr, wg, wb;      // luminance weights of the source primaries (HLG OOTF)
  const SdrTables* t;
};

// The R, G, B rows of one thread's current row.
struct RowBuffers {
  std::vector<float> c[3];
  void size(int n) {
    for (auto& v : c)
      if ((int)v.size() < n) v.resize(n);
  }
};

template <typename T, int SX, int CS>
ENGINE_SIMD_CLONES void signals(const T* __restrict Y, const T* __restrict U, const T* __restrict V,
                                int n, const YuvToRgb& m, float* __restrict r, float* __restrict g,
                                float* __restrict b) {
  for (int x = 0; x < n; ++x) {
    const int k = (x / SX) * CS;  // chroma replicated onto the luma grid, as everywhere
    float rgb[3];
    yuv_to_rgb(m, (float)Y[x], (float)U[k], (float)V[k], rgb);
    r[x] = clamp01(rgb[0]);
    g[x] = clamp01(rgb[1]);
    b[x] = clamp01(rgb[2]);
  }
}

// v[x] = t(v[x]); with `encode` t(sqrt(clamp01(v[x]))) + 0.5 instead (Note [transfer tables];
// the 0.5 rounds the 8-bit store)
ENGINE_SIMD_CLONES void apply_table(const Table& t, bool encode, float* __restrict v, int n) {
  if (encode)
    for (int x = 0; x < n; ++x) v[x] = t(sqrtf(clamp01(v[x]))) + 0.5f;
  else
    for (int x = 0; x < n; ++x) v[x] = t(v[x]);
}

ENGINE_SIMD_CLONES void hlg_ootf(const Table& gain, float wr, float wg, float wb, float* __restrict r,
                                 float* __restrict g, float* __restrict b, int n) {
  for (int x = 0; x < n; ++x) {
    const float k = gain(sqrtf(sqrtf(clamp01(wr * r[x] + wg * g[x] + wb * b[x]))));
    r[x] *= k;
    g[x] *= k;
    b[x] *= k;
  }
}

ENGINE_SIMD_CLONES void to_bt709(const float (&m)[3][3], float* __restrict r, float* __restrict g,
                                 float* __restrict b, int n) {
  for (int x = 0; x < n; ++x) {
    const float r0 = r[x], g0 = g[x], b0 = b[x];
    r[x] = m[0][0] * r0 + m[0][1] * g0 + m[0][2] * b0;
    g[x] = m[1][0] * r0 + m[1][1] * g0 + m[1][2] * b0;
    b[x] = m[2][0] * r0 + m[2][1] * g0 + m[2][2] * b0;
  }
}

void interleave(const float* r, const float* g, const float* b, int n, uint8_t* __restrict out) {
  for (int x = 0; x < n; ++x) {
    out[3 * x] = (uint8_t)r[x];
    out[3 * x + 1] = (uint8_t)g[x];
    out[3 * x + 2] = (uint8_t)b[x];
  }
}

#if ENGINE_HAVE_AVX2_KERNELS
using detail::cvt8;

// The same passes, 8 pixels at a time; each returns how many pixels it did (the rest goes to the
// loops above).
ENGINE_AVX2_TARGET inline __m256 clamp01_8(__m256 v) {
  return _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
}
ENGINE_AVX2_TARGET inline __m256 table8(const Table& t, __m256 x) {
  const __m256 p = _mm256_mul_ps(x, _mm256_set1_ps((float)kTableN));
  const __m256i i = _mm256_cvttps_epi32(p);
  const __m256 f = _mm256_sub_ps(p, _mm256_cvtepi32_ps(i));
  const __m256 a = _mm256_i32gather_ps(t.v.data(), i, 4);
  const __m256 b = _mm256_i32gather_ps(t.v.data() + 1, i, 4);
  return _mm256_fmadd_ps(f, _mm256_sub_ps(b, a), a);
}
// 8 chroma samples for luma columns x..x+7: c[(x + j) / SX * CS + LANE], (SX, CS) = (1, 1),
// (2, 1), (2, 2); NV12 (CS = 2) reads both Cb (LANE 0) and Cr (LANE 1) from the start of the
// interleaved row, so no load reaches past the row's last pair.
template <int SX, int CS, int LANE, typename T>
ENGINE_AVX2_TARGET inline __m256 chroma8(const T* c, int x) {
  if (SX == 1) return cvt8(c + x);
  if (CS == 1) {  // 4 samples, each twice
    const T* p = c + x / 2;
    const __m256 v = _mm256_setr_ps((float)p[0], (float)p[1], (float)p[2], (float)p[3], 0, 0, 0, 0);
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  }
  const __m256i pick = LANE == 0 ? _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6)
                                 : _mm256_setr_epi32(1, 1, 3, 3, 5, 5, 7, 7);
  return _mm256_permutevar8x32_ps(cvt8(c + x), pick);  // 4 (Cb, Cr) pairs
}
template <typename T, int SX, int CS>
ENGINE_AVX2_TARGET int signals_avx2(const T* Y, const T* U, const T* V, int n, const YuvToRgb& m,
                                    float* const rgb[3]) {
  int x = 0;
  for (; x + 8 <= n; x += 8) {
    const __m256 y = cvt8(Y + x), u = chroma8<SX, CS, 0>(U, x);
    const __m256 v = CS == 2 ? chroma8<SX, CS, 1>(U, x) : chroma8<SX, CS, 0>(V, x);
    for (int c = 0; c < 3; ++c) {
      __m256 e = _mm256_fmadd_ps(_mm256_set1_ps(m.y_gain), y, _mm256_set1_ps(m.bias[c]));
      e = _mm256_fmadd_ps(_mm256_set1_ps(m.cb_gain[c]), u, e);
      e = _mm256_fmadd_ps(_mm256_set1_ps(m.cr_gain[c]), v, e);
      _mm256_storeu_ps(rgb[c] + x, clamp01_8(e));
    }
  }
  return x;
}
ENGINE_AVX2_TARGET int apply_table_avx2(const Table& t, bool encode, float* v, int n) {
  int x = 0;
  for (; x + 8 <= n; x += 8) {
    const __m256 in = _mm256_loadu_ps(v + x);
    const __m256 out = encode ? _mm256_add_ps(table8(t, _mm256_sqrt_ps(clamp01_8(in))), _mm256_set1_ps(0.5f))
                              : table8(t, in);
    _mm256_storeu_ps(v + x, out);
  }
  return x;
}
ENGINE_AVX2_TARGET int hlg_ootf_avx2(const Table& gain, float wr, float wg, float wb, float* r,
                                     float* g, float* b, int n) {
  int x = 0;
  for (; x + 8 <= n; x += 8) {
    const __m256 R = _mm256_loadu_ps(r + x), G = _mm256_loadu_ps(g + x), B = _mm256_loadu_ps(b + x);
    __m256 ys = _mm256_mul_ps(_mm256_set1_ps(wr), R);
    ys = _mm256_fmadd_ps(_mm256_set1_ps(wg), G, ys);
    ys = _mm256_fmadd_ps(_mm256_set1_ps(wb), B, ys);
    const __m256 k = table8(gain, _mm256_sqrt_ps(_mm256_sqrt_ps(clamp01_8(ys))));
    _mm256_storeu_ps(r + x, _mm256_mul_ps(R, k));
    _mm256_storeu_ps(g + x, _mm256_mul_ps(G, k));
    _mm256_storeu_ps(b + x, _mm256_mul_ps(B, k));
  }
  return x;
}
#endif

void table_pass(const Table& t, bool encode, float* v, int n) {
  int d = 0;  // the AVX2 kernel takes whole groups of 8 pixels, the plain loop the rest
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) d = apply_table_avx2(t, encode, v, n);
#endif
  apply_table(t, encode, v + d, n - d);
}

// R'G'B' signals of one row for the chroma layout (SX, CS), as table_pass splits its work.
template <typename T, int SX, int CS>
void signal_pass(const T* Y, const T* U, const T* V, int n, const YuvToRgb& m, float* const rgb[3]) {
  int d = 0;
#if ENGINE_HAVE_AVX2_KERNELS
  if (g_use_avx2) d = signals_avx2<T, SX, CS>(Y, U, V, n, m, rgb);
#endif
  const int cd = d / SX * CS;  // the plain loop indexes chroma from its start: d is a multiple of 8
  signals<T, SX, CS>(Y + d, U + cd, V + cd, n - d, m, rgb[0] + d, rgb[1] + d, rgb[2] + d);
}

template <typename T>
void row_to_sdr(const FrameDesc& f, const SdrArgs& a, int y, RowBuffers& buf, uint8_t* out) {
  const PlaneDesc& py = f.planes[0];
  const PlaneDesc& pu = f.planes[1];
  const bool nv12 = f.format == kFmtNV12;
  const PlaneDesc& pv = f.planes[nv12 ? 1 : 2];
  const T* Y = reinterpret_cast<const T*>(static_cast<const char*>(py.data) + (long long)y * py.row_stride);
  const T* U = reinterpret_cast<const T*>(static_cast<const char*>(pu.data) +
                                          (long long)(y / pu.sub_y) * pu.row_stride);
  const T* V = reinterpret_cast<const T*>(static_cast<const char*>(pv.data) +
                                          (long long)(y / pv.sub_y) * pv.row_stride) + (nv12 ? 1 : 0);
  const int n = f.width;
  buf.size(n);
  float *r = buf.c[0].data(), *g = buf.c[1].data(), *b = buf.c[2].data();
  const SdrTables& t = *a.t;
  float* const rgb[3] = {r, g, b};
  if (pu.sub_x == 1) signal_pass<T, 1, 1>(Y, U, V, n, a.yuv, rgb);
  else if (nv12) signal_pass<T, 2, 2>(Y, U, V, n, a.yuv, rgb);
  else signal_pass<T, 2, 1>(Y, U, V, n, a.yuv, rgb);
  for (float* c : rgb) table_pass(t.linear, false, c, n);
  if (a.transfer == kTransferHLG) {
    int d = 0;
#if ENGINE_HAVE_AVX2_KERNELS
    if (g_use_avx2) d = hlg_ootf_avx2(t.hlg_gain, a.wr, a.wg, a.wb, r, g, b, n);
#endif
    hlg_ootf(t.hlg_gain, a.wr, a.wg, a.wb, r + d, g + d, b + d, n - d);
  }
  if (a.gamut) to_bt709(a.m, r, g, b, n);
  for (float* c : rgb) table_pass(t.encode, true, c, n);
  interleave(r, g, b, n, out);
}

}  // namespace

void to_sdr_rgb24(py::array_t<uint8_t> out, const py::handle& frame, int transfer, int primaries,
                  int threads) {
  std::vector<py::array> keep;
  const FrameDesc f = parse_frame(frame, "", keep);
  if (!is_yuv(f.format)) fail("frame must be Y'CbCr (i420, nv12, i422, i444)");
  if (transfer < kTransferSDR || transfer > kTransferHLG) fail("transfer must be 0 (sdr), 1 (pq) or 2 (hlg)");
  if (primaries != kPrimariesBT709 && primaries != kPrimariesBT2020)
    fail("primaries must be 0 (bt709) or 1 (bt2020)");
  if (out.ndim() != 3 || out.shape(0) != f.height || out.shape(1) != f.width || out.shape(2) != 3)
    fail("out must have shape (height, width, 3)");  // (H, W, RGB)
  if (!(out.flags() & py::array::c_style) || !out.writeable()) fail("out must be C-contiguous and writeable");

  SdrArgs a;
  a.yuv = make_yuv_to_rgb(f.matrix, f.full_range, f.bit_depth);
  a.yuv.y_gain /= 255.0f;  // signals in [0, 1] rather than on the 0..255 scale
  for (int c = 0; c < 3; ++c) {
    a.yuv.cb_gain[c] /= 255.0f;
    a.yuv.cr_gain[c] /= 255.0f;
    a.yuv.bias[c] /= 255.0f;
  }
  a.transfer = transfer;
  a.gamut = primaries == kPrimariesBT2020;
  double m[3][3];
  bt2020_to_bt709(m);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) a.m[r][c] = (float)m[r][c];
  double kr, kb;
  luma_weights(primaries == kPrimariesBT2020 ? kBT2020 : kBT709, &kr, &kb);
  a.wr = (float)kr;
  a.wb = (float)kb;
  a.wg = (float)(1.0 - kr - kb);
  a.t = &tables(transfer);

  uint8_t* dst = out.mutable_data();
  const long long row = (long long)f.width * 3;
  {
    py::gil_scoped_release nogil;
#ifdef _OPENMP
    const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt) if (nt > 1 && f.height > 16)
#endif
    {
      RowBuffers buf;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
      for (int y = 0; y < f.height; ++y) {
        if (f.bit_depth > 8) row_to_sdr<uint16_t>(f, a, y, buf, dst + y * row);
        else row_to_sdr<uint8_t>(f, a, y, buf, dst + y * row);
      }
    }
  }
  (void)threads;
}

}  // namespace engine_ops
