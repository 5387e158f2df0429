"""Stub vllm: the version the image was built from (vllm/version.py's `__version__`)."""

from _gx10_versions import value

__version__ = value("vllm.__version__")
