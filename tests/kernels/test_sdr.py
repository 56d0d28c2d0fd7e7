"""HDR / wide-gamut -> SDR (engine.ops.to_sdr, Note [HDR to SDR]) vs a float64 reference written
from the standards (ST 2084, BT.2100, BT.2087 by way of the chromaticities) and vs FFmpeg 8's own
colour-managed swscale."""

from __future__ import annotations


import numpy as np
import pytest
from frames import make_frame
from reference import bt2020_to_bt709, to_sdr_linear_ref, to_sdr_ref

from engine.errors import InputError
from engine.media.frame import Frame
from engine.ops.sdr import to_sdr

FORMATS = ["i420", "nv12", "i422", "i444", "i420_10", "i422_10", "i444_10"]
SIZES = [(1, 1), (3, 5), (37, 53), (16, 130)]  # (H, W): odd, tiny, widths that are not x8
CASES = [("hlg", "bt2020"), ("pq", "bt2020"), ("sdr", "bt2020"), ("hlg", "bt709"), ("pq", "bt709")]
COLOUR = [("bt2020", False), ("bt2020", True), ("bt709", False)]

# The 8-bit result is round(ref); the tables (Note [transfer tables]) move ref by < 0.5 level, so
# a pixel may round to the neighbouring level, never further.
TOL_LEVELS = 1


def _run(frame, transfer, primaries, **kw):
    outs = []
    for poison in (0, 255):  # an unwritten pixel keeps a poison: one of the two runs shows it
        out = np.full((frame.height, frame.width, 3), poison, np.uint8)
        res = to_sdr(frame, transfer=transfer, primaries=primaries, out=out, **kw)
        assert res is out
        outs.append(res)
    np.testing.assert_array_equal(outs[0], outs[1])
    return outs[0].astype(np.int64)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("colour", COLOUR)
def test_random_frames_match_float64_reference(fmt, hw, case, colour):
    rng = np.random.default_rng()
    frame = make_frame(fmt, *hw, rng, matrix=colour[0], full_range=colour[1])
    got = _run(frame, *case)
    ref = to_sdr_ref(frame, *case)
    assert np.abs(got - ref).max() < TOL_LEVELS  # rounding (0.5) + the tables (< 0.5)
    assert (got != np.rint(ref)).mean() < 0.05  # only pixels near a rounding boundary move


@pytest.mark.parametrize("transfer", ["hlg", "pq", "sdr"])
@pytest.mark.parametrize("full_range", [False, True])
def test_every_10bit_grey_level(transfer, full_range):
    """All 1024 grey signals: the steep ends of the curves (PQ near peak, gamma near black)."""
    y = np.arange(1024, dtype=np.uint16).reshape(1, 1024)
    c = np.full((1, 1024), 512, np.uint16)
    frame = Frame(format="i444_10", planes=(y, c, c), width=1024, height=1, matrix="bt2020",
                  full_range=full_range, pts=0.0)
    got = _run(frame, transfer, "bt2020")
    assert np.abs(got - to_sdr_ref(frame, transfer, "bt2020")).max() < TOL_LEVELS
    assert np.abs(np.diff(got[0], axis=-1)).max() <= 1  # grey stays grey (float rounding at the clip)
    assert (np.diff(got[0, :, 0]) >= 0).all()  # monotonic


def test_reference_white_is_sdr_white():
    """BT.2408: HLG 75% and PQ 203 cd/m^2 are HDR reference white, SDR 255; below it nothing clips."""
    def grey(v10, transfer):
        y = np.array([[v10]], np.uint16)
        c = np.array([[512]], np.uint16)
        f = Frame(format="i444_10", planes=(y, c, c), width=1, height=1, matrix="bt2020", full_range=False, pts=0.0)
        return int(_run(f, transfer, "bt2020")[0, 0, 0])

    hlg75 = round(64 + 0.75 * 876)
    pq203 = round(64 + 0.58069 * 876)  # ST 2084 signal of 203 cd/m^2
    assert grey(hlg75, "hlg") >= 254 and grey(hlg75 - 20, "hlg") < 250
    assert grey(pq203, "pq") >= 254 and grey(pq203 - 20, "pq") < 250
    assert grey(64, "hlg") == grey(64, "pq") == 0


def test_primaries_matrix_is_bt2087():
    """The reference's matrix from the chromaticities equals BT.2087's published one (4 decimals)."""
    bt2087 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]])
    np.testing.assert_allclose(bt2020_to_bt709(), bt2087, atol=6e-5)


def test_threads_do_not_change_the_result():
    frame = make_frame("i420_10", 67, 45, np.random.default_rng(), matrix="bt2020")
    np.testing.assert_array_equal(_run(frame, "hlg", "bt2020", threads=1), _run(frame, "hlg", "bt2020", threads=2))


