"""The NVDEC video path (engine.media.nvdec, its Session wiring), driven by the fake PyNvVideoCodec
of fake_pynvvideocodec.py: PyAV decodes, the frames come back as padded NV12 buffers through
DLPack, so everything but the hardware runs here.

* parity: NVDEC's frames and timestamps are the CPU decoder's (its I420 planes interleaved to
  NV12) for every sampling mode;
* fallback: streams NVDEC must not take, and decoders that disagree with the index, give a
  Fallback with the reason and the CPU decodes;
* safety: inputs the CPU decoder refuses are refused before a decoder is constructed;
* Session: the device pipeline (Triton interpreter on CPU tensors) fed by the fake NVDEC gives the
  CPU Session's verdict, the decoder's own buffers reaching the kernel.

``gpu`` tests need CUDA and the real PyNvVideoCodec (``bash bench/gpu_check.sh``).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available()
if not CUDA:  # before the first Triton kernel call
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.device import Placement, resolve_placement, video_decode_note  # noqa: E402
from engine.errors import (CorruptMediaError, DeviceUnavailableError, EmptyMediaError,  # noqa: E402
                           ForbiddenSourceError, InputError, MediaLimitError)
from engine.media import synthetic as syn  # noqa: E402
from engine.media.limits import Limits  # noqa: E402
from engine.media.hdr import SdrConversion  # noqa: E402
from engine.media.nvdec import Fallback, decode_video_nvdec, qualify  # noqa: E402
from engine.media.orientation import Orientation  # noqa: E402
from engine.media.video import Sampling, decode_video  # noqa: E402
from fake_pynvvideocodec import fake_nvc  # noqa: E402
from media_factory import clip, has_encoder, rotated_clip, tone_file, vfr_clip  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sample(name: str) -> bytes:
    with open(os.path.join(ROOT, "samples", name), "rb") as f:
        return f.read()


@pytest.fixture
def nvc():
    return fake_nvc()


# ----------------------------------------------------------------------------- parity
def _as_nv12(frame):
    """The CPU decoder's I420 planes as NV12 (Y, interleaved UV) numpy arrays."""
    y, u, v = (np.asarray(p) for p in frame.planes)
    uv = np.empty((u.shape[0], 2 * u.shape[1]), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    return y, uv


def _assert_same_video(cpu, dev):
    assert dev.timestamps == cpu.timestamps and dev.targets == cpu.targets
    assert (dev.strategy, dev.complete, dev.width, dev.height) == (cpu.strategy, cpu.complete, cpu.width, cpu.height)
    for a, b in zip(cpu.frames, dev.frames, strict=True):
        assert a.format == "i420" and b.format == "nv12"
        assert (b.width, b.height, b.matrix, b.full_range, b.pts) == (a.width, a.height, a.matrix, a.full_range, a.pts)
        assert all(isinstance(p, torch.Tensor) for p in b.planes)
        for want, got in zip(_as_nv12(a), b.planes, strict=True):
            np.testing.assert_array_equal(got.numpy(), want)


CLIPS = {
    "gop30": lambda: clip(width=160, height=96, fps=30, duration=4.0, gop=30),
    "bframes": lambda: clip(width=128, height=72, fps=25, duration=3.0, gop=12, bframes=2),
    "vfr": vfr_clip,
    "mkv_full_range": lambda: clip(width=96, height=64, fps=10, duration=2.0, gop=5, container="matroska",
                                   pix_fmt="yuvj420p"),
}
SAMPLINGS = [Sampling("fps", 1.0), Sampling("fps", 4.0), Sampling("fps", 2.0, exact=True),
             Sampling("uniform", 5), Sampling("uniform", 3, max_frames=2), Sampling("keyframes"),
             Sampling("keyframes", max_frames=2), Sampling("all"), Sampling("all", max_frames=7)]


@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"{s.mode}-{s.value}-{s.max_frames}-{s.exact}")
def test_nvdec_frames_and_timestamps_are_the_cpu_decoders(nvc, name, sampling):
    data = CLIPS[name]()
    cpu, dev = decode_video(data, sampling), decode_video_nvdec(data, sampling, nvc=nvc)
    assert not isinstance(dev, Fallback), dev
    _assert_same_video(cpu, dev)
    # Note [NVDEC keyframe packets]: the keyframes strategy feeds the core decoder those packets only
    kind = "core" if cpu.strategy == "keyframes" else "simple"
    assert [c["kind"] for c in nvc.constructed] == [kind] and nvc.constructed[0]["use_device_memory"]
    if kind == "core":
        assert nvc.decoders[0].decoded_packets == len(dev.frames) == dev.decoded_frames
    else:
        assert nvc.constructed[0]["output_color_type"] == "NATIVE"


