"""What ``bench/gpu_check.sh`` needs on a GPU machine that cannot reach PyPI, in one folder.

``python bench/gpu_bundle.py [--out .gpu_bundle] [--python 3.12] [--budget-mib 60] [--nvdec]`` writes:

* ``wheels/``: the runtime dependencies a stock CUDA + torch image lacks (PyAV, tritonclient and
  python-rapidjson, onnx2torch; :data:`PACKAGES`), at the versions installed here (the tested
  ones), for the target machine's Python (binary manylinux wheels through ``pip download``).
  PyAV is stored as an xz tarball of its unpacked wheel instead (35 MB -> about 25 MB: its
  bundled FFmpeg libraries compress well, and the bundle travels under a size limit). ``--nvdec``
  adds NVIDIA's PyNvVideoCodec (:data:`NVDEC_PACKAGE`, not a dependency of the engine; 27 MB ->
  about 5 MB the same way, less the files its import never reads: :data:`UNUSED`) for
  ``Session(video_decoder="nvdec")``;
* ``models/<model>.tar.xz``: the fetched version folders of ``model_repo``, in the order of
  :data:`MODEL_ORDER`, as many as fit in the budget (YAMNet's dequantised weights shrink from
  15 MB to 5 MB; open_nsfw barely compresses; MiniLM, 90 MB, never fits a 64 MiB transfer);
* ``MANIFEST.json``: what is inside and what was left out, with sizes.

``--models minilm --fp16-transport minilm --skip av`` makes a bundle for the text models alone:
MiniLM's float32 weights (90 MB, 78 MiB compressed) travel rounded to float16 (39 MiB) and are
restored as float32 on unpack, where the repository's lock entry is rewritten to the restored file
with a warning. The checks then compare backends on the same, rounded weights (the torch CUDA
backend against ONNX Runtime), which holds; the model's scores are no longer the locked model's,
so that bundle is for backend checks and throughput only. PyAV is not needed there: the backend
tests and the models suite do not decode media. ``--transport-bits 6`` keeps 6 of float16's 10
mantissa bits (round to nearest; relative error <= 2^-7): MiniLM then compresses to 28 MiB, so
``--models minilm --fp16-transport minilm --transport-bits 6`` fits beside PyAV (about 55 MiB)
and the GPU Session's text tests can run too.

``python bench/gpu_bundle.py --unpack DIR --site SITE --repo model_repo`` (run by gpu_check.sh
when the folder exists) installs the wheels into ``SITE`` (put it on PYTHONPATH), unpacks PyAV
there and the models into the repository; the checks then run on a subset repository of the
models that travelled (bench/repo_subset.py). Archives are extracted with tarfile's ``data``
filter (no absolute paths, links out of the tree or device files).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import lzma
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("av", "tritonclient", "python-rapidjson", "onnx2torch")
NVDEC_PACKAGE = "pynvvideocodec==2.2.4"  # the version engine/media/nvdec.py was written against
PACKED = ("av", "pynvvideocodec")  # stored as xz tarballs of their unpacked wheels
# what a packed wheel holds that the import never reads: PyNvVideoCodec's tutorial notebooks and
# benchmarks, and the FFmpeg source tarball it ships as data (12 of its 27 MB, incompressible)
UNUSED = {"pynvvideocodec": ("samples/", "benchmarks/", "pynvvideocodec-*.data/")}
MODEL_ORDER = ("open_nsfw", "yamnet", "profanity", "minilm")  # vision first: most GPU rows need it
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
XZ_PRESET = 6  # preset 9 saves ~2% more on these files for ~3x the time
TRANSPORT_MIN_ELEMENTS = 1024  # initializers rounded to float16 by --fp16-transport: the weights
TRANSPORT_NOTE = "fp16_transport.json"  # beside a rounded ONNX file in its archive
FP16_MANTISSA_BITS = 10


def xz_tar(files: dict[str, Path], dest: Path) -> int:
    """Write ``{name in archive: file}`` as an xz tarball; returns its size in bytes."""
    with lzma.open(dest, "wb", preset=XZ_PRESET) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for name, path in sorted(files.items()):
            tar.add(path, arcname=name, recursive=False)
    return dest.stat().st_size


def version_files(repo: Path, model: str) -> dict[str, Path]:
    """Every file under the model's numbered version folders, by its path inside the repository."""
    root = repo / model
    return {str(p.relative_to(repo)): p for v in sorted(root.iterdir()) if v.is_dir() and v.name.isdigit()
            for p in sorted(v.rglob("*")) if p.is_file()}


