"""Stub transformers: its `__version__`."""

from _gx10_versions import value

__version__ = value("transformers.__version__")
