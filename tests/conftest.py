"""Shared pytest fixtures. `simcluster`: the simulated 4-node cluster (see tests/simcluster)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `tests.simcluster` must import the same way under `pytest` and `python -m pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.simcluster import SimCluster, missing_requirements  # noqa: E402


@pytest.fixture(scope="session")
def simcluster() -> Iterator[SimCluster]:
    """The simulated cluster, brought up once per session and always torn down.

    Skips where it cannot run (not root, tools missing), except under CI (env `CI` set), where a
    silently skipped end-to-end suite would hide a broken test machine.
    """
    problems = missing_requirements()
    if problems:
        reason = "simulated cluster unavailable: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = SimCluster()
    try:
        yield cluster.up()
    finally:
        cluster.down()
