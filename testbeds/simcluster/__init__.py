"""Simulated GB10 cluster (2 to 8 nodes, default 4) for end-to-end tests: real sshd and podman
(`docker`) per node; `SimCluster(nodes=2)` for a pair.

In tests, use the session fixture `simcluster` (tests/conftest.py)::

    def test_probe(simcluster):
        simcluster.build_test_image("head", "vllm-node:good")
        simcluster.distribute_test_image("vllm-node:good")       # same image ID on w1..w3
        out = simcluster.ssh("w1", "docker run --rm vllm-node:good python3 -c "
                             "'import torch; print(torch.__version__, torch.version.cuda)'")
        assert out.stdout == "2.11.0+cu130 13.0\\n"

Fabric: `Config(runtime_ssh_path=str(simcluster.ssh_config), overrides={"run":
{"in_stream": False}})`; Fabric ignores `UserKnownHostsFile`, so load `simcluster.known_hosts`
into `conn.client` and set `paramiko.RejectPolicy()` when host keys must be verified.
By hand (root, repo root): `python -m testbeds.simcluster up|down|status [-i N] [--nodes N]`.
"""

from .cluster import NodeAddr, SimCluster, missing_requirements
from .layout import SimClusterError

__all__ = ["NodeAddr", "SimCluster", "SimClusterError", "missing_requirements"]
