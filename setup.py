"""Build the Cython hot path into `serving._kernels` (metadata lives in pyproject.toml)."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = bool(os.environ.get("SERVING_CYTHON_DEBUG"))  # annotate html, bounds checks, line tracing
# e.g. "address,undefined": compiler sanitizers, for the CI lane in .ci/sanitize (every report
# aborts, so a test run on this build fails on any finding). -fno-wrapv undoes Python's -fwrapv,
# so a signed overflow is reported instead of silently wrapping.
SANITIZE = os.environ.get("SERVING_CYTHON_SANITIZE", "")
SANITIZE_FLAGS = [f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
                  "-fno-wrapv", "-g"] if SANITIZE else []

ext = Extension(
    "serving._kernels",
    ["ext/_kernels.pyx"],
    extra_compile_args=["-O2", *SANITIZE_FLAGS],
    extra_link_args=SANITIZE_FLAGS,
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