@pytest.mark.skipif(not has_encoder("libx265"), reason="no libx265 encoder")
def test_hevc_keyframes_go_through_the_core_decoder(nvc):
    data = clip(width=128, height=72, fps=10, duration=3.0, gop=10, codec="libx265")
    cpu, dev = decode_video(data, Sampling("fps", 1.0)), decode_video_nvdec(data, Sampling("fps", 1.0), nvc=nvc)
    assert not isinstance(dev, Fallback), dev
    _assert_same_video(cpu, dev)
    assert [(c["kind"], c["codec"]) for c in nvc.constructed] == [("core", "hevc")]


def test_keyframe_copies_outlive_the_decoders_buffers(nvc):
    """The core decoder scribbles over the frames it returned before: the planes are copies, in
    rows every 64 bytes as the device staging lays them out."""
    from engine.device_staging import padded_row

    dev = decode_video_nvdec(CLIPS["gop30"](), Sampling("keyframes"), nvc=nvc)
    assert len(dev.frames) == 4 and nvc.decoders[0].decoded_packets == 4
    returned = {f.buffer.ctypes.data for f in nvc.decoders[0].returned}
    for frame in dev.frames:
        y, uv = frame.planes
        assert y.stride(0) == uv.stride(0) == padded_row(160, 1) and y.data_ptr() not in returned
        assert uv.data_ptr() == y.data_ptr() + 96 * y.stride(0)


def test_keyframe_copies_have_run_before_the_next_decode(nvc, monkeypatch):
    """On a GPU the copies are only queued: emulate that, copies run when the host waits for the
    stream, and the fake decoder overwrites its buffers at the next Decode."""
    import engine.media.nvdec as nvdec

    pending, copy = [], torch.Tensor.copy_
    monkeypatch.setattr(torch.Tensor, "copy_", lambda dst, src, non_blocking=False: pending.append((dst, src)) or dst)

    def wait(_):
        while pending:
            copy(*pending.pop(0))

    monkeypatch.setattr(nvdec, "_wait_for_copies", wait)
    data = CLIPS["gop30"]()
    dev = decode_video_nvdec(data, Sampling("keyframes"), nvc=nvc)
    monkeypatch.setattr(torch.Tensor, "copy_", copy)
    wait(None)  # whatever is still queued runs now: too late if the decoder overwrote it first
    _assert_same_video(decode_video(data, Sampling("keyframes")), dev)


def test_the_scan_flag_follows_the_containers_frame_count(nvc):
    """Matroska stores no frame count: without the scan the real SimpleDecoder refuses it."""
    for container, scanned in (("mp4", False), ("matroska", True)):
        data = clip(width=96, height=64, fps=10, duration=1.0, gop=5, container=container)
        assert not isinstance(decode_video_nvdec(data, Sampling("fps", 2.0, exact=True), nvc=nvc), Fallback)
        assert nvc.constructed[-1]["scanned"] is scanned


def test_planes_are_views_of_the_decoders_buffers(nvc):
    data = CLIPS["gop30"]()
    dev = decode_video_nvdec(data, Sampling("fps", 1.0, exact=True), nvc=nvc)  # SimpleDecoder
    decoder, frames = dev.keepalive
    for frame, out in zip(dev.frames, frames, strict=True):
        y, uv = frame.planes
        assert y.data_ptr() == out.buffer.ctypes.data  # no copy: the decoder's memory
        assert uv.data_ptr() == out.buffer[96:].ctypes.data
        assert y.stride(0) == uv.stride(0) == out.buffer.strides[0] > 160  # the decoder's pitch


