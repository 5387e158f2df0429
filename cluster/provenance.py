"""The cluster half of a run's provenance card, read over SSH and handed to bench as plain data.

bench/provenance.py keeps what it is given under `nodes`, `launcher`, `recipe`, `command_line`,
`mods` and `weights` (a field left None is listed under `unknown`). Everything here is read, never
rendered: the image each node's serving container really runs (its ID from `docker inspect`),
the versions `inv verify` recorded on the head for that ID, and the command line from the head's
container itself (its PID 1 and any `vllm serve` process inside it).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from . import weightsmanifest
from .config import ModelSpec, Node
from .facts import normalize_id
from .images.verify import read_record
from .launch.generation import LauncherUnreadable, detect
from .remote import Cluster
from .shell import q, remote_path


def node_command(docker: str, container: str) -> str:
    """One read-only probe per node: kernel, OS, memory, GPU driver and clocks, container image."""
    d, c = q(docker), q(container)
    return "\n".join([
        'echo "kernel\t$(uname -r)"',
        "[ -r /etc/os-release ] && echo \"os\t$(. /etc/os-release && echo \"$PRETTY_NAME\")\"",
        "awk '/^MemAvailable:/ {print \"mem\\t\" $2}' /proc/meminfo",
        "if command -v nvidia-smi >/dev/null; then",
        "  echo \"gpu\t$(nvidia-smi --query-gpu=driver_version,clocks.sm,clocks.max.sm "
        "--format=csv,noheader,nounits 2>/dev/null | head -n1)\"",
        "fi",
        f"{d} inspect --format '{{{{.Config.Image}}}}\t{{{{.Image}}}}' {c} 2>/dev/null | sed 's/^/image\t/'",
        "true",
    ])


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def parse_node(node: Node, stdout: str) -> dict[str, Any]:
    out: dict[str, Any] = {"host": node.name, "image_tag": None, "image_id": None, "kernel": None,
                           "os": None, "mem_available_kib": None}
    for line in stdout.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "kernel":
            out["kernel"] = rest.strip() or None
        elif kind == "os":
            out["os"] = rest.strip() or None
        elif kind == "mem" and rest.strip().isdigit():
            out["mem_available_kib"] = int(rest)
        elif kind == "gpu" and rest.strip():
            cols = [x.strip() for x in rest.split(",")]
            if cols[0] and not cols[0].startswith("["):
                out["driver"] = cols[0]
            clocks = {k: _num(v) for k, v in zip(("sm_clock_mhz", "max_sm_clock_mhz"), cols[1:3], strict=False)}
            out.update({k: v for k, v in clocks.items() if v is not None})
        elif kind == "image":
            tag, _, image_id = rest.partition("\t")
            out["image_tag"] = tag.strip().removeprefix("localhost/") or None
            out["image_id"] = normalize_id(image_id) or None
    return out


def verified_versions(record: dict[str, Any] | None, node: str) -> dict[str, Any]:
    """What `inv verify` found in this image ID (this node's verdict, else any node's), as the
    card's `versions`, `verified_at` and `verified_ok`; all None when it was never verified."""
    if not record:
        return {"versions": None, "verified_at": None, "verified_ok": None}
    nodes = record.get("nodes") if isinstance(record.get("nodes"), dict) else {}
    entry = (nodes.get(node) or next(iter(nodes.values()), None)) if nodes else None
    checks = entry.get("checks", []) if isinstance(entry, dict) else []
    return {"versions": {str(c.get("what")): c.get("got") for c in checks if isinstance(c, dict)},
            "verified_at": record.get("verified_at"), "verified_ok": record.get("ok")}


def launcher_facts(cluster: Cluster) -> dict[str, Any]:
    """The launcher checkout on the head: commit and date when it is a git checkout, and the
    generation its own scripts say it is (what `--use-wheels` and the default backend meant)."""
    repo = remote_path(cluster.settings.launcher_repo)
    r = cluster.run(cluster.head, f"git -C {repo} log -1 --format='%H%x09%cI' 2>/dev/null; "
                    f"git -C {repo} status --porcelain 2>/dev/null | head -n1", timeout=30)
    lines = r.stdout.splitlines() if r.ok else []
    commit, _, date = (lines[0] if lines else "").partition("\t")
    try:
        info = detect(cluster)
        generation: dict[str, Any] = {"generation": info.generation, "ray_default": info.ray_default,
                                      "use_wheels": info.use_wheels}
    except LauncherUnreadable as e:
        generation = {"generation": None, "generation_error": str(e)}
    return {**generation, "path": cluster.settings.launcher_repo, "git": bool(commit), "commit": commit or None,
            "date": date or None, "dirty": bool(lines[1:]) if commit else None}


