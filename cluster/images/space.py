"""Free space before image work: where the image lands (the engine's store) and where the engine
spools a stream (podman's `save` and `load` copy the whole image through /var/tmp, see
/work/shared/TESTBED.md; `docker save` filling /tmp or /var/tmp is a known upstream failure).
Checked before anything is streamed, so a full disk is a refusal with numbers, not a stream that
dies at 90 % and leaves the node's disk full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Node
from ..progress import human
from ..remote import Cluster
from ..shell import q

MARGIN = 1.05  # the stream's size is the engine's figure; layers on disk run a little larger
SPOOLS = ("/var/tmp", "/tmp")


@dataclass(frozen=True)
class Place:
    role: str  # "store" or "spool"
    path: str
    device: str
    free: int


def probe_command(docker: str) -> str:
    """Prints `ROLE DEVICE FREE PATH` for the engine's store and each spool directory."""
    d = q(docker)
    root = (f"r=$({d} info --format '{{{{.DockerRootDir}}}}' 2>/dev/null); "
            f"case $r in /*) ;; *) r=$({d} info --format '{{{{.Store.GraphRoot}}}}' 2>/dev/null);; esac; ")
    spools = " ".join(q(p) for p in SPOOLS)
    return (root + 'for x in "store $r" $(for s in ${TMPDIR:+"$TMPDIR"} ' + spools + '; do echo "spool:$s"; done); do '
            'case $x in spool:*) role=spool; p=${x#spool:};; *) role=store; p=${x#store };; esac; '
            '[ -d "$p" ] || continue; '
            'df -PB1 "$p" | awk -v r="$role" -v p="$p" \'NR==2 {print r, $1 ":" $6, $4, p}\'; done')


def parse(stdout: str) -> list[Place]:
    places = []
    for line in stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2].isdigit():
            places.append(Place(parts[0], parts[3], parts[1], int(parts[2])))
    return places


def shortfalls(places: list[Place], size: int, spool: bool, store_too: bool = True) -> list[str]:
    """What lacks room for an image of `size` bytes: the store (where it lands), the spool (when
    the engine spools on this side), and both together when they share one filesystem."""
    need = int(size * MARGIN)
    store = [p for p in places if p.role == "store" and store_too]
    spools = [p for p in places if p.role == "spool"]
    bad = [f"{p.path} (the engine's image store) has {human(p.free)} free, needs {human(need)}"
           for p in store if p.free < need]
    if spool and spools:
        first = spools[0]  # $TMPDIR if set, else /var/tmp: where the engine spools
        if first.free < need:
            bad.append(f"{first.path} (where the engine spools the stream) has {human(first.free)} free, "
                       f"needs {human(need)}")
        elif store and store[0].device == first.device and first.free < 2 * need and not bad:
            bad.append(f"{first.path} and {store[0].path} share one filesystem with {human(first.free)} free, "
                       f"the spool and the image need {human(2 * need)}")
    return bad


FIX = ("free space there (`inv prune`, old files under /var/tmp), or point the engine's spool at a "
       "bigger disk (TMPDIR for the engine; podman: image_copy_tmp_dir in containers.conf)")


def check(cluster: Cluster, nodes: Iterable[Node], size: int, *, what: str, spool: bool = True,
          store: bool = True) -> dict[str, str]:
    """Node name -> why it lacks room for `what` (nothing for nodes with room). A node whose
    probe fails is not refused here: its own command will name the failure."""
    nodes = list(nodes)
    results = cluster.run_all(probe_command(cluster.settings.docker), nodes, timeout=30)
    refused = {}
    for n in nodes:
        r = results[n.name]
        if not r.ok:
            continue
        bad = shortfalls(parse(r.stdout), size, spool, store)
        if bad:
            refused[n.name] = f"not enough disk for {what} ({human(size)}): " + "; ".join(bad) + f". Fix: {FIX}"
    return refused