def test_decode_count_is_checked_against_max_frames_before_decoding(nvc):
    data = clip(width=96, height=64, fps=30, duration=4.0, gop=120)  # one keyframe: frame 90 needs 91
    sampling, limits = Sampling("fps", 1.0), Limits(max_frames=80)
    with pytest.raises(MediaLimitError, match="max_frames"):
        decode_video(data, sampling, limits)  # the CPU decoder refuses it as well
    with pytest.raises(MediaLimitError, match="max_frames"):
        decode_video_nvdec(data, sampling, limits, nvc=nvc)
    assert nvc.constructed == []
    assert decode_video_nvdec(data, sampling, Limits(max_frames=91), nvc=nvc).decoded_frames == 91


# ----------------------------------------------------------------------------- fallback
@pytest.mark.parametrize("name, data, reason", [
    ("10-bit", lambda: _sample("clip_10bit.mp4"), "pixel format 'yuv420p10le' is not 8-bit 4:2:0"),
    ("4:4:4", lambda: _sample("clip_444.mp4"), "pixel format 'yuv444p' is not 8-bit 4:2:0"),
    ("rotated", lambda: rotated_clip(90), "rotated by 90 degrees"),
    ("mpeg4", lambda: clip(width=96, height=64, fps=10, duration=1.0, gop=5, codec="mpeg4"),
     "codec 'mpeg4' is not decoded by NVDEC"),
    ("vp8", lambda: clip(width=96, height=64, fps=10, duration=1.0, gop=5, codec="libvpx", container="webm"),
     "codec 'vp8' is not decoded by NVDEC"),
])
def test_streams_nvdec_cannot_take_fall_back_with_the_reason(nvc, name, data, reason):
    if name == "vp8" and not has_encoder("libvpx"):
        pytest.skip("no libvpx encoder")
    out = decode_video_nvdec(data(), Sampling("fps", 1.0), nvc=nvc)
    assert isinstance(out, Fallback) and reason in out.reason
    assert nvc.constructed == []  # decided before any decoder exists


def test_qualify_reasons():
    upright = Orientation()
    assert qualify("h264", "yuv420p", upright, "bt709", 1920, 1080) is None
    assert qualify("hevc", "yuvj420p", Orientation.from_rotation(360), "bt601", 64, 48) is None
    assert "neither BT.601 nor BT.709" in qualify("h264", "yuv420p", upright, None, 64, 48)
    assert "odd picture size 65x48" in qualify("av1", "yuv420p", upright, "bt709", 65, 48)
    assert "rotated by 270 degrees for" in qualify("vp9", "yuv420p", Orientation.from_rotation(270), "bt709", 64, 48)
    assert "rotated by 0 degrees and mirrored" in qualify("h264", "yuv420p", Orientation.from_exif(2), "bt709", 64, 48)
    assert "'prores'" in qualify("prores", "yuv422p10le", upright, "bt709", 64, 48)
    hlg = SdrConversion("hlg", "bt2020", "bt709")  # an 8-bit HLG stream NVDEC could decode
    assert "HLG in BT2020" in qualify("hevc", "yuv420p", upright, "bt709", 64, 48, hlg)
    assert "interlaced" in qualify("h264", "yuv420p", upright, "bt709", 64, 48, None, True)


@pytest.mark.parametrize("break_it, reason", [
    (lambda d: setattr(d, "num_frames", d.num_frames - 1), "NVDEC counts 119 frames, the demuxer 120"),
    (lambda d: [setattr(f, "timestamp", f.timestamp + 1) for f in d.frames], "has timestamp"),
    (lambda d: setattr(d, "get_batch_frames_by_index", lambda i, get=d.get_batch_frames_by_index: get(i)[:-1]),
     "returned 3 of 4 frames"),
])
def test_a_decoder_that_disagrees_with_the_index_falls_back(nvc, break_it, reason):
    init = nvc.SimpleDecoder.__init__

    def broken_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        break_it(self)

    nvc.SimpleDecoder.__init__ = broken_init
    out = decode_video_nvdec(CLIPS["gop30"](), Sampling("fps", 1.0, exact=True), nvc=nvc)
    assert isinstance(out, Fallback) and reason in out.reason