def _recast(src: Path, dest: Path, pick, convert) -> list[str]:
    """Write ``src`` to ``dest`` with the initializers ``pick(init)`` selects replaced by
    ``convert(their array)``; returns their names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    names = []
    for init in model.graph.initializer:
        if pick(init):
            init.CopyFrom(numpy_helper.from_array(convert(numpy_helper.to_array(init)), init.name))
            names.append(init.name)
    onnx.save(model, str(dest))
    return names


def to_float16(a, mantissa_bits: int = FP16_MANTISSA_BITS):
    """``a`` as float16 rounded to nearest with ``mantissa_bits`` of its 10 mantissa bits (the
    dropped low bits zero: they compress away). Rounded once, from float32: the relative error
    is at most 2^-(mantissa_bits + 1) in float16's normal range."""
    import numpy as np

    if not 1 <= mantissa_bits <= FP16_MANTISSA_BITS:
        raise ValueError(f"mantissa bits must be 1..{FP16_MANTISSA_BITS}, got {mantissa_bits}")
    if mantissa_bits == FP16_MANTISSA_BITS:
        return np.asarray(a).astype(np.float16)
    drop = 23 - mantissa_bits  # of float32's 23 mantissa bits
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)  # a carry rounds up the exponent
    bits = (bits + (1 << (drop - 1))) & ~np.uint64((1 << drop) - 1)
    return bits.astype(np.uint32).view(np.float32).astype(np.float16)


def rounded_copy(onnx_path: Path, dest: Path, mantissa_bits: int = FP16_MANTISSA_BITS) -> list[str]:
    """``onnx_path`` with its float32 initializers of TRANSPORT_MIN_ELEMENTS or more stored as
    float16 (:func:`to_float16`), written to ``dest``; returns the names rounded (small ones, e.g.
    LayerNorm epsilons, stay exact)."""
    import numpy as np
    import onnx

    return _recast(onnx_path, dest, lambda i: i.data_type == onnx.TensorProto.FLOAT
                   and np.prod(i.dims) >= TRANSPORT_MIN_ELEMENTS, lambda a: to_float16(a, mantissa_bits))


def restore_rounded(onnx_path: Path, rounded: list[str]) -> None:
    """Undo :func:`rounded_copy`'s storage type in place: the named initializers back to float32
    (their values stay the float16-rounded ones)."""
    import numpy as np

    names = set(rounded)
    _recast(onnx_path, onnx_path, lambda i: i.name in names, lambda a: a.astype(np.float32))


def _round_for_transport(files: dict[str, Path], tmp: Path, mantissa_bits: int) -> dict[str, Path]:
    """``files`` with each ONNX file replaced by its rounded copy in ``tmp`` and, beside it, a
    :data:`TRANSPORT_NOTE` naming the initializers to restore."""
    out = dict(files)
    for name, path in files.items():
        if name.endswith(".onnx"):
            copy = tmp / name.replace("/", "_")
            rounded = rounded_copy(path, copy, mantissa_bits)
            out[name] = copy
            note = tmp / (copy.name + ".json")
            note.write_text(json.dumps({"file": Path(name).name, "rounded": rounded, "mantissa_bits": mantissa_bits}))
            out[str(Path(name).parent / TRANSPORT_NOTE)] = note
    return out


def pack_models(repo: Path, out: Path, budget: int, models: tuple[str, ...] = MODEL_ORDER,
                fp16_transport: tuple[str, ...] = (),
                mantissa_bits: int = FP16_MANTISSA_BITS) -> tuple[dict[str, int], dict[str, str]]:
    """Compress the fetched ``models`` (in :data:`MODEL_ORDER`) while the bundle stays within
    ``budget`` bytes, the ONNX files of ``fp16_transport`` models rounded (:func:`rounded_copy`);
    returns ({model: archive bytes}, {model: why it was left out})."""
    out.mkdir(parents=True, exist_ok=True)
    packed, left = {}, {}
    for model in (m for m in MODEL_ORDER if m in models):
        files = version_files(repo, model) if (repo / model).is_dir() else {}
        if not files:
            left[model] = "not fetched"
            continue
        dest = out / f"{model}.tar.xz"
        with tempfile.TemporaryDirectory() as tmp:
            if model in fp16_transport:
                files = _round_for_transport(files, Path(tmp), mantissa_bits)
            size = xz_tar(files, dest)
        if size > budget:
            dest.unlink()
            left[model] = f"{size / 2**20:.1f} MiB compressed, {budget / 2**20:.1f} MiB left in the budget"
            continue
        packed[model], budget = size, budget - size
    return packed, left


def download_wheels(out: Path, python: str, extra: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[Path]:
    """pip download of :data:`PACKAGES` (less ``skip``) at the installed versions, plus ``extra``
    requirements, for ``python`` (e.g. "3.12")."""
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in PACKAGES if name not in skip] + list(extra)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out),
           "--implementation", "cp", "--python-version", python, *[a for p in PLATFORMS for a in ("--platform", p)],
           *pins]
    subprocess.run(cmd, check=True)
    return sorted(out.glob("*.whl"))


