"""What a model's copy holds, on the control or on a node (relative path -> size), and how two
copies differ. Staging, verification and the launch preflight all compare these listings."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .config import ModelSpec, Node
from .remote import Cluster
from .shell import q

Listing = dict[str, int]  # relative path -> size in bytes


def model_dir(root: str, spec: ModelSpec) -> str:
    return f"{root.rstrip('/')}/{spec.hf_id}"


def source_dir(cluster: Cluster, spec: ModelSpec) -> Path:
    return cluster.settings.workspace / spec.hf_id


def _is_rsync_temp(name: str) -> bool:
    """rsync writes `.name.XXXXXX` while copying; such a leftover is not part of the model."""
    base = os.path.basename(name)
    return base.startswith(".") and len(base.rsplit(".", 1)[-1]) == 6 and base.count(".") >= 2


def local_listing(root: Path) -> Listing:
    """Symlinks are followed (a Hugging Face cache is links into blobs/); a dangling one is left
    out, so it counts as missing, as on the nodes (`find -L -type f` skips it too)."""
    return {rel: st.st_size for rel, st in _walk(root).items()}


def local_stamps(root: Path) -> dict[str, tuple[int, int]]:
    """Size and whole-second mtime per file: what marks a file complete on the head."""
    return {rel: (st.st_size, int(st.st_mtime)) for rel, st in _walk(root).items()}


def dangling_links(root: Path) -> list[str]:
    return sorted(rel for rel, p in _files(root) if p.is_symlink() and not p.exists())


def _files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if not _is_rsync_temp(rel):
                out.append((rel, p))
    return out


def _walk(root: Path) -> dict[str, os.stat_result]:
    return {rel: p.stat() for rel, p in _files(root) if p.exists()}


def listing_command(path: str) -> str:
    return f"cd {q(path)} 2>/dev/null || {{ echo NODIR; exit 0; }}; find -L . -type f -printf '%P\\t%s\\n'"


def parse_listing(stdout: str) -> Listing | None:
    if stdout.strip() == "NODIR":
        return None
    out: Listing = {}
    for line in stdout.splitlines():
        rel, _, size = line.rpartition("\t")
        if rel and not _is_rsync_temp(rel):
            out[rel] = int(size)
    return out


def remote_listings(cluster: Cluster, spec: ModelSpec, nodes: Iterable[Node]) -> dict[str, Listing | None]:
    path = model_dir(cluster.settings.model_root, spec)
    results = cluster.check("listing model files", cluster.run_all(listing_command(path), list(nodes), timeout=300))
    return {name: parse_listing(r.stdout) for name, r in results.items()}


def reachable_listings(cluster: Cluster, spec: ModelSpec, nodes: Iterable[Node]) -> tuple[
        dict[str, Listing | None], dict[str, str]]:
    """Like remote_listings, but a node that cannot be listed is returned apart with the reason
    (staging goes on with the others and fails at the end naming it)."""
    path = model_dir(cluster.settings.model_root, spec)
    results = cluster.run_all(listing_command(path), list(nodes), timeout=300)
    ok = {name: parse_listing(r.stdout) for name, r in results.items() if r.ok}
    return ok, {name: r.why() for name, r in results.items() if not r.ok}


def bytes_to_copy(source: Listing, target: Listing | None) -> int:
    """What rsync still has to write: files absent or of another size (counted whole)."""
    target = target or {}
    return sum(size for rel, size in source.items() if target.get(rel) != size)


def diff_listing(source: Listing, target: Listing | None) -> list[str]:
    """Files that differ: missing, or another size. Extra files on the target are not errors."""
    if target is None:
        return sorted(source)
    return sorted(rel for rel, size in source.items() if target.get(rel) != size)
