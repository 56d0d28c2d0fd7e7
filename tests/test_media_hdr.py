"""HDR (HLG, PQ) and BT.2020 video decodes to the SDR picture an SDR display shows (engine/media/hdr.py,
Note [HDR to SDR]). Clips are made from a photograph with FFmpeg's own colour-managed swscale (SDR ->
HDR), encoded as 10-bit HEVC with the stream's colour tags, and decoded by the engine."""

from __future__ import annotations

import fractions
import functools
import io

import av
import numpy as np
import pytest
from media_factory import has_encoder

from engine.errors import MediaError
from engine.media import synthetic as syn
from engine.media.video import Sampling, decode_video

pytestmark = pytest.mark.skipif(not has_encoder("libx265"), reason="libx265 not in this PyAV")

W, H = 192, 128
# name -> (AVColorTransferCharacteristic, FFmpeg's name of it)
TRANSFERS = {"hlg": (18, "arib-std-b67"), "pq": (16, "smpte2084"), "bt2020-sdr": (14, "bt2020-10")}


@functools.lru_cache(maxsize=None)
def photo() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image("china.jpg")[100 : 100 + H, 200 : 200 + W])


@functools.lru_cache(maxsize=None)
def hdr_clip(transfer: str, frames: int = 3) -> bytes:
    trc, name = TRANSFERS[transfer]
    sdr = av.VideoFrame.from_ndarray(photo(), format="rgb24")
    sdr.colorspace, sdr.color_range, sdr.color_trc, sdr.color_primaries = 0, 2, 13, 1  # sRGB
    options = f"out_transfer={name}:out_primaries=bt2020:out_color_matrix=bt2020nc:out_range=tv"
    hdr = syn.ScaleGraph(sdr, options, "yuv420p10le")(sdr)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as oc:
        vs = oc.add_stream("libx265", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p10le"
        cc = vs.codec_context
        cc.colorspace, cc.color_range, cc.color_trc, cc.color_primaries = 9, 1, trc, 9
        vs.options = {"x265-params": "log-level=error:crf=12", "preset": "ultrafast"}
        for i in range(frames):
            hdr.pts, hdr.time_base = i, fractions.Fraction(1, 30)
            hdr.colorspace, hdr.color_range, hdr.color_trc, hdr.color_primaries = 9, 1, trc, 9
            for p in vs.encode(hdr):
                oc.mux(p)
        for p in vs.encode():
            oc.mux(p)
    return buf.getvalue()


def _first_av_frame(data: bytes):
    with av.open(io.BytesIO(data)) as c:
        return next(c.decode(video=0))


def _rgb(frame) -> np.ndarray:
    assert frame.format == "rgb24"
    return np.asarray(frame.planes[0]).reshape(frame.height, frame.width, 3).astype(np.int64)


@pytest.mark.parametrize("transfer", ["hlg", "pq", "bt2020-sdr"])
def test_hdr_video_decodes_to_its_sdr_picture(transfer):
    data = hdr_clip(transfer)
    vf = _first_av_frame(data)
    assert (int(vf.color_trc), int(vf.color_primaries), int(vf.colorspace)) == (TRANSFERS[transfer][0], 9, 9)
    dv = decode_video(data, Sampling(mode="all"))
    assert len(dv.frames) == 3 and dv.hdr == ("sdr" if transfer == "bt2020-sdr" else transfer)
    got = _rgb(dv.frames[0])
    original = photo().astype(np.int64)
    # the SDR original, through FFmpeg's SDR -> HDR mapping, 4:2:0 and HEVC at crf 12, and back
    assert np.abs(got - original).mean() < 10  # measured 6.4-7.5 (read as SDR: 26 HLG, 49 PQ)
    # FFmpeg 8's own HDR -> SDR of the same decoded frame (relative colorimetric): 4:2:0 chroma
    # upsampling differs (replication here, interpolation there), the picture does not
    theirs = syn.ScaleGraph(vf, syn.FFMPEG_TO_SDR, "rgb24")(vf).to_ndarray().astype(np.int64)
    assert np.abs(got - theirs).mean() < 3.0  # measured 1.7-2.2
    if transfer != "bt2020-sdr":  # read as if it were SDR (what the engine did before): far off
        naive = vf.to_ndarray(format="rgb24").astype(np.int64)
        assert np.abs(naive - original).mean() > 2.5 * np.abs(got - original).mean()


def test_sdr_video_keeps_its_planes():
    data = syn.encode_video(width=64, height=48, duration=0.2, colorspace=1)
    dv = decode_video(data, Sampling(mode="all"))
    assert dv.frames[0].format == "i420" and dv.frames[0].matrix == "bt709" and dv.hdr == ""


def test_hdr_frames_come_upright():
    data = hdr_clip("hlg")
    upright = _rgb(decode_video(data, Sampling(mode="all")).frames[0])
    turned = decode_video(syn.set_mp4_rotation(data, 90), Sampling(mode="all"))
    assert turned.rotation == 90
    got = _rgb(turned.frames[0])
    np.testing.assert_array_equal(got, np.rot90(upright))


@pytest.mark.models
@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_session_sees_an_hdr_clip_as_its_sdr_original(transfer, model_repo, stack):
    """open_nsfw's embedding of the HDR clip is that of the same photograph as SDR BT.709 HEVC:
    cosine 0.997 (HLG) and 0.990 (PQ); read as if it were SDR it was 0.973 and 0.918."""
    from engine import Session

    session = stack.enter_context(Session(model_repo.path))
    sdr = syn.encode_picture(photo(), frames=3, codec="libx265", colorspace=1, color_range=1,
                             options={"x265-params": "log-level=error:crf=12", "preset": "ultrafast"})
    e_sdr = session.embed(sdr)["vision"]
    e_hdr = session.embed(hdr_clip(transfer))["vision"]
    assert float(np.dot(e_sdr, e_hdr) / np.linalg.norm(e_sdr) / np.linalg.norm(e_hdr)) > 0.985
    verdict = session.moderate(hdr_clip(transfer))
    assert verdict.policies["sexual_content"].evidence.modality == "vision"
    assert verdict.media == {"hdr": transfer} and verdict.to_dict()["media"] == {"hdr": transfer}


def test_decord_backend_says_it_does_not_map_hdr(caplog):
    from engine.media.decord_source import decode_video_decord, decord_available

    if not decord_available():
        pytest.skip("decord not installed")
    with caplog.at_level("WARNING", logger="engine.media.decord_source"):
        try:
            decode_video_decord(hdr_clip("hlg"), Sampling(mode="all"))
        except MediaError:  # decord's bundled FFmpeg may lack 10-bit HEVC; the warning comes first
            pass
    assert any("not mapped to SDR" in r.getMessage() for r in caplog.records)
