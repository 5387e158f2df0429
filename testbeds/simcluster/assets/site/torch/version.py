"""Stub torch.version: `cuda` is None in a CPU build, as in the real torch/version.py."""

from _gx10_versions import value

__version__ = value("torch.__version__")
_cuda = value("torch.version.cuda")
cuda = None if _cuda in ("", "None") else _cuda
