"""What every test shares for the two things that would otherwise differ test by test: what a
test does when its test bed cannot run, and how much slack a timing bound gets.

- `skip_or_fail`: skip where the bed cannot run, but fail under CI (env ``CI`` set), where a
  silently skipped suite would make a broken test machine look green.
- `time_scale` / `timing`: every timing bound is multiplied by one factor from the environment
  (``GX10_TIME_SCALE``, default 1; raise it on a slow or loaded machine), and every timing failure
  says the machine's load, so a flake on a busy box can be told from a regression.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

SCALE_ENV = "GX10_TIME_SCALE"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip this test with `reason`; under CI fail with it instead."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def time_scale() -> float:
    """The factor every timing bound is multiplied by (``GX10_TIME_SCALE``, at least 1)."""
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}={raw!r} is not a number; set it to e.g. 2 (or unset it)") from None
    if value < 1:
        raise ValueError(f"{SCALE_ENV}={raw!r} is below 1; bounds only ever get looser (unset it for 1)")
    return value


def load_note() -> str:
    """The machine's load and the scale in force, for a timing failure message."""
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs, "
            f"{SCALE_ENV}={time_scale():g}")


def scaled(limit: float) -> float:
    """`limit` (seconds, or any duration) times the shared scale factor."""
    return limit * time_scale()


def timing(took: float, limit: float, what: str) -> None:
    """Assert `took` < `limit` × the scale factor, saying what, by how much, and the load."""
    bound = scaled(limit)
    assert took < bound, f"{what}: {took:.4g}, over the bound {bound:.4g} ({load_note()})"
