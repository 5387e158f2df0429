"""What a launch checks before it changes anything, and what `inv doctor --model` shows: the
image on every node with one ID, the weights staged, the head's ports free, no stale container.
Each result is a `Check`; a FAIL refuses the launch with its fix."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from ..checks import FAIL, OK, WARN, Check
from ..config import ModelSpec, Node, Settings
from ..containers import Survey, survey
from ..facts import GIB, NodeFacts
from ..listing import diff_listing, local_listing, model_dir, remote_listings, source_dir
from ..remote import Cluster
from .current import Current, identify
from .errors import LaunchRefused

PORT_FREE_TIMEOUT_S = 30.0


def image_checks(settings: Settings, spec: ModelSpec, facts: dict[str, NodeFacts]) -> list[Check]:
    """The model's image on every reachable node, with one ID."""
    image = settings.image(spec.image)
    ids = {n: f.image_id(image.tag) for n, f in facts.items() if f.reachable}
    head = settings.head.name
    if head in ids and ids[head] is None:
        return [Check(head, "image", FAIL, f"{image.tag} is not on {head}",
                      f"inv rebuild --image {image.name}, then inv distribute --image {image.name}")]
    missing = [n for n, i in ids.items() if i is None]
    if missing:
        return [Check(",".join(missing), "image", FAIL, f"{image.tag} is missing on {', '.join(missing)}",
                      f"inv distribute --image {image.name}")]
    distinct = sorted({i for i in ids.values() if i})
    if len(distinct) > 1:
        shown = ", ".join(f"{n} {i[:12] if i else '-'}" for n, i in ids.items())
        return [Check("all", "image", FAIL, f"{image.tag} differs between nodes: {shown}",
                      f"inv distribute --image {image.name}")]
    iid = distinct[0][:12] if distinct else "?"
    return [Check("all", "image", OK, f"{image.tag} {iid} on {', '.join(ids)}")]


def weights_checks(cluster: Cluster, spec: ModelSpec, nodes: Iterable[Node]) -> list[Check]:
    """The model's files on each node against the control's copy (else the head's)."""
    nodes = list(nodes)
    path = model_dir(cluster.settings.model_root, spec)
    listings = remote_listings(cluster, spec, nodes)
    src = source_dir(cluster, spec)
    head = cluster.head.name
    if src.is_dir():
        source, where = local_listing(src), f"the control's copy ({src})"
    else:
        source, where = (listings.get(head) or remote_listings(cluster, spec, [cluster.head])[head] or {}), head
    fix = f"inv stage --model {spec.name}"
    if not source:
        return [Check(head, "weights", FAIL, f"no copy of {spec.hf_id} on the control ({src}) nor on {head}",
                      f"put the model at {src} on the control, then {fix}")]
    out = []
    for n in nodes:
        bad = diff_listing(source, listings[n.name])
        if listings[n.name] is None:
            out.append(Check(n.name, "weights", FAIL, f"{spec.name} is not staged ({path} does not exist)", fix))
        elif bad:
            out.append(Check(n.name, "weights", FAIL,
                             f"{len(bad)} of {len(source)} files of {spec.name} missing or of another size "
                             f"than {where} (e.g. {bad[0]})", fix))
        else:
            size = sum(source.values()) / GIB
            out.append(Check(n.name, "weights", OK, f"{spec.name}: {len(source)} files, {size:.2f} GiB, as {where}"))
    return out


def listening_ports(cluster: Cluster) -> dict[int, str]:
    """TCP ports listening on the head -> the process holding each (`ss -ltnp`)."""
    r = cluster.run(cluster.head, "ss -Hltnp", timeout=30)
    cluster.check(f"listing listening ports on {cluster.head.name}", {cluster.head.name: r})
    ports: dict[int, str] = {}
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        port = cols[3].rsplit(":", 1)[-1]
        if port.isdigit():
            proc = " ".join(cols[5:])
            m = re.search(r'\(\("([^"]+)",pid=(\d+)', proc)
            ports[int(port)] = f"{m.group(1)} (pid {m.group(2)})" if m else (proc or "a process")
    return ports


def port_checks(cluster: Cluster, ports: dict[int, tuple[str, str | None]], serving: Current) -> list[Check]:
    """`ports` (port -> what it is for, and the model it belongs to, None: any) free on the head.
    Held by the model that serves, it is a warning (a launch stops it first); held otherwise it
    is a failure: something else would collide with the launch (the two master ports are
    distinct so that two models never share one)."""
    held = listening_ports(cluster)
    head = cluster.head.name
    up = any(f.running for f in serving.containers)
    out = []
    for port, (what, model) in ports.items():
        if port not in held:
            out.append(Check(head, what, OK, f"port {port} is free"))
        elif up and (model is None or model == serving.model):
            out.append(Check(head, what, WARN, f"port {port} is held by {held[port]} (the serving model)",
                             "inv launch stops the serving model first; or inv stop"))
        else:
            whose = f" while {serving.model} serves" if up and serving.model else ", with no serving container" \
                if not up else " by something other than the serving model"
            out.append(Check(head, what, FAIL, f"port {port} is held by {held[port]}{whose}",
                             f"stop that process on {head} (inv stop if it is a serving container), "
                             "or change the port in the config"))
    return out


def container_checks(sv: Survey) -> list[Check]:
    out = []
    for node, found in sv.found.items():
        for f in found:
            state = "running" if f.running else "stopped, still holding the name"
            out.append(Check(node, "container", WARN, f"{f.name} ({f.image}, {f.status}): {state}",
                             "inv launch removes it first; inv stop removes it now"))
    if not sv.all:
        out.append(Check("all", "container", OK, "no serving container on any node"))
    return out


def preflight(cluster: Cluster, spec: ModelSpec | None, facts: dict[str, NodeFacts]) -> list[Check]:
    """Everything `inv launch` checks before it starts, for `inv doctor --model`."""
    s = cluster.settings
    reachable = [f.node for f in facts.values() if f.reachable]
    sv = survey(cluster, reachable)
    checks = container_checks(sv)
    if spec is not None:
        checks = image_checks(s, spec, facts) + weights_checks(cluster, spec, reachable) + checks
    ports: dict[int, tuple[str, str | None]] = {s.api_port: ("API port", None)}
    for m in ([spec] if spec else list(s.models.values())):
        ports[m.master_port] = (f"{m.name} master port", m.name)
    if facts[s.head.name].reachable:
        checks += port_checks(cluster, ports, identify(cluster, sv))
    return checks


def wait_ports_free(cluster: Cluster, ports: dict[int, str], timeout_s: float = PORT_FREE_TIMEOUT_S) -> None:
    """After a stop the API server may take a moment to let go of its port."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = {p: w for p, w in listening_ports(cluster).items() if p in ports}
        if not held:
            return
        if time.monotonic() > deadline:
            shown = "; ".join(f"{ports[p]} {p} held by {w}" for p, w in held.items())
            raise LaunchRefused(f"cannot launch: on {cluster.head.name}, {shown}, with no serving container left. "
                                f"Stop that process on {cluster.head.name} (or change the port in the config)")
        time.sleep(0.5)
