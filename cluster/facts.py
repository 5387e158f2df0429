"""What each node holds right now: one read-only probe per node, run in parallel.

`status`, `doctor` and the planning steps of the mutating tasks all read these facts, so the
probe runs once per task instead of once per question.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Node
from .remote import Cluster
from .shell import q, remote_path

GIB = 1024**3


@dataclass
class Container:
    name: str
    image: str
    status: str


@dataclass
class NodeFacts:
    node: Node
    reachable: bool
    error: str = ""
    hostname: str = ""
    docker_ok: bool = False
    docker_error: str = ""
    containers: list[Container] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # repo:tag -> full image ID
    disk_total: int | None = None  # bytes, on the model root's filesystem
    disk_free: int | None = None
    default_target: str = ""
    fabric_ok: bool | None = None  # None: not known (head unreachable)
    fabric_error: str = ""

    def image_id(self, tag: str) -> str | None:
        return self.images.get(tag if ":" in tag else f"{tag}:latest")


def normalize_id(image_id: str) -> str:
    """Docker prints `sha256:<hex>`, podman bare hex: compare the hex."""
    return image_id.strip().removeprefix("sha256:")


def normalize_image(ref: str) -> str:
    """`localhost/vllm-node:latest`, `vllm-node` and `docker.io/library/vllm-node:latest` alike
    (podman names local images `localhost/NAME:TAG`; docker says `NAME:TAG`)."""
    ref = ref.strip().removeprefix("docker.io/").removeprefix("library/").removeprefix("localhost/")
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def probe_command(docker: str, model_root: str) -> str:
    d = q(docker)
    return "\n".join(
        [
            'echo "hostname\t$(hostname)"',
            f"if {d} version >/dev/null 2>/tmp/.gx10-docker-err; then",
            "  echo 'docker\tok'",
            f"  {d} ps --format '{{{{.Names}}}}\t{{{{.Image}}}}\t{{{{.Status}}}}' | sed 's/^/container\t/'",
            f"  {d} images --no-trunc --format '{{{{.Repository}}}}:{{{{.Tag}}}}\t{{{{.ID}}}}' | sed 's/^/image\t/'",
            "else",
            "  echo \"docker\tfail\t$(tail -n1 /tmp/.gx10-docker-err)\"",
            "fi",
            f"p={remote_path(model_root)}",
            'while [ ! -e "$p" ]; do p=$(dirname "$p"); done',
            "df -P -B1 \"$p\" | tail -n1 | awk '{print \"disk\\t\" $2 \"\\t\" $4}'",
            "command -v systemctl >/dev/null && echo \"target\t$(systemctl get-default 2>/dev/null)\"",
            "true",
        ]
    )


def parse_probe(node: Node, stdout: str) -> NodeFacts:
    facts = NodeFacts(node=node, reachable=True)
    for line in stdout.splitlines():
        kind, _, rest = line.partition("\t")
        cols = rest.split("\t")
        if kind == "hostname":
            facts.hostname = rest
        elif kind == "docker":
            facts.docker_ok = cols[0] == "ok"
            facts.docker_error = cols[1] if len(cols) > 1 else ""
        elif kind == "container" and len(cols) >= 3:
            facts.containers.append(Container(cols[0], cols[1], cols[2]))
        elif kind == "image" and len(cols) >= 2 and not cols[0].startswith("<none>"):
            facts.images[cols[0].removeprefix("localhost/")] = normalize_id(cols[1])
        elif kind == "disk" and len(cols) >= 2:
            facts.disk_total, facts.disk_free = int(cols[0]), int(cols[1])
        elif kind == "target":
            facts.default_target = rest.strip()
    return facts


def gather(cluster: Cluster, nodes: tuple[Node, ...] | None = None) -> dict[str, NodeFacts]:
    """Probe every node (management network), then the fabric from the head."""
    s = cluster.settings
    targets = nodes or cluster.nodes
    results = cluster.run_all(probe_command(s.docker, s.model_root), targets, timeout=60)
    facts: dict[str, NodeFacts] = {}
    for node in targets:
        r = results[node.name]
        facts[node.name] = (
            parse_probe(node, r.stdout) if r.ok else NodeFacts(node=node, reachable=False, error=r.why())
        )
    _check_fabric(cluster, facts)
    return facts


def _check_fabric(cluster: Cluster, facts: dict[str, NodeFacts]) -> None:
    """The head is the hub: it must hold its fabric address and reach each worker's over SSH."""
    head = cluster.head
    if head.name not in facts or not facts[head.name].reachable:
        return
    lines = [
        f"ip -o addr show | grep -qw {q(head.fabric)} && echo 'fab\t{head.name}\tok' "
        f"|| echo 'fab\t{head.name}\tno-address'"
    ]
    for w in cluster.workers:
        probe = cluster.fabric_ssh(w, "true")
        lines.append(
            f"if out=$({probe} 2>&1); then echo 'fab\t{w.name}\tok'; "
            f"else echo \"fab\t{w.name}\t$(echo \"$out\" | tail -n1)\"; fi &"
        )
    lines.append("wait")
    r = cluster.run(head, "\n".join(lines), timeout=60)
    for line in r.stdout.splitlines():
        kind, name, status = (line.split("\t", 2) + ["", ""])[:3]
        if kind != "fab" or name not in facts:
            continue
        facts[name].fabric_ok = status == "ok"
        if status != "ok":
            facts[name].fabric_error = (
                f"{head.name} has no address {facts[name].node.fabric}"
                if status == "no-address"
                else f"{head.name} -> {facts[name].node.fabric}: {status}"
            )
