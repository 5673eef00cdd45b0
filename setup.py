"""Build the Cython hot path into `serving._kernels` (metadata lives in pyproject.toml)."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = bool(os.environ.get("SERVING_CYTHON_DEBUG"))  # annotate html, bounds checks, line tracing

ext = Extension(
    "serving._kernels",
    ["ext/_kernels.pyx"],
    extra_compile_args=["-O2"],
    define_macros=[("CYTHON_TRACE_NOGIL", "1")] if DEBUG else [],
)

setup(
    ext_modules=cythonize(
        [ext],
        annotate=DEBUG,
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "linetrace": DEBUG,
            "cdivision": True,
        },
    )
)
