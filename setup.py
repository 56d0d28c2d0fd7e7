"""Build of the native extension ``engine._C`` (pybind11, never linked against torch).

``python setup.py build_ext --inplace`` or ``pip install -e .``. The extension targets the
portable x86-64 baseline; hot loops carry an AVX2/FMA clone chosen at run time (see
csrc/simd.h, Note [portable SIMD]). OpenMP is used when the compiler accepts ``-fopenmp``.
"""

from __future__ import annotations

import os
import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext, has_flag
from setuptools import setup

__version__ = "0.1.0"


class BuildExt(build_ext):
    """pybind11's build_ext plus OpenMP when the compiler supports it."""

    def build_extensions(self):
        compiler = self.compiler
        omp = os.environ.get("ENGINE_NO_OPENMP") != "1" and sys.platform != "darwin" and has_flag(
            compiler, "-fopenmp"
        )
        for ext in self.extensions:
            if omp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


ext_modules = [
    Pybind11Extension(
        "engine._C",
        sorted(glob("csrc/*.cpp")),
        include_dirs=["csrc", "csrc/include"],
        define_macros=[("VERSION_INFO", __version__)],
        cxx_std=17,
        extra_compile_args=["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]
        if sys.platform != "win32"
        else ["/O2"],
    ),
]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
