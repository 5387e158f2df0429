"""Stub torch: `__version__`, `version.cuda` and `cuda.is_available()`, as a CUDA or CPU build of
the real torch reports them (a CPU build: `version.cuda` is None, no CUDA device)."""

from _gx10_versions import value

from . import cuda, version

__version__ = value("torch.__version__")
__all__ = ["__version__", "cuda", "version"]
