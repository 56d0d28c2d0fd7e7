"""bench/gpu_bundle.py: models packed in order under a size budget, and a bundle that unpacks to
the same bytes (pip download itself needs the network and is not exercised here)."""

from __future__ import annotations

import io
import json
import lzma
import os
import tarfile
import zipfile

import pytest

from bench import gpu_bundle


def _repo(tmp_path, sizes: dict[str, int]):
    """A repository whose models hold incompressible files of the given sizes (and a config)."""
    repo = tmp_path / "repo"
    for model, size in sizes.items():
        (repo / model / "1").mkdir(parents=True)
        (repo / model / "config.pbtxt").write_text(f'name: "{model}"')
        (repo / model / "1" / "model.onnx").write_bytes(os.urandom(size))
        (repo / model / "1" / "extra.csv").write_text("a,b\n")
    return repo


def test_models_go_in_order_while_the_budget_lasts(tmp_path):
    repo = _repo(tmp_path, {"open_nsfw": 200_000, "yamnet": 50_000, "minilm": 400_000})
    packed, left = gpu_bundle.pack_models(repo, tmp_path / "models", budget=300_000)
    assert list(packed) == ["open_nsfw", "yamnet"]
    assert set(left) == {"profanity", "minilm"} and left["profanity"] == "not fetched"
    assert "MiB left in the budget" in left["minilm"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["open_nsfw.tar.xz", "yamnet.tar.xz"]
    assert sum(packed.values()) <= 300_000


def test_a_bundle_unpacks_to_the_same_files(tmp_path):
    repo = _repo(tmp_path, {"open_nsfw": 3000, "yamnet": 2000})
    bundle = tmp_path / "bundle"
    gpu_bundle.pack_models(repo, bundle / "models", budget=10**9)
    wheel = bundle / "av-1.0-cp312-abi3-manylinux_2_28_x86_64.whl"  # stands in for PyAV
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("av/__init__.py", "VERSION = 'fake'\n")
        z.writestr("av.libs/libfake.so", b"\x7fELF")
    gpu_bundle.repack_wheel(wheel, bundle / "av.tar.xz")
    assert not wheel.exists()
    site, target = tmp_path / "site", tmp_path / "target"
    assert gpu_bundle.unpack(bundle, site, target) == ["open_nsfw", "yamnet"]
    for model in ("open_nsfw", "yamnet"):
        for name in ("model.onnx", "extra.csv"):
            assert (target / model / "1" / name).read_bytes() == (repo / model / "1" / name).read_bytes()
        assert not (target / model / "config.pbtxt").exists()  # configs are in the checkout already
    assert (site / "av" / "__init__.py").read_text() == "VERSION = 'fake'\n"
    assert (site / "av.libs" / "libfake.so").read_bytes() == b"\x7fELF"


def test_files_the_import_never_reads_stay_behind(tmp_path):
    wheel = tmp_path / "pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in ("PyNvVideoCodec/__init__.py", "PyNvVideoCodec/libavformat.so", "samples/decode.ipynb",
                     "benchmarks/run.py", "pynvvideocodec-2.2.4.data/data/external/ffmpeg.tar.xz",
                     "pynvvideocodec-2.2.4.dist-info/METADATA"):
            z.writestr(name, name)
    gpu_bundle.repack_wheel(wheel, tmp_path / "nv.tar.xz", gpu_bundle.UNUSED["pynvvideocodec"])
    with tarfile.open(tmp_path / "nv.tar.xz") as tar:
        assert sorted(tar.getnames()) == ["PyNvVideoCodec/__init__.py", "PyNvVideoCodec/libavformat.so",
                                          "pynvvideocodec-2.2.4.dist-info/METADATA"]


