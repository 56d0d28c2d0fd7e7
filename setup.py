"""Build of the native extensions (pybind11, never linked against torch).

``python setup.py build_ext --inplace`` or ``pip install -e .``:

* ``engine._C``: CPU kernels. Portable x86-64 baseline; hot loops carry an AVX2/FMA clone chosen
  at run time (see csrc/simd.h, Note [portable SIMD]). OpenMP when the compiler accepts
  ``-fopenmp`` (``ENGINE_NO_OPENMP=1`` turns it off).
* ``engine._C_cuda``: CUDA kernels (csrc/cuda/*.cu compiled by nvcc, bindings by the C++
  compiler, CUDA runtime linked statically so no libcudart is needed at run time and the module
  imports on machines without a driver). Built when nvcc is found (``$CUDA_HOME/bin/nvcc``,
  ``nvcc`` on PATH, ``/usr/local/cuda/bin/nvcc``). Environment:
  ``ENGINE_CUDA=1`` require it (fail without nvcc), ``ENGINE_CUDA=0`` skip it;
  ``ENGINE_CPU=0`` builds only the CUDA extension;
  ``ENGINE_CUDA_ARCHS`` real architectures, default ``80;89;90`` (plus PTX of the last one for
  newer GPUs); ``ENGINE_NVCC_FLAGS`` extra nvcc flags.

The C++ files of an extension compile in parallel, one job per CPU (``ENGINE_BUILD_JOBS=N``
chooses), and the .cu files each in a job of their own, its architectures in parallel too.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext, has_flag
from setuptools import find_packages, setup

__version__ = "0.1.0"

# an extension's C++ files compile in parallel, one per CPU (ENGINE_BUILD_JOBS=N to choose):
# setuptools compiles them one by one
ParallelCompile("ENGINE_BUILD_JOBS").install()


def _find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [os.path.join(home, "bin", "nvcc")] if home else []
    candidates += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _cuda_home(nvcc: str) -> str:
    """Toolkit root holding include/cuda_runtime.h (nvcc may be a wrapper script elsewhere)."""
    roots = [os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "",
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    for r in roots:
        if r and os.path.isfile(os.path.join(r, "include", "cuda_runtime.h")):
            return r
    raise RuntimeError(f"found nvcc at {nvcc} but no CUDA toolkit root (set CUDA_HOME)")


def _cuda_wanted() -> str | None:
    """nvcc path when _C_cuda should be built, None when it should be skipped."""
    flag = os.environ.get("ENGINE_CUDA", "").strip()
    if flag == "0":
        return None
    nvcc = _find_nvcc()
    if nvcc is None and flag == "1":
        raise RuntimeError("ENGINE_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
    return nvcc


class BuildExt(build_ext):
    """pybind11's build_ext plus OpenMP when the compiler supports it, and nvcc for .cu sources."""

    def build_extensions(self):
        compiler = self.compiler
        omp = os.environ.get("ENGINE_NO_OPENMP") != "1" and sys.platform != "darwin" and has_flag(
            compiler, "-fopenmp"
        )
        for ext in self.extensions:
            if omp and not getattr(ext, "cuda_sources", None):
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()

    def build_extension(self, ext):
        cuda_sources = getattr(ext, "cuda_sources", None)
        if cuda_sources:
            objects = self._compile_cuda(ext, cuda_sources)
            ext.extra_objects = list(ext.extra_objects or []) + objects
            ext.depends = list(ext.depends or []) + objects  # relink when an object changed
        super().build_extension(ext)

    def _compile_cuda(self, ext, sources):
        nvcc = ext.nvcc
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        archs = [a.strip() for a in os.environ.get("ENGINE_CUDA_ARCHS", "80;89;90").replace(",", ";").split(";") if a.strip()]
        gencode = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX
        # --threads 0: a file's architectures compile in parallel, one per CPU (preprocess_cuda.cu,
        # the longest: 51 -> 35 s on 2 cores)
        flags = ["-std=c++17", "-O3", "--threads", "0", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                 f"-DVERSION_INFO={__version__}", "-Icsrc", "-Icsrc/include", *gencode,
                 *shlex.split(os.environ.get("ENGINE_NVCC_FLAGS", ""))]
        headers = sorted(glob("csrc/include/engine/*.h") + glob("csrc/cuda/*.cuh") + glob("csrc/cuda/*.h"))
        newest_header = max((os.path.getmtime(h) for h in headers), default=0.0)
        jobs = []
        objects = []
        for src in sources:
            obj = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".o")
            objects.append(obj)
            stale = (self.force or not os.path.exists(obj)
                     or os.path.getmtime(obj) < max(os.path.getmtime(src), newest_header)
                     or ext.nvcc_flags_file_differs(obj, flags))
            if stale:
                jobs.append([nvcc, *flags, "-c", src, "-o", obj])

        def run(cmd):
            print(" ".join(shlex.quote(c) for c in cmd), flush=True)
            return subprocess.run(cmd, capture_output=True, text=True)

        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            results = list(pool.map(run, jobs))
        failed = [(cmd, r) for cmd, r in zip(jobs, results) if r.returncode != 0]
        for r in results:
            sys.stdout.write(r.stdout)
            sys.stderr.write(r.stderr)
        if failed:
            raise RuntimeError(
                f"nvcc failed on {', '.join(cmd[-3] for cmd, _ in failed)} "
                "(ENGINE_CUDA=0 skips the CUDA extension)"
            )
        for cmd, _ in zip(jobs, results):
            ext.record_flags(cmd[-1], flags)
        return objects


