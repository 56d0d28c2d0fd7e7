"""scikit-learn backend (engine-only; Triton has no such backend): the profanity model.

Files (config ``parameters``): ``vectorizer`` (default vectorizer.joblib, a fitted text
vectorizer) and ``model`` (default model.joblib, a classifier with predict_proba).
Input: one TYPE_STRING tensor [B,1] (a [B] array or list of str is accepted too).
Output: one TYPE_FP32 tensor [B,1] = ``predict_proba(vectorizer.transform(texts))[:, 1]``.

Files are verified against models.lock by ModelRepository before they are unpickled.
``transform``/``predict_proba`` only read the fitted estimators, so ``infer`` is thread-safe.
"""

from __future__ import annotations

import numpy as np

from engine.backends.base import BaseBackend, specs_from_config
from engine.errors import InputError, ModelError


class SklearnBackend(BaseBackend):
    name = "sklearn"

    def __init__(self, entry, *, threads: int | None = None):
        cfg = entry.config
        inputs, outputs = specs_from_config(cfg)
        super().__init__(entry.name, cfg.max_batch_size, inputs, outputs)
        if len(self.inputs) != 1 or self.inputs[0].dtype != np.dtype(object):
            raise ModelError(f"{entry.name}: the sklearn backend needs exactly one TYPE_STRING input")
        if len(self.outputs) != 1 or self.outputs[0].dtype.kind != "f":
            raise ModelError(f"{entry.name}: the sklearn backend needs exactly one float output")
        try:
            import joblib
        except ImportError:
            raise ModelError("the sklearn backend needs joblib and scikit-learn") from None

        def param(key, default):
            p = cfg.parameters.get(key)
            return p.string_value if p is not None and p.string_value else default

        files = {}
        for key, default in (("vectorizer", "vectorizer.joblib"), ("model", "model.joblib")):
            fname = param(key, default)
            path = entry.files.get(fname) if getattr(entry, "files", None) else None
            if path is None:
                path = entry.version_dir / fname
            if not path.is_file():
                from engine.errors import ModelNotFetchedError

                raise ModelNotFetchedError(f"{entry.name}: {path} missing; run `engine models fetch`")
            files[key] = path
        import warnings

        try:
            with warnings.catch_warnings():
                # an sklearn version mismatch is an error, not a warning, for us
                warnings.simplefilter("error", category=_inconsistent_version_warning())
                self.vectorizer = joblib.load(files["vectorizer"])
                self.model = joblib.load(files["model"])
        except Exception as e:  # noqa: BLE001
            raise ModelError(
                f"{entry.name}: cannot load the scikit-learn model ({type(e).__name__}: {e}); "
                "it needs scikit-learn==1.9.1 and joblib==1.6.0"
            ) from None
        if not hasattr(self.model, "predict_proba"):
            raise ModelError(f"{entry.name}: the model has no predict_proba")
        self._in = self.inputs[0].name
        self._out = self.outputs[0].name
        self._out_dtype = self.outputs[0].dtype

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arr = inputs[self._in]
        texts = []
        for v in arr.reshape(len(arr), -1)[:, 0] if arr.ndim > 1 else arr:
            if isinstance(v, (bytes, np.bytes_)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{self.model_name}: text input is not valid UTF-8") from None
            texts.append(str(v))
        prob = self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]
        return {self._out: prob.astype(self._out_dtype).reshape(-1, 1)}


def _inconsistent_version_warning():
    try:
        from sklearn.exceptions import InconsistentVersionWarning

        return InconsistentVersionWarning
    except ImportError:  # pragma: no cover
        return UserWarning