def test_an_archive_cannot_write_outside_its_folder(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    data = b"owned"
    with lzma.open(bundle / "models" / "evil.tar.xz", "wb") as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        gpu_bundle.unpack(bundle, tmp_path / "site", tmp_path / "repo")
    assert not (tmp_path / "outside.txt").exists()


def test_manifest_of_make_bundle(tmp_path, monkeypatch):
    repo = _repo(tmp_path, {"open_nsfw": 1000})

    def fake_download(out, python, extra, skip):  # the network part: a pure-Python wheel, PyAV's, NVDEC's
        assert extra == (gpu_bundle.NVDEC_PACKAGE,) and skip == ()
        out.mkdir(parents=True)
        for name in ("onnx2torch-1.5.15-py3-none-any.whl", "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl",
                     "pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl"):
            with zipfile.ZipFile(out / name, "w") as z:
                z.writestr(name.split("-")[0] + "/__init__.py", "")
        return sorted(out.glob("*.whl"))

    monkeypatch.setattr(gpu_bundle, "download_wheels", fake_download)
    monkeypatch.setattr(gpu_bundle.metadata, "version", lambda name: "9.9")
    m = gpu_bundle.make_bundle(tmp_path / "b", repo, "3.12", budget=10**6, nvdec=True)
    assert set(m["files"]) == {"av.tar.xz", "pynvvideocodec.tar.xz", "wheels/onnx2torch-1.5.15-py3-none-any.whl"}
    assert m["packages"]["pynvvideocodec"] == "2.2.4"
    assert list(m["models"]) == ["open_nsfw"] and m["models_left_out"]["minilm"] == "not fetched"
    assert m["total_bytes"] == sum(m["files"].values()) + m["models"]["open_nsfw"]
    assert json.loads((tmp_path / "b" / "MANIFEST.json").read_text()) == m


def test_float16_with_fewer_mantissa_bits():
    """to_float16 keeps the mantissa bits asked for (the others zero), rounds to nearest once
    (relative error <= 2^-(bits + 1)), and with all 10 bits is numpy's own cast."""
    np = pytest.importorskip("numpy")
    x = (np.random.default_rng(1).standard_normal(20000) * 3).astype(np.float32)
    assert np.array_equal(gpu_bundle.to_float16(x), x.astype(np.float16))
    for bits in (1, 6, 9):
        f = gpu_bundle.to_float16(x, bits)
        assert f.dtype == np.float16 and not (f.view(np.uint16) & ((1 << (10 - bits)) - 1)).any()
        rel = np.abs(f.astype(np.float32) - x) / np.abs(x)
        assert rel.max() <= 2.0 ** -(bits + 1) and rel.max() > 2.0 ** -(bits + 2)
    assert gpu_bundle.to_float16(np.float32([1.0 + 2**-7]), 6)[0] == np.float16(1.0 + 2**-6)  # ties round up
    with pytest.raises(ValueError, match="mantissa bits"):
        gpu_bundle.to_float16(x, 11)


@pytest.mark.parametrize("bits", [10, 6])
def test_fp16_transport_restores_float32_storage_and_relocks(tmp_path, bits):
    """A model that travels rounded comes back as float32 ONNX holding the float16-rounded weights
    (small initializers exact), and the destination lock records the restored file, so the
    repository verifies it; the other models' entries are untouched."""
    np = pytest.importorskip("numpy")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper, numpy_helper

    from engine.repo.lock import FileLock, Lock, read_lock, sha256_file, write_lock

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)  # 2048 elements: rounded
    b = (rng.standard_normal(32) * 1e-9).astype(np.float32)  # 32 elements: kept exact
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    repo = tmp_path / "repo"
    (repo / "minilm" / "1").mkdir(parents=True)
    (repo / "minilm" / "config.pbtxt").write_text('name: "minilm"')
    src = repo / "minilm" / "1" / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    (repo / "minilm" / "1" / "tokenizer.json").write_text("{}")

    def entry(path, rel):
        return FileLock(rel, "minilm", "w.whl", "0" * 64, "s", "0" * 64, "copy", path.stat().st_size,
                        sha256_file(path, cache=False))

    bundle, target = tmp_path / "bundle", tmp_path / "target"
    packed, _ = gpu_bundle.pack_models(repo, bundle / "models", 10**9, ("minilm",), ("minilm",), bits)
    assert list(packed) == ["minilm"]
    target.mkdir()
    tok = repo / "minilm" / "1" / "tokenizer.json"
    write_lock(target / "models.lock", Lock(files={"minilm/1/model.onnx": entry(src, "minilm/1/model.onnx"),
                                                  "minilm/1/tokenizer.json": entry(tok, "minilm/1/tokenizer.json")}))
    assert gpu_bundle.unpack(bundle, tmp_path / "site", target) == ["minilm"]
    out = target / "minilm" / "1" / "model.onnx"
    assert not (target / "minilm" / "1" / gpu_bundle.TRANSPORT_NOTE).exists()
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    assert inits["w"].dtype == np.float32 and np.array_equal(inits["w"], gpu_bundle.to_float16(w, bits).astype(np.float32))
    assert not np.array_equal(inits["w"], w)  # it did travel rounded
    assert np.array_equal(inits["b"], b)
    lock = read_lock(target / "models.lock")
    assert lock.files["minilm/1/model.onnx"].sha256 == sha256_file(out, cache=False)
    assert lock.files["minilm/1/tokenizer.json"] == entry(tok, "minilm/1/tokenizer.json")
    x = rng.standard_normal((3, 64)).astype(np.float32)
    y = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ inits["w"] + b, rtol=1e-5, atol=1e-5)
