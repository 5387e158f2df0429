"""Fixtures shared by tests/cluster and tests/e2e: `simcluster`, the simulated cluster
(testbeds/simcluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbeds.checks import skip_or_fail
from testbeds.simcluster import SimCluster, missing_requirements


@pytest.fixture(scope="session")
def simcluster() -> Iterator[SimCluster]:
    """The simulated cluster, brought up once per session and always torn down.

    Skips where it cannot run (not root, tools missing), except under CI (env `CI` set), where a
    silently skipped end-to-end suite would hide a broken test machine.
    """
    problems = missing_requirements()
    if problems:
        skip_or_fail("simulated cluster unavailable: " + "; ".join(problems))
    cluster = SimCluster()
    try:
        yield cluster.up()
    finally:
        cluster.down()