def recipe_facts(cluster: Cluster, spec: ModelSpec) -> dict[str, Any] | None:
    """The recipe (or relaunch script) the model starts from, with its content's sha256."""
    rel = spec.recipe or spec.relaunch
    if not rel:
        return None
    repo = cluster.settings.launcher_repo
    path = rel if rel.startswith(("/", "~")) else f"{repo.rstrip('/')}/{rel}"
    r = cluster.run(cluster.head, f"sha256sum {remote_path(path)}", timeout=30)
    digest = r.stdout.split()[0] if r.ok and r.stdout.strip() else None
    return {"path": rel, "kind": "recipe" if spec.recipe else "relaunch", "sha256": digest,
            "error": None if digest else f"cannot read {path} on {cluster.head.name}: {r.why()}"}


SERVE_SCAN = ("for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\" 2>/dev/null; echo; done "
              "| grep -E 'vllm serve|vllm.entrypoints' | grep -v grep | head -n1")


def container_command(cluster: Cluster) -> dict[str, Any] | None:
    """What the head's serving container runs, read from the container: its PID 1 as docker
    inspect says (Path + Args, the entrypoint and cmd) and the `vllm serve` line inside it."""
    s = cluster.settings
    d, c = q(s.docker), q(s.container_name)
    fmt = "{{json .Path}}\t{{json .Args}}\t{{json .Config.Entrypoint}}\t{{json .Config.Cmd}}"
    r = cluster.run(cluster.head, f"{d} inspect --format {q(fmt)} {c}", timeout=30)
    if not r.ok or not r.stdout.strip():
        return None
    try:
        path, args, entrypoint, cmd = (json.loads(x) for x in r.stdout.strip().split("\t"))
    except ValueError:
        return None
    serve = cluster.run(cluster.head, f"{d} exec {c} sh -c {q(SERVE_SCAN)}", timeout=30)
    return {"container": s.container_name, "pid1": [path, *(args or [])], "entrypoint": entrypoint,
            "cmd": cmd, "serve": serve.stdout.strip() or None if serve.ok else None}


def weights_facts(cluster: Cluster, spec: ModelSpec) -> dict[str, Any]:
    """The model and the staged copy as the last `inv verify-weights` recorded it on the head:
    the head's manifest digest, every node's, and whether they differ (cluster/weightsmanifest.py);
    digest None when verify-weights never ran for this model."""
    rec = weightsmanifest.read(cluster, spec)
    nodes: dict[str, Any] = rec["nodes"] if rec and isinstance(rec.get("nodes"), dict) else {}
    digests = {n: v.get("digest") for n, v in nodes.items() if isinstance(v, dict)}
    head = digests.get(cluster.head.name) or next(iter(digests.values()), None)
    return {"hf_id": spec.hf_id, "served_name": spec.served_name, "digest": head,
            "revision": rec.get("revision") if rec else None, "node_digests": digests or None,
            "digests_differ": len(set(digests.values())) > 1 if digests else None,
            "verified_at": rec.get("verified_at") if rec else None}


def gather(cluster: Cluster, spec: ModelSpec) -> dict[str, Any]:
    """The card's cluster facts in bench/provenance.py's shape (`SweepConfig.cluster_facts`)."""
    s = cluster.settings
    results = cluster.run_all(node_command(s.docker, s.container_name), timeout=60)
    nodes = []
    records: dict[str, dict[str, Any] | None] = {}
    for node in cluster.nodes:
        r = results[node.name]
        facts: dict[str, Any] = parse_node(node, r.stdout) if r.ok else {
            "host": node.name, "error": r.why(), "image": None, "image_id": None}
        image_id = facts.get("image_id")
        if image_id and image_id not in records:
            records[image_id] = read_record(cluster, image_id)
        facts.update(verified_versions(records.get(image_id) if image_id else None, node.name))
        nodes.append(facts)
    container = container_command(cluster)
    line = None if container is None else container["serve"] or shlex.join(container["pid1"])
    return {"nodes": nodes, "launcher": launcher_facts(cluster), "recipe": recipe_facts(cluster, spec),
            "command_line": line, "container_command": container, "mods": list(spec.mods),
            "weights": weights_facts(cluster, spec), "model": spec.name}


def gather_for(settings: Any, name: str) -> dict[str, Any]:
    """`gather` over a connection of its own, for a caller that holds none (bench.ipynb under
    `inv report`: called before the first point and again after the last)."""
    with Cluster(settings) as cl:
        return gather(cl, settings.model(name))