@pytest.mark.parametrize("break_it, reason", [
    (lambda frames, before: [setattr(f, "timestamp", f.timestamp + 1) for f in frames] and frames, "has timestamp"),
    (lambda frames, before: [f for i, f in enumerate(frames) if before + i != 1], "returned 3 of 4 keyframes"),
])
def test_a_core_decoder_that_disagrees_falls_back(nvc, monkeypatch, break_it, reason):
    """Frames stamped otherwise than their packets, or one missing (the second of the clip)."""
    from fake_pynvvideocodec import CoreDecoder

    decode, count = CoreDecoder.Decode, [0]

    def broken(self, packet):
        frames = decode(self, packet)
        out = break_it(frames, count[0])
        count[0] += len(frames)
        return out

    monkeypatch.setattr(CoreDecoder, "Decode", broken)
    out = decode_video_nvdec(CLIPS["gop30"](), Sampling("keyframes"), nvc=nvc)
    assert isinstance(out, Fallback) and reason in out.reason


@pytest.mark.parametrize("sampling, decoder", [(Sampling("fps", 1.0), "CreateDecoder"),
                                               (Sampling("fps", 1.0, exact=True), "SimpleDecoder")])
def test_a_decoder_that_raises_falls_back(nvc, sampling, decoder):
    def fail(*args, **kwargs):
        raise RuntimeError("cuvidCreateDecoder failed")

    if decoder == "CreateDecoder":
        nvc.CreateDecoder = fail
    else:
        nvc.SimpleDecoder.__init__ = fail
    out = decode_video_nvdec(CLIPS["gop30"](), sampling, nvc=nvc)
    assert isinstance(out, Fallback) and "RuntimeError: cuvidCreateDecoder failed" in out.reason


# ----------------------------------------------------------------------------- safety
@pytest.mark.parametrize("data, limits, error", [
    (lambda: syn.hls_playlist("clip.mp4"), None, ForbiddenSourceError),
    (lambda: syn.ffconcat_list("clip.mp4"), None, ForbiddenSourceError),
    (lambda: b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, None, CorruptMediaError),
    (lambda: CLIPS["gop30"](), Limits(max_bytes=1000), MediaLimitError),
    (lambda: CLIPS["gop30"](), Limits(max_pixels=100 * 90), MediaLimitError),
    (lambda: CLIPS["gop30"](), Limits(max_duration_s=1.0), MediaLimitError),
    (tone_file, None, EmptyMediaError),  # no video stream
])
def test_hostile_inputs_are_refused_before_a_decoder_exists(nvc, data, limits, error):
    with pytest.raises(error):
        decode_video_nvdec(data(), Sampling("fps", 1.0), limits, nvc=nvc)
    assert nvc.constructed == []


def test_urls_and_paths_go_through_the_same_checks(nvc, tmp_path):
    with pytest.raises(ForbiddenSourceError):
        decode_video_nvdec("http://example.com/a.mp4", nvc=nvc)
    path = tmp_path / "clip.mp4"
    path.write_bytes(CLIPS["gop30"]())
    out = decode_video_nvdec(str(path), Sampling("fps", 1.0), nvc=nvc)
    assert not isinstance(out, Fallback) and len(out.frames) == 4
    assert nvc.constructed and len(nvc.constructed) == 1  # handed the bytes, not the path


# ----------------------------------------------------------------------------- placement
def test_video_decoder_validation(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(InputError, match="video_decoder 'gpu'"):
        resolve_placement("cpu", "triton", "gpu")
    with pytest.raises(InputError, match="feeds the device pipeline"):
        resolve_placement("cpu", None, "nvdec")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import raises ImportError
    with pytest.raises(DeviceUnavailableError, match="needs PyNvVideoCodec: not installed"):
        resolve_placement("cpu", "triton", "nvdec")
    assert resolve_placement("cpu", "triton") == Placement("cpu", "triton", "cpu")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_nvc())
    assert resolve_placement("cpu", "triton", "auto").video_decoder == "cpu"  # auto: NVDEC only on a GPU
    assert resolve_placement("cpu", "triton", "nvdec") == Placement("cpu", "triton", "nvdec")
    assert "NVDEC" in video_decode_note(Placement("cpu", "triton", "nvdec"))
    assert "not on a GPU" in video_decode_note(Placement("cpu", "triton", "cpu"))


