// cuda/preprocess_cuda.cu - host glue of the fused CUDA preprocessing op: validation, tap tables
// (built with the resample.h functions the CPU kernel uses), one upload + one kernel launch on the
// caller's stream. See Note [CUDA preprocess: clamp before resampling] in preprocess_kernel.cuh.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/host_utils.cuh"
#include "cuda/ops_cuda.h"
#include "cuda/preprocess_kernel.cuh"
#include "cuda/preprocess_kernel_8bit.cuh"
#include "cuda/preprocess_kernel_vfirst.cuh"
#include "engine/preprocess.h"
#include "engine/resample.h"

namespace engine_cuda {

using namespace engine;
using engine::cuda::FramePlanes;
using engine::cuda::KernelParams;

namespace {

// Tap table of one axis on the luma grid: output o reads resized sample o + offset; count 0 marks
// padding. Weights come from compute_plane_taps (sub = 1: the luma taps; chroma is replicated onto
// the luma grid in the kernel, Note [chroma upsampling]).
struct AxisTable {
  int K = 1;
  std::vector<int> first, count;
  std::vector<float> w;
};

AxisTable build_axis(int filter, const AxisGeometry& g) {
  AxisTable t;
  const double scale = (double)g.in / (double)g.resized;
  t.K = max_plane_taps(filter, scale, 1);
  t.first.assign(g.out, 0);
  t.count.assign(g.out, 0);
  t.w.assign((size_t)g.out * t.K, 0.0f);
  std::vector<float> tmp(max_taps(filter, scale) + 1);
  for (int o = 0; o < g.out; ++o) {
    const int r = o + g.offset;
    if (r < 0 || r >= g.resized) continue;
    int first = 0;
    const int n = compute_plane_taps(filter, g.in, scale, r, 1, tmp.data(), &first);
    if (n < 1 || n > t.K || first < 0 || first + n > g.in)
      throw std::logic_error("tap table out of range");  // cannot happen (resample.h contract)
    t.first[o] = first;
    t.count[o] = n;
    for (int j = 0; j < n; ++j) t.w[(size_t)o * t.K + j] = tmp[j];
  }
  return t;
}

// Source range [lo, hi) read by each tile of `tile` outputs.
std::vector<int> tile_ranges(const AxisTable& t, int out, int tile) {
  const int n = (out + tile - 1) / tile;
  std::vector<int> r(2 * (size_t)n, 0);
  for (int i = 0; i < n; ++i) {
    int lo = 1 << 30, hi = -1;
    for (int o = i * tile; o < out && o < (i + 1) * tile; ++o) {
      if (t.count[o] == 0) continue;
      lo = std::min(lo, t.first[o]);
      hi = std::max(hi, t.first[o] + t.count[o]);
    }
    if (hi < 0) lo = hi = 0;
    r[2 * i] = lo;
    r[2 * i + 1] = hi;
  }
  return r;
}

// One packed buffer (16-byte aligned pieces): frames, tables, tile ranges.
struct Packed {
  std::vector<unsigned char> bytes;
  template <typename V>
  size_t add(const V& v) {
    size_t off = (bytes.size() + 15) & ~size_t(15);
    const size_t n = v.size() * sizeof(v[0]);
    bytes.resize(off + n);
    if (n) std::memcpy(bytes.data() + off, v.data(), n);
    return off;
  }
};

struct Prepared {
  KernelParams p{};
  Packed buf;
  size_t off_frames = 0, off_yfirst = 0, off_ycount = 0, off_yw = 0, off_xfirst = 0,
         off_xcount = 0, off_xw = 0, off_ty = 0, off_tx = 0;
  int bps = 1;
  bool staged = false;
  int fast_taps = 0;  // > 0: the 8-bit fast path with this tap bin (plan_fast_path)
  bool vfirst = false;  // ... as the vertical-first block (plan_vfirst)
  int vfirst_variant = engine::cuda::kVfirst;  // ... this VfirstVariant of it
  bool clamp_source = true;  // false: clamp="output" (Note [CUDA preprocess: clamp="output"])
  int tiles_x = 0, tiles_y = 0;
  size_t smem_bytes = 0;
};

// Shared-memory floats of the vertical-first block for the fast path's staged-row length need
// (its rows of vertical sums; >= store_block's), 0 when they do not fit.
size_t vfirst_floats(int need) {
  using engine::cuda::kTileH;
  using engine::cuda::kTileW;
  const size_t floats = 3 * (size_t)kTileH * (size_t)std::max(need, kTileW);
  return floats * sizeof(float) <= (size_t)engine::cuda::kSmemBudget ? floats : 0;
}

// Whether every plane address and row stride allows the fast path's 32-bit sample loads with
// 32-bit row offsets (rows * stride < 2^31 bytes).
bool words_aligned(const PreprocessCall& c) {
  for (size_t i = 0; i < c.planes.size(); ++i)
    if (c.planes[i] % 4 != 0 || c.row_strides[i] % 4 != 0 || c.row_strides[i] < 0 ||
        (long long)c.height * c.row_strides[i] >= (1LL << 31))
      return false;
  return true;
}

// The 4:2:0 inputs of the 8-bit fast path with aligned words run in the vertical-first block
// (Note [CUDA preprocess: vertical pass first]) where its rows fit: on an H100 it took 1.01-1.34x
// the fast path's frames/s in every case of a same-run A/B (2026-11-27, README "Measured on an
// H100"). need: the fast path's staged-row length (plan_fast_path), which the x-tap loads stay
// within.
void plan_vfirst(Prepared& r, int need) {
  if (r.fast_taps == 0 || !r.p.aligned4 || r.p.sub_y != 2) return;
  const size_t floats = vfirst_floats(need);
  if (floats == 0) return;
  // TEMPORARY A/B variants, until a GPU run of bench/preprocess_ab.py decides (read at every
  // call): ENGINE_CUDA_PREPROCESS=vfirst-prefetch / vfirst-late (VfirstVariant)
  const char* e = std::getenv("ENGINE_CUDA_PREPROCESS");
  const std::string ab = e != nullptr ? e : "";
  r.vfirst_variant = !r.clamp_source          ? engine::cuda::kVfirstPlanes
                     : ab == "vfirst-prefetch" ? engine::cuda::kVfirstPrefetch
                     : ab == "vfirst-late"     ? engine::cuda::kVfirstLate
                                               : engine::cuda::kVfirst;
  r.vfirst = true;
  r.p.span = std::max(need, engine::cuda::kTileW);
  r.smem_bytes = floats * sizeof(float);
}

// Tap bins of the fast path: its unrolled x tap loop runs kTaps taps for every column.
// Downscaling by s needs at most about 2s + 1 taps: 2x 5, 3x 7, 1080p -> 256 (4.22x) 9, 5x 11.
constexpr int kFastTapBins[] = {3, 5, 7, 9, 11, 13, 16};

// Switches r to the 8-bit fast path when it covers the call (Note [CUDA preprocess: 8-bit fast
// path]): 8-bit Y'CbCr with chroma shared by pixel pairs, the staged variant, at most 16 x taps
// per column, and a chunk of >= 2 rows that fits. span_max, tile_x: the tiles' source column
// spans (prepare); x_taps_max: the most x taps of an output column.
void plan_fast_path(Prepared& r, const PreprocessCall& c, int span_max,
                    const std::vector<int>& tile_x, int x_taps_max) {
  const KernelParams& p = r.p;
  if (c.force_direct || r.bps != 1 || p.kind == engine::cuda::kPackedRgb || p.sub_x != 2) return;
  int taps = 0;
  for (int t : kFastTapBins)
    if (taps == 0 && x_taps_max <= t) taps = t;
  if (taps == 0) return;
  // staged columns: the span, widened to groups of 4 by up to 3 on each side and to an even
  // number of groups (aligned4), then kTaps - 1 zeros and the up to 6 floats more that the
  // 16-byte x tap loads reach; a multiple of 4 floats for 16-byte stores
  const int need = (span_max + 10 + taps + 3) / 4 * 4 + 8;
  // each tile's pitch is the largest <= p.span with pitch / 4 = items (mod 8) (items: the
  // kernel's aligned4 staging items of the tile; conflict-free staging stores); p.span = the
  // largest of the smallest such pitches >= need, so every tile keeps >= need
  int pitch = need;
  for (size_t i = 0; i + 1 < tile_x.size(); i += 2) {
    const int lo = tile_x[i], hi = tile_x[i + 1];
    const int groups = hi > lo ? ((hi + 3) >> 2) - (lo >> 2) : 1, items = (groups + 1) >> 1;
    pitch = std::max(pitch, need + 4 * ((items - need / 4) & 7));
  }
  const int R = mini(engine::cuda::kTileH, engine::cuda::kFastRgbChan / pitch);
  if (R < 2) return;
  const bool aligned4 = words_aligned(c);
  // clamp="output": the staging blocks have no such variant, the vertical-first block has
  if (!c.clamp_source && !(aligned4 && r.p.sub_y == 2 && vfirst_floats(need) > 0)) return;
  r.fast_taps = taps;
  r.staged = true;
  r.p.rows = R;
  r.p.span = pitch;
  r.smem_bytes = (size_t)engine::cuda::kFastSmemFloats * sizeof(float);
  r.p.aligned4 = aligned4;
  plan_vfirst(r, need);
  if (!r.clamp_source && !r.vfirst) throw std::logic_error("clamp=output on the staging path");
}

Prepared prepare(const PreprocessCall& c) {
  // out: (batch, 3, out_h, out_w) or (batch, out_h, out_w, 3)
  if (c.batch < 0) fail("batch must be >= 0");
  if (c.batch > 65535) fail("batch must be <= 65535 (grid z)");
  if (c.out_h <= 0 || c.out_w <= 0) fail("output size must be positive");
  if (c.out == 0 && c.batch > 0) fail("out is a null pointer");
  if (c.format < 0 || c.format > kFmtBGR24) fail("bad format code");
  if (c.bit_depth != 8 && !(c.bit_depth == 10 && is_yuv(c.format)))
    fail("bit depth must be 8 (or 10 for YUV)");
  if (c.width <= 0 || c.height <= 0) fail("width and height must be positive");
  if (c.matrix != kBT601 && c.matrix != kBT709) fail("bad matrix");
  if (c.mode < 0 || c.mode > 2) fail("bad resize mode");
  if (c.filter != kFilterAntialias && c.filter != kFilterBilinear) fail("bad filter");
  if (c.mode != kResizeLetterbox && (c.to_h <= 0 || (c.mode == kResizeStretch && c.to_w <= 0)))
    fail("resize target must be positive");
  for (int i = 0; i < 3; ++i)
    if (!(c.stdv[i] != 0.0)) fail("std must be non-zero");
  if (c.sar_num < 1 || c.sar_den < 1 || c.sar_num > 65535 || c.sar_den > 65535)
    fail("sar terms must be in [1, 65535]");

  Prepared r;
  r.clamp_source = c.clamp_source;
  KernelParams& p = r.p;
  PlaneDesc pd[3];
  const int np = describe_planes(c.format, c.width, c.height, pd);
  r.bps = c.bit_depth > 8 ? 2 : 1;
  if ((long long)c.planes.size() != (long long)c.batch * np ||
      (long long)c.row_strides.size() != (long long)c.batch * np)
    fail("expected " + std::to_string(np) + " planes per frame (" +
         std::to_string((long long)c.batch * np) + " pointers and strides), got " +
         std::to_string(c.planes.size()) + " pointers and " + std::to_string(c.row_strides.size()) +
         " strides");
  std::vector<FramePlanes> frames(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    FramePlanes& f = frames[b];
    for (int i = 0; i < 3; ++i) { f.plane[i] = nullptr; f.stride[i] = 0; }
    for (int i = 0; i < np; ++i) {
      const std::uintptr_t a = c.planes[(size_t)b * np + i];
      const long long s = c.row_strides[(size_t)b * np + i];
      const std::string where = "frame " + std::to_string(b) + " plane " + std::to_string(i) + ": ";
      if (a == 0) fail(where + "null pointer");
      if (a % r.bps) fail(where + "10-bit samples must be 2-byte aligned");
      if (pd[i].height > 1 && s % r.bps)  // every row's samples, not only the first row's
        fail(where + "10-bit row stride " + std::to_string(s) + " is not a multiple of 2 bytes");
      // row stride >= samples per row (height 1 planes may have any stride)
      if (pd[i].height > 1 && s < (long long)pd[i].width * pd[i].channels * r.bps)
        fail(where + "row stride " + std::to_string(s) + " smaller than a row (" +
             std::to_string((long long)pd[i].width * pd[i].channels * r.bps) + " bytes)");
      f.plane[i] = reinterpret_cast<const unsigned char*>(a);
      f.stride[i] = s;
    }
  }

  AxisGeometry gy, gx;
  if (compute_geometry(c.mode, c.height, c.width, c.out_h, c.out_w, c.to_h, c.to_w, &gy, &gx,
                       c.sar_num, c.sar_den) != kOk)
    fail("invalid geometry");
  const AxisTable ty = build_axis(c.filter, gy), tx = build_axis(c.filter, gx);
  const std::vector<int> rty = tile_ranges(ty, c.out_h, engine::cuda::kTileH);
  const std::vector<int> rtx = tile_ranges(tx, c.out_w, engine::cuda::kTileW);
  int span_max = 0;
  for (size_t i = 0; i < rtx.size(); i += 2) span_max = std::max(span_max, rtx[i + 1] - rtx[i]);

  // shared memory: the largest chunk of rows whose staged RGB fits; else the direct variant
  p.rows = 8;
  p.span = 0;
  for (int R = 8; R >= 2 && !c.force_direct; R /= 2) {
    if ((size_t)engine::cuda::smem_floats(R, span_max) * sizeof(float) <=
        (size_t)engine::cuda::kSmemBudget) {
      p.rows = R;
      p.span = span_max;
      break;
    }
  }
  r.staged = p.span > 0;
  r.smem_bytes = (size_t)engine::cuda::smem_floats(p.rows, p.span) * sizeof(float);

  p.batch = c.batch; p.in_w = c.width; p.in_h = c.height; p.out_h = c.out_h; p.out_w = c.out_w;
  p.kind = c.format == kFmtNV12 ? engine::cuda::kSemiPlanarYuv
           : is_yuv(c.format)   ? engine::cuda::kPlanarYuv
                                : engine::cuda::kPackedRgb;
  p.sub_x = np > 1 ? pd[1].sub_x : 1;
  p.sub_y = np > 1 ? pd[1].sub_y : 1;
  p.bgr_in = c.format == kFmtBGR24;
  p.bgr_out = c.bgr_out; p.nhwc = c.nhwc; p.fp16 = c.fp16;
  // Note [fp16 stores]: runs of 8 pixels start 16-byte aligned when the base is and out_w % 8 == 0
  p.store8 = c.fp16 && c.out_w % 8 == 0 && c.out % 16 == 0;
  p.pad = (float)c.pad_value;
  p.m = engine::cuda::unit_scale_map(make_yuv_to_rgb(c.matrix, c.full_range, c.bit_depth),
                                     1.0f / 255.0f);
  p.norm = make_normalize(c.scale, c.mean.data(), c.stdv.data());
  p.ky = ty.K; p.kx = tx.K;
  p.out = reinterpret_cast<void*>(c.out);
  r.tiles_x = (int)rtx.size() / 2;
  r.tiles_y = (int)rty.size() / 2;

  r.off_frames = r.buf.add(frames);
  r.off_yfirst = r.buf.add(ty.first);
  r.off_ycount = r.buf.add(ty.count);
  r.off_yw = r.buf.add(ty.w);
  r.off_xfirst = r.buf.add(tx.first);
  r.off_xcount = r.buf.add(tx.count);
  r.off_xw = r.buf.add(tx.w);
  r.off_ty = r.buf.add(rty);
  r.off_tx = r.buf.add(rtx);
  int x_taps_max = 0;
  for (int n : tx.count) x_taps_max = std::max(x_taps_max, n);
  plan_fast_path(r, c, span_max, rtx, x_taps_max);
  return r;
}

void point_tables(Prepared& r, const unsigned char* base) {
  KernelParams& p = r.p;
  p.frames = reinterpret_cast<const FramePlanes*>(base + r.off_frames);
  p.yfirst = reinterpret_cast<const int*>(base + r.off_yfirst);
  p.ycount = reinterpret_cast<const int*>(base + r.off_ycount);
  p.yw = reinterpret_cast<const float*>(base + r.off_yw);
  p.xfirst = reinterpret_cast<const int*>(base + r.off_xfirst);
  p.xcount = reinterpret_cast<const int*>(base + r.off_xcount);
  p.xw = reinterpret_cast<const float*>(base + r.off_xw);
  p.tile_y = reinterpret_cast<const int*>(base + r.off_ty);
  p.tile_x = reinterpret_cast<const int*>(base + r.off_tx);
}

template <class Op, int Kind>
void dispatch_fast_taps(const Prepared& r, Op& op) {
  switch (r.fast_taps) {
    case 3: op.template run_8bit<Kind, 3>(); break;
    case 5: op.template run_8bit<Kind, 5>(); break;
    case 7: op.template run_8bit<Kind, 7>(); break;
    case 9: op.template run_8bit<Kind, 9>(); break;
    case 11: op.template run_8bit<Kind, 11>(); break;
    case 13: op.template run_8bit<Kind, 13>(); break;
    default: op.template run_8bit<Kind, 16>(); break;
  }
}

// op.run<T, Kind, kStaged, kClampSrc>() of the general block; packed RGB is in range, so its
// source clamp changes nothing and it has one instantiation.
template <class Op, typename T, int Kind>
void dispatch_general(const Prepared& r, Op& op) {
  if constexpr (Kind != engine::cuda::kPackedRgb) {
    if (!r.clamp_source) {
      if (r.staged) op.template run<T, Kind, true, false>();
      else op.template run<T, Kind, false, false>();
      return;
    }
  }
  if (r.staged) op.template run<T, Kind, true, true>();
  else op.template run<T, Kind, false, true>();
}

// Calls op.run<T, Kind, kStaged, kClampSrc>() for the general block, op.run_8bit<Kind, kTaps>()
// for the fast path.
template <class Op>
void dispatch(const Prepared& r, Op& op) {
  using engine::cuda::kPackedRgb;
  using engine::cuda::kPlanarYuv;
  using engine::cuda::kSemiPlanarYuv;
  const int kind = r.p.kind;
  if (r.fast_taps > 0) {
    if (kind == kSemiPlanarYuv) dispatch_fast_taps<Op, kSemiPlanarYuv>(r, op);
    else dispatch_fast_taps<Op, kPlanarYuv>(r, op);
  } else if (kind == kPackedRgb) {
    dispatch_general<Op, uint8_t, kPackedRgb>(r, op);
  } else if (r.bps == 1) {
    if (kind == kPlanarYuv) dispatch_general<Op, uint8_t, kPlanarYuv>(r, op);
    else dispatch_general<Op, uint8_t, kSemiPlanarYuv>(r, op);
  } else {
    if (kind == kPlanarYuv) dispatch_general<Op, uint16_t, kPlanarYuv>(r, op);
    else dispatch_general<Op, uint16_t, kSemiPlanarYuv>(r, op);
  }
}

// op.run_vfirst<Kind, kTaps, kVariant>() for a VfirstVariant known at run time.
template <int Kind, int kTaps, class Op>
void dispatch_vfirst(Op& op, int variant) {
  using namespace engine::cuda;  // VfirstVariant
  switch (variant) {
    case kVfirstPlanes: op.template run_vfirst<Kind, kTaps, kVfirstPlanes>(); break;
    case kVfirstPrefetch: op.template run_vfirst<Kind, kTaps, kVfirstPrefetch>(); break;
    case kVfirstLate: op.template run_vfirst<Kind, kTaps, kVfirstLate>(); break;
    default: op.template run_vfirst<Kind, kTaps, kVfirst>(); break;
  }
}

struct DeviceLaunch {
  const Prepared* r;
  cudaStream_t stream;
  template <typename T, int Kind, bool kStaged, bool kClampSrc>
  void run() {
    const dim3 grid(r->tiles_x, r->tiles_y, r->p.batch);
    engine::cuda::preprocess_kernel<T, Kind, kStaged, kClampSrc>
        <<<grid, engine::cuda::kThreads, r->smem_bytes, stream>>>(r->p);
  }
  template <int Kind, int kTaps>
  void run_8bit() {
    if (r->vfirst) {
      dispatch_vfirst<Kind, kTaps>(*this, r->vfirst_variant);
      return;
    }
    const dim3 grid(r->tiles_x, r->tiles_y, r->p.batch);
    engine::cuda::preprocess_kernel_8bit<Kind, kTaps>
        <<<grid, engine::cuda::kThreads, r->smem_bytes, stream>>>(r->p);
  }
  template <int Kind, int kTaps, int kVariant>
  void run_vfirst() {
    const dim3 grid(r->tiles_x, r->tiles_y, r->p.batch);
    engine::cuda::preprocess_kernel_vfirst<Kind, kTaps, kVariant>
        <<<grid, engine::cuda::kThreads, r->smem_bytes, stream>>>(r->p);
  }
};

struct HostEmulation {
  const Prepared* r;
  template <typename T, int Kind, bool kStaged, bool kClampSrc>
  void run() {
    std::vector<float> smem(r->smem_bytes / sizeof(float) + 1);
    for (int b = 0; b < r->p.batch; ++b)
      for (int ty = 0; ty < r->tiles_y; ++ty)
        for (int tx = 0; tx < r->tiles_x; ++tx)
          engine::cuda::preprocess_block<T, Kind, kStaged, kClampSrc>(r->p, tx, ty, b, 0, 1, 0, 1,
                                                                      smem.data());
  }
  template <int Kind, int kTaps>
  void run_8bit() {
    if (r->vfirst) {
      dispatch_vfirst<Kind, kTaps>(*this, r->vfirst_variant);
      return;
    }
    std::vector<float> smem(r->smem_bytes / sizeof(float) + 1);
    for (int b = 0; b < r->p.batch; ++b)
      for (int ty = 0; ty < r->tiles_y; ++ty)
        for (int tx = 0; tx < r->tiles_x; ++tx)
          engine::cuda::preprocess_block_8bit<Kind, kTaps, 1, 1>(r->p, tx, ty, b, 0, 0,
                                                                 smem.data());
  }
  template <int Kind, int kTaps, int kVariant>
  void run_vfirst() {
    std::vector<float> smem(r->smem_bytes / sizeof(float) + 1);
    for (int b = 0; b < r->p.batch; ++b)
      for (int ty = 0; ty < r->tiles_y; ++ty)
        for (int tx = 0; tx < r->tiles_x; ++tx)
          engine::cuda::preprocess_block_vfirst<Kind, kTaps, 1, 1, kVariant>(r->p, tx, ty, b, 0,
                                                                             0, smem.data());
  }
};

std::string variant_name(const Prepared& r) {
  if (!r.vfirst) return r.staged ? "staged" : "direct";
  switch (r.vfirst_variant) {
    case engine::cuda::kVfirstPlanes: return "vfirst-planes";
    case engine::cuda::kVfirstPrefetch: return "vfirst-prefetch";
    case engine::cuda::kVfirstLate: return "vfirst-late";
    default: return "vfirst";
  }
}

}  // namespace

std::string preprocess(const PreprocessCall& call) {
  Prepared r = prepare(call);
  const std::string variant = variant_name(r);
  if (call.batch == 0) return variant;
  DeviceGuard guard(call.device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(call.stream);
  void* dbuf = nullptr;
  // stream-ordered allocation: no device-wide synchronisation, freed after the kernel on the
  // same stream; pageable source: the copy returns once the bytes are staged, so r.buf may go.
  check_cuda(cudaMallocAsync(&dbuf, r.buf.bytes.size(), stream), "cudaMallocAsync");
  cudaError_t e = cudaMemcpyAsync(dbuf, r.buf.bytes.data(), r.buf.bytes.size(),
                                  cudaMemcpyHostToDevice, stream);
  if (e == cudaSuccess) {
    point_tables(r, static_cast<const unsigned char*>(dbuf));
    DeviceLaunch op{&r, stream};
    dispatch(r, op);
    e = cudaGetLastError();
  }
  const cudaError_t ef = cudaFreeAsync(dbuf, stream);
  check_cuda(e, "preprocess kernel launch");
  check_cuda(ef, "cudaFreeAsync");
  return variant;
}

std::string preprocess_emulate(const PreprocessCall& call) {
  Prepared r = prepare(call);
  point_tables(r, r.buf.bytes.data());
  HostEmulation op{&r};
  dispatch(r, op);
  return variant_name(r);
}

}  // namespace engine_cuda