class CUDAExtension(Pybind11Extension):
    """Pybind11Extension whose ``cuda_sources`` are compiled by nvcc and linked in."""

    def __init__(self, name, sources, *, cuda_sources, nvcc, **kw):
        super().__init__(name, sources, **kw)
        self.cuda_sources = cuda_sources
        self.nvcc = nvcc

    @staticmethod
    def _flags_path(obj):
        return obj + ".flags"

    def nvcc_flags_file_differs(self, obj, flags):
        try:
            with open(self._flags_path(obj)) as f:
                return f.read() != " ".join(flags)
        except OSError:
            return True

    def record_flags(self, obj, flags):
        with open(self._flags_path(obj), "w") as f:
            f.write(" ".join(flags))


ext_modules = []
if os.environ.get("ENGINE_CPU", "") != "0":  # ENGINE_CPU=0: build only the CUDA extension
    ext_modules.append(Pybind11Extension(
        "engine._C",
        sorted(glob("csrc/*.cpp")),
        include_dirs=["csrc", "csrc/include"],
        define_macros=[("VERSION_INFO", __version__)],
        cxx_std=17,
        extra_compile_args=["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]
        if sys.platform != "win32"
        else ["/O2"],
    ))

_nvcc = _cuda_wanted()
if _nvcc is not None:
    _home = _cuda_home(_nvcc)
    _libdirs = [os.path.join(_home, d) for d in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")]
    # static runtime when the toolkit has it (no libcudart needed at run time), else the shared one
    _libdir, _cudart = next(((d, "cudart_static") for d in _libdirs if os.path.isfile(os.path.join(d, "libcudart_static.a"))),
                            (None, None))
    if _libdir is None:
        _libdir = next((d for d in _libdirs if glob(os.path.join(d, "libcudart.so*"))), _libdirs[0])
        _cudart = "cudart"
    _archs = os.environ.get("ENGINE_CUDA_ARCHS", "80;89;90").replace(",", ";").replace(";", "_")
    ext_modules.append(
        CUDAExtension(
            "engine._C_cuda",
            sorted(glob("csrc/cuda/*.cpp")),
            cuda_sources=sorted(glob("csrc/cuda/*.cu")),
            nvcc=_nvcc,
            include_dirs=["csrc", "csrc/include", os.path.join(_home, "include")],
            library_dirs=[_libdir],
            libraries=[_cudart, "dl", "rt", "pthread"],
            runtime_library_dirs=[] if _cudart == "cudart_static" else [_libdir],
            define_macros=[("VERSION_INFO", __version__), ("ENGINE_CUDA_ARCHS", _archs)],
            cxx_std=17,
            extra_compile_args=["-O2"],
        )
    )

# The Triton kernels live in the top-level kernels/ folder (kernels/ owns Triton code) and install
# as the engine.kernels subpackage; editable installs map the name to the folder the same way.
setup(
    packages=find_packages(include=["engine", "engine.*"]) + ["engine.kernels"],
    package_dir={"engine.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