def test_a_module_whose_import_fails_is_unavailable(monkeypatch, tmp_path):
    (tmp_path / "PyNvVideoCodec.py").write_text("raise RuntimeError('Driver version is too old')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "PyNvVideoCodec", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(DeviceUnavailableError, match="RuntimeError: Driver version is too old"):
        resolve_placement("cpu", "triton", "nvdec")
    assert "Driver version is too old" in video_decode_note(Placement("cuda:0", "cuda", "cpu"))


# ----------------------------------------------------------------------------- Session
needs_interpreter = pytest.mark.skipif(CUDA or os.environ.get("TRITON_INTERPRET") != "1",
                                       reason="runs the device pipeline on CPU tensors (Triton interpreter)")


@pytest.mark.models
@needs_interpreter
def test_session_with_nvdec_matches_the_cpu_session(model_repo, tmp_path, monkeypatch, caplog, stack):
    import engine
    import engine.kernels
    from test_device_pipeline import _assert_same_verdict, _device_repo

    nvc = fake_nvc()
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", nvc)
    device = stack.enter_context(engine.Session(_device_repo(tmp_path, model_repo.path), device="cpu",
                                                kernel_impl="triton", video_decoder="nvdec"))
    cpu = stack.enter_context(engine.Session(model_repo.path))
    assert device.video_decoder == "nvdec"
    given = []

    class Spy:  # the chosen kernels, recording the planes preprocess receives
        def __getattr__(self, name):
            return getattr(engine.kernels, name)

        def preprocess(self, planes, spec, **kw):
            given.extend((kw["format"], p.data_ptr()) for f in planes for p in f)
            return engine.kernels.preprocess(planes, spec, **kw)

    monkeypatch.setattr(device._device, "ops", Spy())
    video = clip(width=160, height=96, fps=10, duration=2.0, gop=10)  # 2 frames at 1 fps
    a, b = cpu.moderate(video=video), device.moderate(video=video)
    _assert_same_verdict(a, b)
    assert b.sampled_timestamps == a.sampled_timestamps == (0.0, 1.0)
    assert b.policies["sexual_content"].score == pytest.approx(a.policies["sexual_content"].score, rel=1e-3)
    assert len(nvc.constructed) == 1
    assert [fmt for fmt, _ in given] == ["nv12"] * 4  # the decoder's planes, no staging copy
    with caplog.at_level("INFO", logger="engine.device_pipeline"):
        c = device.moderate(video=rotated_clip(90))  # the kernel does not rotate: the CPU decodes it
    assert "rotated by 90 degrees" in caplog.text and len(nvc.constructed) == 1
    assert c.sampled_timestamps == (0.0,)


# ----------------------------------------------------------------------------- real GPU (not run here)
def _real_nvdec():
    from engine.device import load_nvdec

    try:
        return load_nvdec()
    except DeviceUnavailableError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", CLIPS)
def test_real_nvdec_frames_match_the_cpu_decoder(name):
    nvc = _real_nvdec()
    data = CLIPS[name]()
    for sampling in (Sampling("fps", 4.0), Sampling("keyframes"), Sampling("all", max_frames=9)):
        cpu, dev = decode_video(data, sampling), decode_video_nvdec(data, sampling, nvc=nvc)
        assert not isinstance(dev, Fallback), dev.reason
        assert dev.frames[0].planes[0].is_cuda
        assert dev.timestamps == cpu.timestamps
        for a, b in zip(cpu.frames, dev.frames, strict=True):  # H.264 decoding is bit-exact
            for want, got in zip(_as_nv12(a), b.planes, strict=True):
                np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.gpu
@pytest.mark.models
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["cuda", "triton"])
def test_real_nvdec_session_matches_the_cpu_session(model_repo, monkeypatch, impl, stack):
    import engine
    import engine.device_pipeline as dp
    from test_device_pipeline import _assert_same_verdict

    _real_nvdec()
    decoded = []

    def spy(*args, **kw):
        decoded.append(out := nvdec_decode(*args, **kw))
        return out

    nvdec_decode = dp.decode_video_nvdec
    monkeypatch.setattr(dp, "decode_video_nvdec", spy)
    video = clip(width=640, height=360, fps=25, duration=3.0, gop=25, audio=True)  # 3 frames at 1 fps
    gpu = stack.enter_context(engine.Session(model_repo.path, device="cuda:0", kernel_impl=impl,
                                             video_decoder="nvdec"))
    a, b = stack.enter_context(engine.Session(model_repo.path)).moderate(video=video), gpu.moderate(video=video)
    assert len(decoded) == 1 and not isinstance(decoded[0], Fallback), decoded
    assert b.sampled_timestamps == a.sampled_timestamps == (0.0, 1.0, 2.0)
    _assert_same_verdict(a, b)
