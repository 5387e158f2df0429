"""Simulated 4-node GB10 cluster for end-to-end tests: real sshd and podman per node.

See `SimCluster`; `python -m tests.simcluster up|down|status` for manual use.
"""

from .cluster import NodeAddr, SimCluster, missing_requirements
from .layout import SimClusterError

__all__ = ["NodeAddr", "SimCluster", "SimClusterError", "missing_requirements"]
