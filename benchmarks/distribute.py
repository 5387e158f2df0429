"""Image distribution: the seed's tar-then-copy against `inv distribute`'s one-save stream.

On the simulated cluster, with a test image carrying --gib of incompressible data, alternating
the two methods in one session (seed first in odd runs, ours first in even ones), clearing the
workers and flushing dirty pages (`sync`) before each. Prints one table: wall time (median of
the runs) and bytes written on the head.

- seed: on the head, `docker save IMG > /tmp/IMG.tar`, then `cat tar | ssh wN docker load` to the
  three workers in parallel, `wait`, `rm` the tar (the README's recipe, run as one ssh command).
- ours: `cluster.images.distribute.distribute`, the code behind `inv distribute` (pre-check of the
  workers' image IDs, the verification record, the stream, the post-check), timed as a whole;
  "head cmd s" is the stream command alone (from the operations log).
- reference: `docker save IMG > /dev/null` alone on the head, to show what the engine itself
  writes (podman's spool), which neither method can avoid.

Bytes written on the head are the `write_bytes` of the head-side shell from /proc/<pid>/io, read
at its end: the kernel folds each reaped child's counters into its parent, so this is what every
process of the head's pipeline dirtied in the page cache (counted even when the file is deleted
before it reaches the disk; the seed's rm shows up as cancelled_write_bytes). It is measured per
process because the simulated nodes share one disk with each other and with other users of the
machine. Note: podman spools `save` (per layer, to learn its size) and `load` through /var/tmp,
so with podman even a pure stream writes one copy on the head; Docker streams, so there ours
writes nothing and the seed writes the tar once.

    sudo .venv/bin/python benchmarks/distribute.py [--gib 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from cluster.config import Node, load
from cluster.images import distribute as image_distribute
from cluster.images import verify as image_verify
from cluster.remote import Cluster
from cluster.shell import q
from testbeds.clustertool import tool_config
from testbeds.simcluster import SimCluster

IMAGE = "vllm-node"
TAG = "vllm-node:latest"
IO_FILE = "/tmp/gx10-bench-io"
# Appended to the head's shell: reap every child, then keep its I/O counters for the benchmark.
MEASURE = f"\nwait\ncat /proc/$$/io > {IO_FILE}\n"
GIB = 1024**3


def head_io(sim: SimCluster) -> dict[str, int]:
    out = sim.node_run("head", f"cat {IO_FILE} && rm -f {IO_FILE}", check=True).stdout
    return {k: int(v) for k, _, v in (line.partition(": ") for line in out.splitlines()) if v.strip().isdigit()}


def clear_workers(sim: SimCluster) -> None:
    for w in sim.workers:
        sim.node_run(w, f"podman rmi -f {TAG} >/dev/null 2>&1; true", timeout=600)


def seed(sim: SimCluster) -> tuple[float, dict[str, int]]:
    tar = "/tmp/vllm-node.tar"
    loads = " ".join(sim.nodes[w].fabric for w in sim.workers)
    script = (
        f"docker save {TAG} > {tar}\n"
        f"for n in {loads}; do (cat {tar} | ssh $n 'docker load' >/dev/null) & done; wait\n"
        f"rm {tar}" + MEASURE
    )
    start = time.monotonic()
    r = sim.ssh("head", f"bash -c {shlex.quote(script)}", timeout=3600)
    wall = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"seed method failed: {r.stderr}")
    return wall, head_io(sim)


def engine_alone(sim: SimCluster) -> tuple[float, dict[str, int]]:
    """What the engine's `save` writes on its own, into a pipe to nowhere (podman's spool)."""
    start = time.monotonic()
    r = sim.ssh("head", f"bash -c {shlex.quote(f'docker save {TAG} > /dev/null' + MEASURE)}", timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"docker save failed: {r.stderr}")
    return time.monotonic() - start, head_io(sim)


def ours(cfg: Path, sim: SimCluster) -> tuple[float, dict[str, int]]:
    s = load(cfg)
    with Cluster(s, out=io.StringIO()) as cl:
        start = time.monotonic()
        failures = image_distribute.distribute(cl, [s.image(IMAGE)])
        wall = time.monotonic() - start
    if failures:
        raise SystemExit(image_distribute.describe_failures(failures))
    streams = [line for line in s.ops_log.read_text().splitlines() if " head exit=0 " in line and "tee -p" in line]
    counters = head_io(sim)
    counters["stream_ms"] = int(float(streams[-1].split()[3].rstrip("s")) * 1000)
    return wall, counters


def measured_stream(cluster: Cluster, tag: str, targets: list[Node]) -> str:
    """The tool's own stream script, plus the line that records the head shell's I/O counters."""
    return f"bash -c {q(image_distribute.stream_script(cluster, tag, targets) + MEASURE)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="incompressible data in the image, GiB (default 1)")
    ap.add_argument("--runs", type=int, default=3, help="runs per method, alternating (default 3)")
    args = ap.parse_args()
    image_distribute.stream_command = measured_stream  # type: ignore[assignment]
    walls: dict[str, list[float]] = {"seed": [], "ours": [], "engine": []}
    streams: dict[str, list[float]] = {"seed": [], "ours": [], "engine": []}
    written: dict[str, list[int]] = {"seed": [], "ours": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp, SimCluster() as sim:
        cfg = tool_config(sim, Path(tmp))
        t = time.monotonic()
        head_id = sim.build_test_image("head", IMAGE, extra_bytes=int(args.gib * GIB))
        print(f"image {TAG} {head_id[:12]} with {args.gib:g} GiB of random data built in "
              f"{time.monotonic() - t:.0f} s", file=sys.stderr)
        s = load(cfg)
        with Cluster(s, out=io.StringIO()) as cl:
            verdicts = image_verify.verify(cl, [s.image(IMAGE)], [cl.head])
            assert all(v.ok for v in verdicts), [v.report() for v in verdicts]
        runners = {"seed": lambda: seed(sim), "ours": lambda: ours(cfg, sim), "engine": lambda: engine_alone(sim)}
        size = int(sim.node_run("head", f"podman image inspect --format '{{{{.Size}}}}' {TAG}", check=True).stdout)
        for run in range(args.runs):
            order = ["seed", "ours"] if run % 2 == 0 else ["ours", "seed"]
            for method in [*order, "engine"]:
                clear_workers(sim)
                os.sync()  # no run pays for the previous run's dirty pages
                wall, counters = runners[method]()
                if method != "engine":
                    ids = {w: sim.image_id(w, TAG) for w in sim.workers}
                    assert set(ids.values()) == {head_id}, ids
                walls[method].append(wall)
                streams[method].append(counters.get("stream_ms", wall * 1000) / 1000)
                written[method].append(counters["write_bytes"])
                print(f"run {run + 1} {method}: {wall:.1f} s, head wrote {counters['write_bytes'] / GIB:.2f} GiB "
                      f"(cancelled {counters.get('cancelled_write_bytes', 0) / GIB:.2f} GiB)", file=sys.stderr)
        clear_workers(sim)
    seed_wall, seed_bytes = statistics.median(walls["seed"]), statistics.median(written["seed"])
    rows = []
    for method, label in (("seed", "seed: save to tar, cat tar | ssh load x3"),
                          ("ours", "ours: save | tee -> 3 x ssh load (inv distribute)"),
                          ("engine", "reference: docker save > /dev/null on the head")):
        wall, wrote = statistics.median(walls[method]), statistics.median(written[method])
        rows.append([label, f"{wall:.1f}", " / ".join(f"{w:.1f}" for w in walls[method]),
                     f"{wall / seed_wall:.2f}x", f"{statistics.median(streams[method]):.1f}", f"{wrote / GIB:.2f}",
                     f"{wrote / size:.2f}x", f"{wrote / seed_bytes:.2f}x", "yes" if method == "seed" else "no"])
    rows[-1][3] = "-"
    print(f"\nimage {size / GIB:.2f} GiB, 3 workers, {args.runs} alternating runs per method (medians)")
    print(tabulate(rows, headers=["method", "wall s", "runs s", "vs seed", "head cmd s", "head GiB written",
                                  "x image", "vs seed", "tar on head"], disable_numparse=True))


if __name__ == "__main__":
    main()
