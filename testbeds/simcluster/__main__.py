"""Manual use: `python -m testbeds.simcluster up|down|status [-i N] [--nodes 2..8]` (as root, from the repo root).

`up` leaves the cluster running after this process exits and marks it `manual` so that test runs
auto-picking an instance leave it alone; `down -i N` removes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..cli import run_reporting
from .cluster import MANUAL_OWNER, SimCluster, missing_requirements
from .layout import Layout, SimClusterError, read_owner, running_instances


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbeds.simcluster",
                                     description="Simulated cluster (2 to 8 nodes) for gx10-ops tests.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("-i", "--instance", type=int,
                        default=int(os.environ.get("SIMCLUSTER_INSTANCE", 0)) or None,
                        help="default: $SIMCLUSTER_INSTANCE; `up` picks a free one")
    parser.add_argument("--nodes", type=int, default=4, help="how many nodes `up` makes (2 to 8; default 4)")
    args = parser.parse_args(argv)
    if args.action == "status" and args.instance is None:
        for n in running_instances():
            print(f"instance {n}: owner {read_owner(Layout(n))}, state {Layout(n).state_dir}")
        return 0
    if args.action == "down" and args.instance is None:
        parser.error("down needs -i N or SIMCLUSTER_INSTANCE (see `status`)")
    if args.action == "up" and (problems := missing_requirements()):
        parser.error("; ".join(problems))
    return run_reporting("simcluster", SimClusterError, lambda: _act(args.action, args.instance, args.nodes))


def _act(action: str, instance: int | None, nodes: int) -> None:
    cluster = SimCluster(instance, nodes=nodes)
    if action == "up":
        start = time.monotonic()
        cluster.up(owner=MANUAL_OWNER)
        print(cluster.status())
        print(f"up in {time.monotonic() - start:.1f} s; try: ssh -F {cluster.ssh_config} head")
        print(f"tear down with: python -m testbeds.simcluster down -i {cluster.instance}")
    elif action == "down":
        cluster.down()
        print(f"instance {cluster.instance} down")
    else:
        print(cluster.status())


if __name__ == "__main__":
    sys.exit(main())
