"""Model weights: stage control -> head -> workers, check disk first, verify, clear.

Hop 1 goes over the control's single 1 GbE uplink to the head only; hop 2 fans out from the head
to the workers over the 200 GbE fabric in parallel (the seed's pattern). Both are rsync with
--partial, so a rerun resumes and copies nothing when nothing changed. Space is checked before a
byte moves, and afterwards every node's file list and sizes (and checksums of the small files)
are compared with the source.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import weightsmanifest
from .config import ModelSpec, Node
from .errors import ClusterError
from .facts import GIB
from .hops import REPAIR, Overlap, hop1_argv, hop2_command
from .listing import (
    Listing,
    bytes_to_copy,
    dangling_links,
    diff_listing,
    listing_command,
    local_listing,
    local_stamps,
    model_dir,
    parse_listing,
    reachable_listings,
    remote_listings,
    source_dir,
)
from .remote import Cluster, RemoteError
from .shell import q

HOPS = ("control-head", "head-workers", "all")
CHECKSUM_MAX_BYTES = 16 * 1024**2  # index, config and tokenizer files; not the shards


class WeightsError(ClusterError):
    """Staging cannot go on; the message says which node, what is missing and the fix."""


@dataclass
class DiskReport:
    node: str
    free: int
    need: int
    occupants: dict[str, int] = field(default_factory=dict)  # other model -> bytes on disk


def disk_reports(cluster: Cluster, spec: ModelSpec, needs: dict[str, int]) -> dict[str, DiskReport]:
    """Free space on each target's model root, and what other models' weights hold there."""
    s = cluster.settings
    others = [m for m in s.models.values() if m.name != spec.name]

    def command(node: Node) -> str | None:
        if node.name not in needs:
            return None
        lines = [
            f"p={q(model_dir(s.model_root, spec))}",
            'while [ ! -e "$p" ]; do p=$(dirname "$p"); done',
            "echo \"free $(df -P -B1 \"$p\" | tail -n1 | awk '{print $4}')\"",
        ]
        for m in others:
            d = q(model_dir(s.model_root, m))
            lines.append(f"[ -d {d} ] && echo \"model {m.name} $(du -sb {d} | cut -f1)\"")
        return "\n".join([*lines, "true"])

    results = cluster.check("checking free disk", cluster.run_all(command, cluster.nodes, timeout=300))
    reports = {}
    for name, r in results.items():
        rep = DiskReport(node=name, free=0, need=needs[name])
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["free"] and len(parts) == 2:
                rep.free = int(parts[1])
            elif parts[:1] == ["model"] and len(parts) == 3:
                rep.occupants[parts[1]] = int(parts[2])
        reports[name] = rep
    return reports


def check_room(cluster: Cluster, spec: ModelSpec, reports: dict[str, DiskReport]) -> None:
    """Stop before copying when a node cannot take the rest of the model plus the reserve."""
    reserve = int(cluster.settings.reserve_gib * GIB)
    short = {n: r for n, r in reports.items() if r.need > 0 and r.free - r.need < reserve}
    if not short:
        return
    lines = [f"not enough disk for {spec.name} ({spec.hf_id}); nothing was copied:"]
    for name, r in short.items():
        missing = r.need + reserve - r.free
        lines.append(
            f"  {name}: {r.need / GIB:.2f} GiB still to copy + {reserve / GIB:.2f} GiB reserve, "
            f"{r.free / GIB:.2f} GiB free: {missing / GIB:.2f} GiB missing"
        )
        for other, size in sorted(r.occupants.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"    {other} weights hold {size / GIB:.2f} GiB there: "
                f"inv clear-weights --model {other} --node {name}"
            )
    raise WeightsError("\n".join(lines))


# -- verification ---------------------------------------------------------------------------
def checksum_command(path: str, files: list[str]) -> str:
    if not files:
        return "true"
    return f"cd {q(path)} && sha256sum -- " + " ".join(q(f) for f in files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(cluster: Cluster, spec: ModelSpec, source: Listing, sums: dict[str, str],
           nodes: Iterable[Node], manifests: dict[str, dict[str, object]] | None = None) -> dict[str, list[str]]:
    """Per node, the files that do not match the source (size, or checksum of the small ones).
    `manifests`, when given, gets each node's copy as checked: digest, files, bytes
    (cluster/weightsmanifest.py)."""
    nodes = list(nodes)
    path = model_dir(cluster.settings.model_root, spec)
    listings = remote_listings(cluster, spec, nodes)
    bad = {name: diff_listing(source, lst) for name, lst in listings.items()}
    results = cluster.check(
        "checksumming small files",
        cluster.run_all(lambda n: checksum_command(path, [f for f in sums if f not in bad[n.name]]), nodes,
                        timeout=600),
    )
    for name, r in results.items():
        found: dict[str, str] = {}
        for line in r.stdout.splitlines():
            digest, _, rel = line.partition("  ")
            found[rel] = digest
            if rel in sums and sums[rel] != digest:
                bad[name].append(rel)
        if manifests is not None:
            lst = listings[name] or {}  # None: the model's folder is absent there
            manifests[name] = {"digest": weightsmanifest.digest(lst, {k: v for k, v in found.items() if k in sums}),
                               "files": len(lst), "bytes": sum(lst.values())}
    return {name: sorted(set(files)) for name, files in bad.items() if files}


def hop_targets(cluster: Cluster, hop: str) -> list[Node]:
    return {"control-head": [cluster.head], "head-workers": list(cluster.workers), "all": list(cluster.nodes)}[hop]


@dataclass
class StagePlan:
    source: Listing
    sums: dict[str, str]
    needs: dict[str, int]
    source_node: str  # "control" or the head's name
    down: dict[str, str] = field(default_factory=dict)  # target that could not be listed -> why
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)  # control copy: size, mtime


def plan(cluster: Cluster, spec: ModelSpec, hop: str) -> StagePlan:
    """Source listing and checksums, and what each target still needs, before anything moves."""
    if hop not in HOPS:
        raise WeightsError(f"unknown hop {hop!r}: use one of {', '.join(HOPS)}")
    head = cluster.head
    stamps: dict[str, tuple[int, int]] = {}
    if hop in ("control-head", "all"):
        src = source_dir(cluster, spec)
        if not src.is_dir():
            raise WeightsError(
                f"no copy of {spec.hf_id} on the control node at {src}: download it there first "
                "(or set control.workspace), or stage from the head with --hop head-workers"
            )
        broken = dangling_links(src)
        if broken:
            shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
            raise WeightsError(f"the control's copy of {spec.hf_id} at {src} has {len(broken)} dangling "
                               f"symlink(s): {shown}; the download is incomplete: download it again")
        stamps = local_stamps(src)
        source = {rel: size for rel, (size, _) in stamps.items()}
        sums = {rel: _sha256(src / rel) for rel, size in source.items() if size <= CHECKSUM_MAX_BYTES}
        source_node = "control"
    else:
        listing = remote_listings(cluster, spec, [head])[head.name]
        if not listing:
            raise WeightsError(
                f"{head.name} holds no copy of {spec.hf_id} under {cluster.settings.model_root}: "
                f"run `inv stage --model {spec.name} --hop control-head` first"
            )
        source = listing
        path = model_dir(cluster.settings.model_root, spec)
        small = [rel for rel, size in source.items() if size <= CHECKSUM_MAX_BYTES]
        r = cluster.check("checksumming on the head", {head.name: cluster.run(head, checksum_command(path, small))})
        sums = {}
        for line in r[head.name].stdout.splitlines():
            digest, _, rel = line.partition("  ")
            sums[rel] = digest
        source_node = head.name
    if not source:
        raise WeightsError(f"the source copy of {spec.hf_id} ({source_node}) holds no files")
    listings, down = reachable_listings(cluster, spec, hop_targets(cluster, hop))
    if head.name in down and hop != "head-workers":
        raise WeightsError(f"{head.name} cannot be reached ({down[head.name]}): every copy goes through it; "
                           "nothing was copied")
    needs = {name: bytes_to_copy(source, lst) for name, lst in listings.items()}
    return StagePlan(source, sums, needs, source_node, down, stamps)


def stage(cluster: Cluster, spec: ModelSpec, hop: str = "all", overlap: bool = True) -> dict[str, list[str]]:
    """Copy, verify, and repair once what verification finds; return what still differs (empty).
    A worker that is down or fails is named at the end, after the others finished and verified."""
    p = plan(cluster, spec, hop)
    total = sum(p.source.values())
    cluster.say(f"{spec.name}: {len(p.source)} files, {total / GIB:.2f} GiB at the source ({p.source_node})")
    if p.down:
        cluster.say("not reachable, staging the others: " + "; ".join(f"{n}: {w}" for n, w in p.down.items()))
    check_room(cluster, spec, disk_reports(cluster, spec, p.needs))
    head = cluster.head
    do1 = hop in ("control-head", "all") and p.needs.get(head.name, 0) > 0
    if hop in ("control-head", "all") and not do1:
        cluster.say(f"hop 1: {head.name} is up to date")
    workers = [w for w in cluster.workers if p.needs.get(w.name, 0) > 0] if hop != "control-head" else []
    if hop != "control-head":
        if workers:
            how = "as each file lands on the head" if overlap and do1 else "after hop 1"
            cluster.say(f"hop 2: {head.name} -> {', '.join(w.name for w in workers)} over the fabric, {how}")
        elif not p.down or set(p.down) != {w.name for w in cluster.workers}:
            cluster.say("hop 2: every worker is up to date")
    if do1:
        cluster.say(f"hop 1: control -> {head.name} over management, {p.needs[head.name] / GIB:.2f} GiB to copy")
    r1, r2 = Overlap(cluster, spec, p.stamps, p.needs, workers, forward=overlap).run(do1)
    if r1 is not None:
        cluster.check(f"rsync control -> {head.name}", {head.name: r1})
    failed = {n: r.why() for n, r in r2.items() if not r.ok}
    failed.update(p.down)
    if cluster.dry_run:
        return {}
    targets = [n for n in hop_targets(cluster, hop) if n.name not in failed]
    bad = verify(cluster, spec, p.source, p.sums, targets)
    if bad:
        cluster.say("verify found differences; copying those files again: "
                    + "; ".join(f"{n}: {len(f)} file(s)" for n, f in bad.items()))
        _repair(cluster, spec, bad)
        bad = verify(cluster, spec, p.source, p.sums, targets)
    if bad:
        raise WeightsError(describe_bad(spec, bad))
    ok = ", ".join(n.name for n in targets)
    if failed:
        lines = [f"{spec.name}: staging failed on {', '.join(sorted(failed))}; "
                 f"finished and verified on {ok or 'no node'}:"]
        lines += [f"  {n}: {why}" for n, why in sorted(failed.items())]
        lines.append(f"bring {'it' if len(failed) == 1 else 'them'} back and run `inv stage --model {spec.name}` "
                     "again: it copies only what is missing")
        raise WeightsError("\n".join(lines))
    cluster.say(f"{spec.name}: verified on {ok} ({len(p.source)} files, {len(p.sums)} checksummed)")
    return bad


def _repair(cluster: Cluster, spec: ModelSpec, bad: dict[str, list[str]]) -> None:
    head = cluster.head
    if head.name in bad:
        with tempfile.NamedTemporaryFile("w", suffix=".files") as listing:
            listing.write("\n".join(bad[head.name]) + "\n")
            listing.flush()
            r = cluster.run_local(hop1_argv(cluster, spec, REPAIR, listing.name), label=f"control->{head.name}",
                                  mutating=True)
        cluster.check(f"re-copying to {head.name}", {head.name: r})
    workers = [w for w in cluster.workers if w.name in bad]
    path = model_dir(cluster.settings.model_root, spec)
    with ThreadPoolExecutor(max_workers=max(len(workers), 1)) as pool:  # all run on the head
        futures = {w.name: pool.submit(cluster.run, head, hop2_command(cluster, w, path, bad[w.name], REPAIR),
                                       mutating=True) for w in workers}
        results = {name: f.result() for name, f in futures.items()}
    cluster.check(f"re-copying from {head.name} over the fabric", results)


def describe_bad(spec: ModelSpec, bad: dict[str, list[str]]) -> str:
    lines = [f"{spec.name} weights differ from the source on {', '.join(bad)}:"]
    for name, files in bad.items():
        shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        lines.append(f"  {name}: {shown}")
    lines.append(f"run `inv stage --model {spec.name}` again; if it persists, check that node's disk")
    return "\n".join(lines)


def verify_only(cluster: Cluster, spec: ModelSpec) -> dict[str, list[str]]:
    """Compare every node with the control's copy (or the head's when the control has none);
    record each node's manifest digest on the head (cluster/weightsmanifest.py)."""
    hop = "all" if source_dir(cluster, spec).is_dir() else "head-workers"
    p = plan(cluster, spec, hop)
    nodes = list(cluster.nodes) if hop == "all" else list(cluster.workers)
    manifests: dict[str, dict[str, object]] = {}
    bad = verify(cluster, spec, p.source, p.sums, nodes, manifests)
    for name in manifests:
        manifests[name]["matches_source"] = name not in bad
    weightsmanifest.record(cluster, spec, manifests)
    return bad