def test_bad_arguments_are_input_errors():
    frame = make_frame("i420_10", 4, 4, np.random.default_rng(), matrix="bt2020")
    rgb = make_frame("rgb24", 4, 4, np.random.default_rng())
    with pytest.raises(InputError, match="transfer"):
        to_sdr(frame, transfer="log", primaries="bt2020")
    with pytest.raises(InputError, match="primaries"):
        to_sdr(frame, transfer="pq", primaries="p3")
    with pytest.raises(InputError, match="Y'CbCr"):
        to_sdr(rgb, transfer="pq", primaries="bt2020")
    with pytest.raises(InputError, match="shape"):
        to_sdr(frame, transfer="pq", primaries="bt2020", out=np.empty((4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="matrix"):
        to_sdr(Frame(**{**frame.__dict__, "matrix": "ycgco"}), transfer="pq", primaries="bt2020")


# ---- against FFmpeg 8's colour-managed swscale ---------------------------------------------------
TRC = {"hlg": 18, "pq": 16, "sdr": 14}  # AVColorTransferCharacteristic


def _ffmpeg_sdr(frame, transfer):
    """FFmpeg's own HDR -> SDR (relative colorimetric) of an i444_10 BT.2020 frame, as rgb24."""
    av = pytest.importorskip("av")
    from engine.media.synthetic import FFMPEG_TO_SDR, ScaleGraph

    w, h = frame.width, frame.height
    vf = av.VideoFrame(w, h, "yuv444p10le")
    for plane, arr in zip(vf.planes, frame.planes):
        buf = np.zeros((h, plane.line_size // 2), np.uint16)
        buf[:, :w] = arr
        plane.update(buf.tobytes())
    vf.colorspace, vf.color_range, vf.color_trc, vf.color_primaries = 9, 1, TRC[transfer], 9
    return ScaleGraph(vf, FFMPEG_TO_SDR, "rgb24")(vf).to_ndarray().astype(np.int64)


@pytest.mark.parametrize("transfer", ["hlg", "pq", "sdr"])
def test_agrees_with_ffmpeg_inside_the_gamut(transfer):
    """FFmpeg's own HDR -> SDR conversion gives the same greys and, within its 3-D LUT's error,
    the same colours.

    Rows of grey ramps and of mildly coloured pixels (chroma noise of 20 codes); only pixels whose
    linear BT.709 light lies inside (0.01, 0.99) on every channel count (FFmpeg clips the others
    in a hue-preserving colour space, Note [HDR to SDR]). Measured here, mean |diff| in levels:
    grey 0.02-0.4 (max 2), colours 0.8-1.7; leaving out the BT.2020 -> BT.709 conversion makes
    the colours 3.0-6.1 off, so the bound of 2.2 catches it.
    """
    rng = np.random.default_rng()
    w, h = 256, 16
    ramp = 64 + np.linspace(0.02, 0.9, w)[None, :] * 876
    y = (ramp + rng.normal(0, 4, (h, w))).clip(64, 940).astype(np.uint16)
    sigma = np.repeat([0.0, 20.0], h // 2)[:, None]
    u = (512 + sigma * rng.standard_normal((h, w))).clip(64, 960).astype(np.uint16)
    v = (512 + sigma * rng.standard_normal((h, w))).clip(64, 960).astype(np.uint16)
    frame = Frame(format="i444_10", planes=(y, u, v), width=w, height=h, matrix="bt2020",
                  full_range=False, pts=0.0)
    ours = _run(frame, transfer, "bt2020")
    theirs = _ffmpeg_sdr(frame, transfer)
    lin = to_sdr_linear_ref(frame, transfer, "bt2020")
    inside = ((lin > 0.01) & (lin < 0.99)).all(-1)
    grey, colour = slice(0, h // 2), slice(h // 2, h)
    assert inside[grey].mean() > 0.4 and inside[colour].mean() > 0.3
    d_grey = np.abs(ours - theirs)[grey][inside[grey]]
    d_colour = np.abs(ours - theirs)[colour][inside[colour]]
    assert d_grey.mean() <= 0.6 and d_grey.max() <= 2, (d_grey.mean(), d_grey.max())
    assert d_colour.mean() <= 2.2, d_colour.mean()
    no_gamut = np.rint(to_sdr_ref(frame, transfer, "bt709"))  # the check can tell a missing step
    assert np.abs(no_gamut - theirs)[colour][inside[colour]].mean() > 2.2
    if transfer != "sdr":  # and the signal read as if it were SDR (the engine before) is far off
        naive = np.rint(np.clip(to_sdr_linear_ref(frame, "sdr", "bt709"), 0, 1) ** (1 / 2.4) * 255)
        assert np.abs(naive - theirs)[grey][inside[grey]].mean() > 5


def test_portable_path_matches_reference(tmp_path):
    """ENGINE_DISABLE_AVX2=1 selects the plain loops (what a CPU without AVX2 runs)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import numpy as np, sys; sys.path.insert(0, sys.argv[2]);"
        "from frames import make_frame; from engine.ops.sdr import to_sdr; from engine.ops import build_info;"
        "rng = np.random.default_rng(int(sys.argv[3]));"
        "fr = [make_frame(f, 9, 45, rng, matrix='bt2020') for f in ('i420_10', 'nv12', 'i444', 'i422_10')];"
        "assert not build_info()['avx2_kernels'];"
        "np.save(sys.argv[1], np.stack([to_sdr(f, transfer=t, primaries='bt2020') for f in fr for t in ('hlg', 'pq')]))"
    )
    seed = int(np.random.default_rng().integers(1 << 30))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ENGINE_DISABLE_AVX2": "1", "PYTHONPATH": str(root)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o.npy"), str(Path(__file__).parent), str(seed)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    portable = np.load(tmp_path / "o.npy").astype(np.int64)
    rng = np.random.default_rng(seed)
    fr = [make_frame(f, 9, 45, rng, matrix="bt2020") for f in ("i420_10", "nv12", "i444", "i422_10")]
    ref = np.stack([to_sdr_ref(f, t, "bt2020") for f in fr for t in ("hlg", "pq")])
    assert np.abs(portable - ref).max() < TOL_LEVELS, f"seed {seed}"
