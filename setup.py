"""The package is configured in pyproject.toml; this file only adds the optional C kernels.

``infovae.functional._cpu_kernels`` (``infovae/functional/_cpu_kernels.c``, plain C against the
Python C API: no torch headers, so it builds in pip's isolated environment in about a second).
It is optional: where it cannot be built (no C compiler) the install goes on and the package
runs its eager PyTorch path, which gives the same guarantees (``infovae.functional.native``).
"""
import sys

from setuptools import Extension, setup

_FLAGS = [] if sys.platform == "win32" else ["-O3", "-std=gnu11", "-Wno-psabi"]

setup(
    ext_modules=[
        Extension(
            "infovae.functional._cpu_kernels",
            sources=["infovae/functional/_cpu_kernels.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
    ]
)