# -- what is where, and clearing ------------------------------------------------------------
@dataclass
class Presence:
    files: int
    bytes: int
    complete: bool | None  # None: no source listing to compare with


def presence(cluster: Cluster, nodes: Iterable[Node]) -> dict[str, dict[str, Presence]]:
    """Per node, per configured model present there: size and whether it matches the source."""
    nodes = list(nodes)
    s = cluster.settings
    sources = {m.name: local_listing(source_dir(cluster, m)) for m in s.models.values()
               if source_dir(cluster, m).is_dir()}
    out: dict[str, dict[str, Presence]] = {n.name: {} for n in nodes}
    for spec in s.models.values():
        path = model_dir(s.model_root, spec)
        results = cluster.run_all(listing_command(path), nodes, timeout=300)
        for name, r in results.items():
            lst = parse_listing(r.stdout) if r.ok else None
            if not lst:
                continue
            src = sources.get(spec.name)
            out[name][spec.name] = Presence(
                files=len(lst), bytes=sum(lst.values()),
                complete=None if src is None else not diff_listing(src, lst),
            )
    return out


def clear(cluster: Cluster, spec: ModelSpec, nodes: Iterable[Node], *, served: str | None,
          force: bool = False) -> dict[str, int]:
    """Delete a model's weights on `nodes`; refuse the served model unless forced.
    Returns the bytes freed (or that would be freed, in dry-run) per node."""
    nodes = list(nodes)
    if served == spec.name and not force:
        raise WeightsError(
            f"{spec.name} is being served right now: stop it first (inv stop) or pass --force"
        )
    path = model_dir(cluster.settings.model_root, spec)
    sizes = cluster.check(
        "measuring weights",
        cluster.run_all(f"[ -d {q(path)} ] && du -sb {q(path)} | cut -f1 || echo 0", nodes, timeout=300),
    )
    freed = {name: int((r.stdout.split() or ["0"])[0]) for name, r in sizes.items()}
    for name, size in freed.items():
        cluster.say(f"{name}: {path} ({size / GIB:.2f} GiB)" + (" would be removed" if cluster.dry_run else ""))
    present = [n for n in nodes if freed[n.name] > 0]
    if present:
        results = cluster.run_all(f"rm -rf -- {q(path)}", present, mutating=True, timeout=1800)
        try:
            cluster.check(f"removing {spec.name} weights", results)
        except RemoteError as e:
            raise WeightsError(str(e)) from e
    return freed
