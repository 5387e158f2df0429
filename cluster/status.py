"""`inv status`: one table of what every node is doing, built from the node facts."""

from __future__ import annotations

from tabulate import tabulate

from .facts import GIB, NodeFacts
from .weights import Presence


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.0f} GiB"


def _yes_no(v: bool | None, error: str = "") -> str:
    if v is None:
        return "unknown"
    return "ok" if v else f"FAIL ({error})" if error else "FAIL"


def _weights(present: dict[str, Presence]) -> str:
    if not present:
        return "none"
    state = {True: "complete", False: "INCOMPLETE", None: "no source to compare"}
    return "\n".join(f"{m} {p.bytes / GIB:.1f} GiB, {p.files} files ({state[p.complete]})" for m, p in present.items())


def status_rows(facts: dict[str, NodeFacts], presence: dict[str, dict[str, Presence]]) -> list[list[str]]:
    rows = []
    for f in facts.values():
        if not f.reachable:
            rows.append([f.node.name, f"UNREACHABLE: {f.error}", "-", "-", "-", "-", "-"])
            continue
        containers = ", ".join(f"{c.name} ({c.image}, {c.status})" for c in f.containers) or "none"
        images = "\n".join(f"{tag} {iid[:12]}" for tag, iid in sorted(f.images.items())) or "none"
        if not f.docker_ok:
            containers = images = f"docker: {f.docker_error or 'not working'}"
        disk = f"{_gib(f.disk_free)} free of {_gib(f.disk_total)}"
        rows.append([f.node.name, "ok", _yes_no(f.fabric_ok, f.fabric_error), containers, images, disk,
                     _weights(presence.get(f.node.name, {}))])
    return rows


def render_status(facts: dict[str, NodeFacts], presence: dict[str, dict[str, Presence]]) -> str:
    headers = ["node", "management", "fabric", "containers", "images", "model root disk", "weights"]
    return tabulate(status_rows(facts, presence), headers=headers, tablefmt="simple")
