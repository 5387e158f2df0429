"""Freeing image space without the seed's pitfall: never `docker image prune -a`.

`prune -a` removes every image no *running* container uses, so a stopped cluster loses its
working images. Here every candidate is named and removed with `docker image rm`, one by one, and
only when it is safe: dangling (untagged) images, or, with an age bound, images created before it.
Never removed: any image a container uses (running or stopped), any live image and its bases
(protected by tag, whatever ID the tag resolves to on that node). The engine itself refuses to
remove an image still in use, a second guard against a container started in between.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..config import Node
from ..facts import normalize_id, normalize_image
from ..progress import human
from ..remote import Cluster
from ..shell import q
from .errors import ImagesError
from .select import protected_tags, short

_CREATED = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.\d+)?\s*(Z|[+-]\d\d:?\d\d)?")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 3600}


def parse_age(text: str) -> float:
    """'24h', '7d', '90m', '2w' or a bare number of hours -> seconds."""
    m = _AGE.match(text)
    if not m:
        raise ImagesError(f"cannot read the age {text!r}: use e.g. 24h, 7d, 90m (a bare number is hours)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_created(text: str) -> float | None:
    """Docker's RFC 3339 `Created` or podman's `2026-01-01 00:00:00 +0000 UTC` -> epoch seconds."""
    m = _CREATED.search(text)
    if not m:
        return None
    stamp = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    zone = m.group(3) or "Z"
    offset = timedelta(0) if zone == "Z" else timedelta(
        hours=int(zone[1:3]), minutes=int(zone[-2:])) * (1 if zone[0] == "+" else -1)
    return stamp.replace(tzinfo=timezone(offset)).timestamp()


@dataclass
class Image:
    id: str
    created: float | None
    size: int
    tags: list[str]


@dataclass
class NodeImages:
    now: float
    images: list[Image] = field(default_factory=list)
    used_by: dict[str, list[str]] = field(default_factory=dict)  # image ID -> "container (state)"


def probe_command(docker: str) -> str:
    d = q(docker)
    fmt = "{{.Id}}\t{{.Created}}\t{{.Size}}\t{{join .RepoTags \",\"}}"
    return "\n".join([
        'echo "now\t$(date +%s)"',
        f"ids=$({d} images -q --no-trunc | sort -u)",
        f"[ -z \"$ids\" ] || {d} image inspect --format {q(fmt)} $ids | sed 's/^/image\t/'",
        f"cids=$({d} ps -aq --no-trunc)",
        f"[ -z \"$cids\" ] || {d} container inspect --format '{{{{.Image}}}}\t{{{{.Name}}}}\t{{{{.State.Status}}}}' "
        "$cids | sed 's/^/container\t/'",
        "true",
    ])


def parse_probe(stdout: str) -> NodeImages:
    out = NodeImages(now=0.0)
    for line in stdout.splitlines():
        kind, _, rest = line.partition("\t")
        cols = rest.split("\t")
        if kind == "now" and rest.strip().isdigit():
            out.now = float(rest)
        elif kind == "image" and len(cols) >= 3:
            tags = [normalize_image(t) for t in (cols[3].split(",") if len(cols) > 3 else []) if t and "<none>" not in t]
            out.images.append(Image(normalize_id(cols[0]), parse_created(cols[1]),
                                    int(cols[2]) if cols[2].isdigit() else 0, tags))
        elif kind == "container" and len(cols) >= 3:
            out.used_by.setdefault(normalize_id(cols[0]), []).append(f"{cols[1].lstrip('/')} ({cols[2]})")
    return out


@dataclass
class Decision:
    image: Image
    remove: bool
    why: str

    @property
    def refs(self) -> list[str]:
        """What `docker image rm` is given: each tag (the image goes with its last tag), else the ID."""
        return list(self.image.tags) or [self.image.id]

    def label(self) -> str:
        return ", ".join(self.image.tags) if self.image.tags else f"<none> {short(self.image.id)}"


def decide(node: NodeImages, protected: dict[str, str], older_than: float | None) -> list[Decision]:
    """What to remove and what to keep (and why), image by image. Keep wins over every reason to remove."""
    out = []
    for img in node.images:
        if img.id in node.used_by:
            out.append(Decision(img, False, f"used by container {', '.join(node.used_by[img.id])}"))
            continue
        guarded = [protected[t] for t in img.tags if t in protected]
        if guarded:
            out.append(Decision(img, False, ", ".join(guarded)))
            continue
        if not img.tags:
            out.append(Decision(img, True, "dangling, no container"))
            continue
        if older_than is not None and img.created is not None and img.created < node.now - older_than:
            age_h = (node.now - img.created) / 3600
            out.append(Decision(img, True, f"{age_h:.0f} h old, not live, no container"))
            continue
        out.append(Decision(img, False, "newer than the bound" if older_than is not None else "tagged"))
    return out


def remove_command(docker: str, decisions: Iterable[Decision]) -> str:
    d = q(docker)
    lines = []
    for dec in decisions:
        for ref in dec.refs:
            lines.append(
                f"if out=$({d} image rm {q(ref)} 2>&1); then echo {q(f'@removed {ref}')}; "
                f"else printf '@kept %s %s\\n' {q(ref)} \"$(printf '%s' \"$out\" | tail -n 1)\"; fi"
            )
    return "\n".join(lines)


@dataclass
class PruneReport:
    plans: dict[str, list[Decision]]
    freed: dict[str, int]  # node -> bytes (at most; layers shared with kept images stay)
    refused: dict[str, list[str]]  # node -> "ref: engine's reason"
    unreachable: dict[str, str]


def prune(cluster: Cluster, nodes: Iterable[Node], older_than: float | None) -> PruneReport:
    """List what is safe to remove on each node, show it, then remove it (or only show, dry-run)."""
    nodes = list(nodes)
    s = cluster.settings
    protected = protected_tags(s)
    results = cluster.run_all(probe_command(s.docker), nodes, timeout=120)
    report = PruneReport({}, {}, {}, {n: r.why() for n, r in results.items() if not r.ok})
    for node in nodes:
        r = results[node.name]
        if not r.ok:
            cluster.say(f"{node.name}: UNREACHABLE ({r.why()}); skipped")
            continue
        plan = decide(parse_probe(r.stdout), protected, older_than)
        report.plans[node.name] = plan
        doomed = [d for d in plan if d.remove]
        for dec in plan:
            if not dec.remove and dec.why not in ("tagged", "newer than the bound"):
                cluster.say(f"{node.name}: keep   {dec.label()}: {dec.why}")
        verb = "would remove" if cluster.dry_run else "remove"
        for dec in doomed:
            cluster.say(f"{node.name}: {verb} {dec.label()} ({human(dec.image.size)}): {dec.why}")
        report.freed[node.name] = sum(d.image.size for d in doomed)
        if not doomed:
            cluster.say(f"{node.name}: nothing to remove")
    total = sum(report.freed.values())
    cluster.say(f"prune: {'would free' if cluster.dry_run else 'freeing'} up to {human(total)} on "
                f"{sum(1 for v in report.freed.values() if v)} node(s) (layers shared with kept images stay)")
    jobs = {n: [d for d in plan if d.remove] for n, plan in report.plans.items()}
    runs = cluster.run_all(lambda n: remove_command(s.docker, jobs[n.name]) if jobs.get(n.name) else None,
                           nodes, mutating=True, timeout=1800)
    for name, r in runs.items():
        if r.dry_run:
            continue
        if r.exit_code is None:
            report.unreachable[name] = r.why()
            continue
        for line in r.stdout.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "@removed":
                cluster.say(f"{name}: removed {rest}")
            elif kind == "@kept":
                ref, _, why = rest.partition(" ")
                report.refused.setdefault(name, []).append(f"{ref}: {why}")
                cluster.say(f"{name}: kept {ref}: the engine refused ({why})")
    return report
