"""Unified-memory preflight for `inv launch` and `inv doctor --model`: on GB10 the GPU allocates
from the same LPDDR5X as the page cache, and the page cache is full of the weights just staged,
so MemFree looks small and vLLM refuses to start. Per node: what could be had (MemAvailable, or
MemFree plus the reclaimable page cache, Cached less Shmem, whichever is larger) against the
configured per-node budget (`memory.node_budget_gib`: one number, or {node: GiB}).

`drop_page_cache` does what the upstream launcher's docs recommend before a launch on unified
memory: `sync`, then `echo 3 > /proc/sys/vm/drop_caches` on every node (`memory.drop_page_cache`,
or `inv launch --drop-page-cache`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .checks import FAIL, OK, Check
from .config import ConfigError, Node, Settings
from .remote import Cluster, RemoteError
from .shell import q

KIB_PER_GIB = 1024 * 1024
DROP_CACHES = "/proc/sys/vm/drop_caches"


def parse_meminfo(text: str) -> dict[str, int]:
    """`Key: N kB` lines -> {key: KiB}; lines that do not fit are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def obtainable_kib(info: Mapping[str, int]) -> int:
    """What a new allocation could get: MemAvailable, or MemFree + (Cached - Shmem)."""
    cache = max(0, info.get("Cached", 0) - info.get("Shmem", 0))
    return max(info.get("MemAvailable", 0), info.get("MemFree", 0) + cache)


def budget_gib(settings: Settings, node: str) -> float | None:
    raw = settings.memory.get("node_budget_gib")
    value = raw.get(node) if isinstance(raw, Mapping) else raw
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"memory.node_budget_gib = {raw!r}: a number of GiB, or a map node -> GiB")
    return float(value)


def meminfo_path(settings: Settings) -> str:
    return str(settings.telemetry.get("meminfo_path", "/proc/meminfo"))


def memory_checks(cluster: Cluster, nodes: Iterable[Node] | None = None) -> list[Check]:
    """One Check per node: FAIL (naming the node, its figures and the fix) when it lacks room."""
    s = cluster.settings
    targets = list(nodes if nodes is not None else cluster.nodes)
    results = cluster.run_all(f"cat {q(meminfo_path(s))}", targets, timeout=30)
    found = []
    for n in targets:
        need = budget_gib(s, n.name)
        r = results[n.name]
        if need is None:
            continue
        if not r.ok:
            found.append(Check(n.name, "memory", FAIL, f"cannot read {meminfo_path(s)}: {r.why()}",
                               f"check SSH to {n.name}"))
            continue
        info = parse_meminfo(r.stdout)
        have = obtainable_kib(info) / KIB_PER_GIB
        cache = max(0, info.get("Cached", 0) - info.get("Shmem", 0)) / KIB_PER_GIB
        detail = (f"{have:.1f} GiB obtainable (MemAvailable {info.get('MemAvailable', 0) / KIB_PER_GIB:.1f}, "
                  f"MemFree {info.get('MemFree', 0) / KIB_PER_GIB:.1f} + page cache {cache:.1f} reclaimable); "
                  f"budget {need:g} GiB")
        if have < need:
            found.append(Check(n.name, "memory", FAIL, f"{n.name} lacks memory: {detail}",
                               f"free memory on {n.name} (what else runs there?), or lower "
                               f"memory.node_budget_gib"))
        else:
            found.append(Check(n.name, "memory", OK, detail))
    return found


def drop_page_cache(cluster: Cluster, nodes: Iterable[Node] | None = None) -> None:
    """`sync; echo 3 > drop_caches` on every node (in parallel); RemoteError naming the nodes that refused."""
    target = str(cluster.settings.memory.get("drop_caches_path", DROP_CACHES))
    results = cluster.run_all(f"sync && echo 3 > {q(target)}", nodes, mutating=True, timeout=120)
    bad = {n: r for n, r in results.items() if not r.ok}
    if bad:
        raise RemoteError("dropping the page cache", bad)
    if not cluster.dry_run:
        cluster.say(f"dropped the page cache on {', '.join(results)}")


def should_drop(settings: Settings, flag: bool) -> bool:
    return flag or bool(settings.memory.get("drop_page_cache", False))

