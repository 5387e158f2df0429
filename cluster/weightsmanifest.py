"""The staged copies' manifest: what `inv verify-weights` found on each node, kept on the head.

A manifest is the copy's file names and sizes and the sha256 of its small files (the checks
verify-weights already makes); its digest names one copy exactly, so the provenance card can say
which weights a number was measured on and a resume can tell two copies apart. The record is
`~/.gx10-ops/weights/<model>.json` on the head, written after every verify-weights, with each
node's digest (copies whose digests differ are reported) and the revision the copy carries
where it has one (huggingface_hub's `local_dir` download metadata, first line: the commit).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from .config import ModelSpec
from .listing import Listing, model_dir
from .remote import Cluster
from .shell import q, remote_path

MANIFEST_DIR = "~/.gx10-ops/weights"
# huggingface_hub writes `<local_dir>/.cache/huggingface/download/<file>.metadata` (commit hash,
# etag, timestamp, one a line) for each file `snapshot_download(local_dir=...)` fetched.
REVISION_FILE = ".cache/huggingface/download/config.json.metadata"


def digest(listing: Listing, sums: dict[str, str]) -> str:
    """sha256 of the sorted (name, size, sha256 or null) triples: one copy, exactly."""
    rows = [[rel, size, sums.get(rel)] for rel, size in sorted(listing.items())]
    return "sha256:" + hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def manifest_path(spec: ModelSpec) -> str:
    return f"{MANIFEST_DIR}/{spec.name}.json"


def record(cluster: Cluster, spec: ModelSpec, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write the head's record of this verify-weights (atomically); the record."""
    path = model_dir(cluster.settings.model_root, spec)
    r = cluster.run(cluster.head, f"head -n1 {q(path)}/{REVISION_FILE} 2>/dev/null || true", timeout=30)
    revision = r.stdout.strip() or None if r.ok else None
    digests = sorted({n["digest"] for n in nodes.values()})
    data = {"model": spec.name, "hf_id": spec.hf_id, "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "revision": revision, "nodes": nodes, "digests_differ": len(digests) > 1}
    target = remote_path(manifest_path(spec))
    cluster.run(cluster.head, f"mkdir -p {remote_path(MANIFEST_DIR)} && printf '%s\\n' "
                f"{q(json.dumps(data, sort_keys=True))} > {target}.partial && mv {target}.partial {target}",
                mutating=True, timeout=60)
    return data


def read(cluster: Cluster, spec: ModelSpec) -> dict[str, Any] | None:
    """The head's record for this model, or None when verify-weights never ran (or it is damaged)."""
    r = cluster.run(cluster.head, f"cat {remote_path(manifest_path(spec))} 2>/dev/null || true", timeout=30)
    try:
        data = json.loads(r.stdout) if r.ok and r.stdout.strip() else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("model") == spec.name else None
