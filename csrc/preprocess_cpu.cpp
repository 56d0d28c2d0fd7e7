// preprocess_cpu.cpp - host glue and CPU loops of the fused preprocessing op.
//
// One pass per output row, over the source columns inside the horizontal support of the ROI:
// * clamp="output" and RGB input (process_rows): for every plane a vertical pass over the source
//   rows the row's taps touch, a horizontal pass to the output pixels, then colour conversion +
//   clamp + normalisation + layout/dtype store. See Note [fused resize order].
// * clamp="source" on Y'CbCr (process_rows_source): source rows converted to clamped RGB once
//   each, then the same two passes on the three RGB planes. See Note [clamp before resampling].
//
// preprocess_passes.h: the tap tables and passes both paths share (preprocess_passes.cpp);
// preprocess_clamp_source.cpp: the clamp="source" path. Here: the clamp="output" path, the driver
// (row blocks over threads) and the host glue.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/preprocess.h"
#include "frame_args.h"
#include "ops.h"
#include "preprocess_passes.h"
#include "simd.h"

namespace engine_ops {

using namespace engine;

namespace detail {
namespace {

// Small cache so a batch of same-sized frames builds each table once per call.
struct TableCache {
  std::vector<std::unique_ptr<TapTable>> tables;
  const TapTable* get(int f, int il, int r, int o, int off, int s, int pin) {
    for (auto& t : tables)
      if (t->same(f, il, r, o, off, s, pin)) return t.get();
    auto t = std::make_unique<TapTable>();
    t->filter = f; t->in_luma = il; t->resized = r; t->out = o; t->offset = off; t->sub = s;
    t->plane_in = pin;
    build_table(*t);
    tables.push_back(std::move(t));
    return tables.back().get();
  }
};

// The rows output row iy adds to the window of row iy - 1.
ENGINE_ALWAYS_INLINE void prefetch_rows_of(const PlaneDesc& pl, const TapTable& ty,
                                           const TapTable& tx, int iy, int bps) {
  const int n = ty.hi - ty.lo;
  if (iy <= 0 || iy >= n) return;
  const int r0 = std::max(ty.first[iy - 1] + ty.K, ty.first[iy]);
  const int r1 = ty.first[iy] + ty.K;
  const long long c0 = (long long)tx.src_lo * pl.channels * bps;
  const long long c1 = (long long)tx.src_hi * pl.channels * bps;
  for (int r = r0; r < r1; ++r) prefetch_lines(pl, r, c0, c1);
}

#ifndef ENGINE_PREFETCH_DIST
#define ENGINE_PREFETCH_DIST 2
#endif
constexpr int kPrefetchRows = ENGINE_PREFETCH_DIST;  // output rows ahead

ENGINE_ALWAYS_INLINE void prefetch_next_rows(const PlaneDesc& pl, const TapTable& ty,
                                             const TapTable& tx, int iy, int bps, bool block_start) {
  if (block_start)
    for (int d = 1; d < kPrefetchRows; ++d) prefetch_rows_of(pl, ty, tx, iy + d, bps);
  prefetch_rows_of(pl, ty, tx, iy + kPrefetchRows, bps);
}

// hpass + colour conversion + normalisation + store of output row y from the vertical-pass
// rows vt[p] of every plane.
void finish_row(const FrameWork& fw, const PreprocessArgs& a, int b, int y, float* const vt[3],
                void* out, ThreadBuffers& buf, const YuvToRgb& m) {
  const FrameDesc& f = *fw.frame;
  const TapTable& tx0 = *fw.tx[0];
  const int x_lo = tx0.lo, x_hi = tx0.hi, nx = x_hi - x_lo;
  for (int p = 0; p < f.num_planes; ++p) {
    const int nc = f.planes[p].channels;
    const TapTable& tx = *fw.tx[p];
    float* hr = buf.hrow[p].data();
    if (nc == 1) hpass1(vt[p], tx, hr);
    else if (nc == 2) hpass2(vt[p], tx, hr);
    else hpass3(vt[p], tx, hr);
  }
  const int st = std::max(nx, 1);
  float* rgb[3] = {buf.rgb.data(), buf.rgb.data() + st, buf.rgb.data() + 2 * st};
  const float* crgb[3] = {rgb[0], rgb[1], rgb[2]};
  if (f.format == kFmtRGB24 || f.format == kFmtBGR24) {
    convert_rgb(buf.hrow[0].data(), f.format == kFmtBGR24, nx, a.norm, a.bgr_out, rgb[0], rgb[1],
                rgb[2]);
  } else if (f.format == kFmtNV12) {
    const float* uv = buf.hrow[1].data();
    convert_yuv(buf.hrow[0].data(), uv, uv + 1, 2, nx, m, a.norm, a.bgr_out, rgb[0], rgb[1],
                rgb[2]);
  } else {
    convert_yuv(buf.hrow[0].data(), buf.hrow[1].data(), buf.hrow[2].data(), 1, nx, m, a.norm,
                a.bgr_out, rgb[0], rgb[1], rgb[2]);
  }
  if (a.fp16) store_row<uint16_t>(out, a, b, y, crgb, x_lo, x_hi);
  else store_row<float>(out, a, b, y, crgb, x_lo, x_hi);
}

void process_rows(const FrameWork& fw, const PreprocessArgs& a, int b, int y0, int y1, void* out,
                  ThreadBuffers& buf) {
  const FrameDesc& f = *fw.frame;
  if (a.clamp_source && is_yuv(f.format)) return process_rows_source(fw, a, b, y0, y1, out, buf);
  const TapTable& ty0 = *fw.ty[0];
  const TapTable& tx0 = *fw.tx[0];
  const int nx = tx0.hi - tx0.lo;
  for (int p = 0; p < f.num_planes; ++p) {
    const int nc = f.planes[p].channels;
    const TapTable& tx = *fw.tx[p];
    const size_t need = (size_t)std::max(tx.src_hi - tx.src_lo, 1) * nc + 16;  // + zero pad
    for (auto* v : {&buf.vtmp[p], &buf.vtmp2[p]})
      if (v->size() < need) v->resize(need);
    if (buf.hrow[p].size() < (size_t)std::max(nx, 1) * nc) buf.hrow[p].resize((size_t)std::max(nx, 1) * nc);
  }
  if (buf.rgb.size() < (size_t)std::max(nx, 1) * 3) buf.rgb.resize((size_t)std::max(nx, 1) * 3);
  const YuvToRgb m = make_yuv_to_rgb(f.matrix, f.full_range, f.bit_depth);
  const int bps = f.bit_depth > 8 ? 2 : 1;
  float* vt[3] = {buf.vtmp[0].data(), buf.vtmp[1].data(), buf.vtmp[2].data()};
  float* vt2[3] = {buf.vtmp2[0].data(), buf.vtmp2[1].data(), buf.vtmp2[2].data()};

  for (int y = y0; y < y1; ++y) {
    if (y < ty0.lo || y >= ty0.hi || nx <= 0) {
      store_pad_row(out, a, b, y);
      continue;
    }
    const bool pair = g_use_avx2 && y + 1 < y1 && y + 1 < ty0.hi;
    for (int p = 0; p < f.num_planes; ++p) {
      const PlaneDesc& pl = f.planes[p];
      const TapTable& ty = *fw.ty[p];
      const TapTable& tx = *fw.tx[p];
      const int iy = y - ty.lo;
      if (!pair) prefetch_next_rows(pl, ty, tx, iy, bps, y == y0);
      const int nc = pl.channels;
      const unsigned char* col0 =
          static_cast<const unsigned char*>(pl.data) + (long long)tx.src_lo * nc * bps;
      const int n = (tx.src_hi - tx.src_lo) * nc;
      const float* w = &ty.w[(size_t)iy * ty.K];
      for (int i = n; i < n + 16; ++i) vt[p][i] = 0.0f;  // hpass_dot reads up to KP past the end
#if ENGINE_HAVE_AVX2_KERNELS
      if (pair) {
        for (int i = n; i < n + 16; ++i) vt2[p][i] = 0.0f;
        // union window of rows iy and iy + 1 with per-row weights (0 outside each window)
        const int fa = ty.first[iy], fb = ty.first[iy + 1], K = ty.K;
        const int r0 = std::min(fa, fb), r1 = std::max(fa, fb) + K;
        const int nr = r1 - r0;
        float wa[130], wb[130];
        if (nr <= 130) {
          for (int r = 0; r < nr; ++r) {
            const int ja = r0 + r - fa, jb = r0 + r - fb;
            wa[r] = (ja >= 0 && ja < K) ? w[ja] : 0.0f;
            wb[r] = (jb >= 0 && jb < K) ? ty.w[(size_t)(iy + 1) * K + jb] : 0.0f;
          }
          const unsigned char* base = col0 + (long long)r0 * pl.row_stride;
          // the rows the next pair adds to this one's window, asked for as this pair sweeps
          Prefetch pf{buf.prefetch};
          pf.rows.clear();
          const int nt = ty.hi - ty.lo;
          if (y == y0) prefetch_next_rows(pl, ty, tx, iy, bps, true);  // a block starts cold
          if (iy + 2 < nt) {
            const int from = std::max(r1, ty.first[iy + 2]), to = ty.first[std::min(iy + 3, nt - 1)] + K;
            for (int r = from; r < to; ++r)
              pf.rows.push_back(reinterpret_cast<const char*>(col0) + (long long)r * pl.row_stride);
          }
          pf.na = (int)pf.rows.size();
          pf.a_num = bps;
          if (bps == 1) vpass2_avx2<uint8_t>(base, pl.row_stride, nr, wa, wb, n, vt[p], vt2[p], pf);
          else vpass2_avx2<uint16_t>(base, pl.row_stride, nr, wa, wb, n, vt[p], vt2[p], pf);
          continue;
        }
        // very large downscale: fall through to two single passes
        const unsigned char* base2 = col0 + (long long)fb * pl.row_stride;
        vpass(bps, base2, pl.row_stride, K, &ty.w[(size_t)(iy + 1) * K], n, vt2[p]);
      }
#endif
      const unsigned char* base = col0 + (long long)ty.first[iy] * pl.row_stride;
      vpass(bps, base, pl.row_stride, ty.K, w, n, vt[p]);
    }
    finish_row(fw, a, b, y, vt, out, buf, m);
    if (pair) {
      finish_row(fw, a, b, y + 1, vt2, out, buf, m);
      ++y;
    }
  }
}

// CPU kernel: frames[0..n) -> out. Returns a Status.
int preprocess_cpu(const FrameDesc* frames, int n, const PreprocessArgs& a, void* out,
                   int threads) {
  TableCache cache;
  std::vector<FrameWork> work(n);
  for (int b = 0; b < n; ++b) {
    const FrameDesc& f = frames[b];
    AxisGeometry gy, gx;
    if (compute_geometry(a.mode, f.height, f.width, a.out_h, a.out_w, a.to_h, a.to_w, &gy, &gx,
                         f.sar_num, f.sar_den) != kOk)
      return kBadArgument;
    work[b].frame = &f;
    for (int p = 0; p < f.num_planes; ++p) {
      const PlaneDesc& pl = f.planes[p];
      work[b].ty[p] = cache.get(a.filter, gy.in, gy.resized, gy.out, gy.offset, pl.sub_y,
                                pl.height);
      work[b].tx[p] = cache.get(a.filter, gx.in, gx.resized, gx.out, gx.offset, pl.sub_x,
                                pl.width);
    }
  }
#ifdef _OPENMP
  const int nt_blk = threads > 0 ? threads : omp_get_max_threads();
#else
  const int nt_blk = 1;
#endif
  // Row blocks: long enough that the source rows stream through the prefetcher (each block
  // start is a cold miss on ~2 x scale source rows), short enough for >= 4 tasks per thread.
  const long long ideal = ((long long)a.out_h * n) / (4LL * nt_blk);
  const int block = (int)std::max(8LL, std::min<long long>(a.out_h, ideal));
  const int blocks_per_frame = (a.out_h + block - 1) / block;
  const long long tasks = (long long)n * blocks_per_frame;
#ifdef _OPENMP
  const int nt = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(nt) if (tasks > 1 && nt > 1)
#endif
  {
    ThreadBuffers buf;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (long long t = 0; t < tasks; ++t) {
      const int b = (int)(t / blocks_per_frame);
      const int y0 = (int)(t % blocks_per_frame) * block;
      const int y1 = std::min(y0 + block, a.out_h);
      process_rows(work[b], a, b, y0, y1, out, buf);
    }
  }
  (void)threads;
  return kOk;
}

}  // namespace
}  // namespace detail

using namespace detail;

bool avx2_kernels_active() { return g_use_avx2; }
bool avx512_kernels_active() { return g_use_avx512; }

void preprocess(py::array out, const py::list& frames, int mode, int to_h, int to_w, int filter,
                double scale, std::array<double, 3> mean, std::array<double, 3> stdv, bool bgr_out,
                bool nhwc, double pad_value, bool clamp_source, int threads) {
  // out: (B, 3, H, W) or (B, H, W, 3), C-contiguous float32 / float16
  if (out.ndim() != 4) fail("out must be 4-D, got ndim=" + std::to_string(out.ndim()));
  const bool fp16 = out.dtype().kind() == 'f' && out.itemsize() == 2;
  const bool fp32 = out.dtype().kind() == 'f' && out.itemsize() == 4;
  if (!fp16 && !fp32) fail("out dtype must be float32 or float16");
  if (!(out.flags() & py::array::c_style)) fail("out must be C-contiguous");
  if (!out.writeable()) fail("out must be writeable");
  const long long B = out.shape(0);
  if (B != (long long)frames.size())
    fail("out.shape[0]=" + std::to_string(B) + " != len(frames)=" + std::to_string(frames.size()));
  if ((nhwc ? out.shape(3) : out.shape(1)) != 3) fail("out must have 3 channels");
  PreprocessArgs a;
  a.out_h = (int)(nhwc ? out.shape(1) : out.shape(2));
  a.out_w = (int)(nhwc ? out.shape(2) : out.shape(3));
  a.mode = mode;
  a.to_h = to_h;
  a.to_w = to_w;
  a.filter = filter;
  if (mode < 0 || mode > 2) fail("bad resize mode");
  if (filter != kFilterAntialias && filter != kFilterBilinear) fail("bad filter");
  if (mode != kResizeLetterbox && (to_h <= 0 || (mode == kResizeStretch && to_w <= 0)))
    fail("resize target must be positive");
  for (int c = 0; c < 3; ++c)
    if (!(stdv[c] != 0.0)) fail("std must be non-zero");
  a.norm = make_normalize(scale, mean.data(), stdv.data());
  a.bgr_out = bgr_out;
  a.nhwc = nhwc;
  a.fp16 = fp16;
  a.pad_value = (float)pad_value;
  a.clamp_source = clamp_source;

  const int n = (int)B;
  std::vector<FrameDesc> descs(n);
  std::vector<py::array> keep;  // plane arrays stay referenced while the GIL is released
  keep.reserve((size_t)n * 3);
  for (int b = 0; b < n; ++b) {
    const std::string where = "frame " + std::to_string(b) + ": ";
    descs[b] = parse_frame(frames[b], where, keep);
    if (descs[b].matrix == kBT2020) fail(where + "matrix must be bt601 or bt709");
  }
  void* dst = out.mutable_data();
  int status;
  {
    py::gil_scoped_release nogil;
    status = preprocess_cpu(descs.data(), n, a, dst, threads);
  }
  if (status != kOk) fail("preprocess: invalid geometry (status " + std::to_string(status) + ")");
}

py::tuple resample_taps(int filter, int in_size, int resized, int out, int offset, int sub,
                        int plane_in) {
  if (in_size <= 0 || resized <= 0 || out <= 0 || plane_in <= 0 || sub < 1)
    fail("sizes must be positive");
  TapTable t;
  t.filter = filter; t.in_luma = in_size; t.resized = resized; t.out = out; t.offset = offset;
  t.sub = sub; t.plane_in = plane_in;
  build_table(t);
  const int n = t.hi - t.lo;
  py::array_t<long long> first({(py::ssize_t)out});
  py::array_t<float> w({(py::ssize_t)out, (py::ssize_t)t.K});
  auto fm = first.mutable_unchecked<1>();
  auto wm = w.mutable_unchecked<2>();
  for (int o = 0; o < out; ++o) {
    const bool valid = o >= t.lo && o < t.hi;
    fm(o) = valid ? t.first[o - t.lo] : -1;
    for (int j = 0; j < t.K; ++j) wm(o, j) = valid ? t.w[(size_t)(o - t.lo) * t.K + j] : 0.0f;
  }
  (void)n;
  return py::make_tuple(first, w);
}

py::tuple resize_geometry(int mode, int in_h, int in_w, int out_h, int out_w, int to_h, int to_w,
                          int sar_num, int sar_den) {
  AxisGeometry gy, gx;
  if (compute_geometry(mode, in_h, in_w, out_h, out_w, to_h, to_w, &gy, &gx, sar_num, sar_den) != kOk)
    fail("invalid geometry");
  return py::make_tuple(py::make_tuple(gy.resized, gy.offset), py::make_tuple(gx.resized, gx.offset));
}

}  // namespace engine_ops
