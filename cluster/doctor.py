"""`inv doctor`: preflight checks, each OK / WARN / FAIL with the fix, from the node facts."""

from __future__ import annotations

from .checks import FAIL, OK, WARN, Check
from .facts import GIB, NodeFacts
from .launcherchecks import launcher_checks
from .remote import Cluster


def node_checks(cluster: Cluster, facts: dict[str, NodeFacts]) -> list[Check]:
    s = cluster.settings
    checks: list[Check] = []
    for f in facts.values():
        n = f.node.name
        if not f.reachable:
            checks.append(Check(n, "ssh", FAIL, f.error, f"bring {n} up, then `ssh {f.node.mgmt} true`"))
            continue
        checks.append(Check(n, "ssh", OK, f"logged in, host key verified ({f.hostname})"))
        checks.append(
            Check(n, "container engine", OK, f"`{s.docker}` answers")
            if f.docker_ok
            else Check(n, "container engine", FAIL, f.docker_error or f"`{s.docker} version` failed",
                       f"install/start the engine on {n} or set cluster.docker")
        )
        if f.fabric_ok is not None:
            checks.append(
                Check(n, "fabric", OK, f"{cluster.head.name} reaches {f.node.fabric}")
                if f.fabric_ok
                else Check(n, "fabric", FAIL, f.fabric_error,
                           f"check {n}'s fabric link and that {cluster.head.name}'s known_hosts and "
                           "key let it `ssh` there non-interactively")
            )
        if f.disk_free is not None:
            need = s.reserve_gib * GIB
            checks.append(
                Check(n, "disk", OK if f.disk_free > need else FAIL,
                      f"{f.disk_free / GIB:.0f} GiB free on the model root's filesystem "
                      f"(reserve {s.reserve_gib:.0f} GiB)",
                      "" if f.disk_free > need else f"free space on {n} (inv clear-weights)")
            )
        if f.default_target:
            headless = f.default_target == "multi-user.target"
            checks.append(
                Check(n, "headless", OK if headless else WARN, f"default target {f.default_target}",
                      "" if headless else
                      "sudo systemctl set-default multi-user.target (a desktop costs 2-3 GiB of unified memory)")
            )
    return checks


def head_checks(cluster: Cluster) -> list[Check]:
    """The launcher on the head, as its own scripts need it (cluster/launcherchecks.py)."""
    return launcher_checks(cluster)
