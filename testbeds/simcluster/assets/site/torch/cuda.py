"""Stub torch.cuda: available exactly when the build is a CUDA build."""

from . import version


def is_available() -> bool:
    return version.cuda is not None


def device_count() -> int:
    return 1 if is_available() else 0