def repack_wheel(wheel: Path, dest: Path, unused: tuple[str, ...] = ()) -> int:
    """A wheel's files as an xz tarball (what ``pip install --target`` would have written), less
    the files under the ``unused`` folder patterns."""
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        files = {str(p.relative_to(tmp)): p for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        files = {k: v for k, v in files.items() if not any(fnmatch.fnmatch(k, f"{u}*") for u in unused)}
        size = xz_tar(files, dest)
    wheel.unlink()
    return size


def make_bundle(out: Path, repo: Path, python: str, budget: int, nvdec: bool = False,
                models: tuple[str, ...] = MODEL_ORDER, fp16_transport: tuple[str, ...] = (),
                skip: tuple[str, ...] = (), mantissa_bits: int = FP16_MANTISSA_BITS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    wheels = download_wheels(out / "wheels", python, (NVDEC_PACKAGE,) if nvdec else (), skip)
    sizes = {}
    for w in wheels:
        name = w.name.split("-")[0].lower()
        if name in PACKED:
            sizes[f"{name}.tar.xz"] = repack_wheel(w, out / f"{name}.tar.xz", UNUSED.get(name, ()))
        else:
            sizes[f"wheels/{w.name}"] = w.stat().st_size
    used = sum(sizes.values())
    packed, left = pack_models(repo, out / "models", budget - used, models, fp16_transport, mantissa_bits)
    packages = {n: metadata.version(n) for n in PACKAGES if n not in skip}
    if nvdec:
        packages.update([NVDEC_PACKAGE.split("==")])
    manifest = {"python": python, "packages": packages, "files": sizes, "models": packed,
                "models_left_out": left, "fp16_transport": [m for m in packed if m in fp16_transport],
                "transport_mantissa_bits": mantissa_bits,
                "total_bytes": used + sum(packed.values())}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(dest, filter="data")


def unpack(bundle: Path, site: Path, repo: Path) -> list[str]:
    """Install the bundle's packages into ``site`` and its models into ``repo``; returns the
    models unpacked."""
    site.mkdir(parents=True, exist_ok=True)
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, wheels)], check=True)
    for name in PACKED:
        if (bundle / f"{name}.tar.xz").is_file():
            _extract(bundle / f"{name}.tar.xz", site)
    models = sorted((bundle / "models").glob("*.tar.xz"))
    for archive in models:
        _extract(archive, repo)
    notes = sorted(repo.glob(f"*/*/{TRANSPORT_NOTE}"))
    if notes:  # engine.repo imports tritonclient, which has just been installed into site
        sys.path[:0] = [str(site), str(ROOT)]
    for note in notes:
        _restore_transported(repo, note)
    return [a.name.removesuffix(".tar.xz") for a in models]


def _restore_transported(repo: Path, note: Path) -> None:
    """Restore the float32 storage of a model that travelled rounded, and point its lock entry
    at the restored file (with a warning: it is not the locked model any more)."""
    from engine.repo.lock import LOCK_NAME, read_lock, sha256_file, write_lock

    info = json.loads(note.read_text())
    path = note.parent / info["file"]
    restore_rounded(path, info["rounded"])
    note.unlink()
    rel = path.relative_to(repo).as_posix()
    lock_path = repo / LOCK_NAME
    lock = read_lock(lock_path)
    if rel in lock.files:
        lock.files[rel] = dataclasses.replace(lock.files[rel], size=path.stat().st_size,
                                              sha256=sha256_file(path, cache=False))
        write_lock(lock_path, lock)
    bits = info.get("mantissa_bits", FP16_MANTISSA_BITS)
    print(f"WARNING: {rel} travelled with {len(info['rounded'])} float32 initializers rounded to "
          f"float16 with {bits} mantissa bits (restored as float32 with the rounded values); {LOCK_NAME} now records that "
          "file: for backend checks and throughput, not for the model's reference scores", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu_bundle")
    ap.add_argument("--repo", type=Path, default=ROOT / "model_repo")
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    ap.add_argument("--budget-mib", type=float, default=60.0, help="size limit of the whole bundle")
    ap.add_argument("--nvdec", action="store_true", help=f"add {NVDEC_PACKAGE} (NVDEC video decoding)")
    ap.add_argument("--models", default=",".join(MODEL_ORDER), help="comma-separated models to pack")
    ap.add_argument("--fp16-transport", default="", help="comma-separated ONNX models whose weights travel "
                    "rounded to float16 (for backend checks only, see above)")
    ap.add_argument("--transport-bits", type=int, default=FP16_MANTISSA_BITS,
                    help="mantissa bits of float16 kept by --fp16-transport (fewer compress better)")
    ap.add_argument("--skip", default="", help=f"comma-separated packages of {', '.join(PACKAGES)} to leave out")
    ap.add_argument("--unpack", type=Path, default=None, help="install a bundle instead of making one")
    ap.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "gpu_bundle_site")
    args = ap.parse_args(argv)
    if args.unpack:
        models = unpack(args.unpack, args.site, args.repo)
        print(f"bundle {args.unpack}: packages in {args.site}, models {', '.join(models) or 'none'} in {args.repo}")
        return 0
    names = lambda text: tuple(x.strip() for x in text.split(",") if x.strip())  # noqa: E731
    m = make_bundle(args.out, args.repo, args.python, int(args.budget_mib * 2**20), args.nvdec,
                    names(args.models), names(args.fp16_transport), names(args.skip), args.transport_bits)
    left = "; ".join(f"{k} ({v})" for k, v in m["models_left_out"].items()) or "nothing"
    print(f"{args.out}: {m['total_bytes'] / 2**20:.1f} MiB, models {', '.join(m['models']) or 'none'}; left out: {left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
