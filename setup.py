"""Builds the optional C extension of the engine adapter (everything else is in pyproject.toml).

`optional=True`: without a C compiler the package still installs, and the engine falls back to
its ctypes back-end (abi/engine/__init__.py). The extension needs only Python's headers.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("abi.engine._native", ["abi/engine/_native.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers", "-Wno-cast-function-type"])])
