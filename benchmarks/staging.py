"""Two-hop weight staging against fanning out from the control node, on the simulated cluster.

The real constraint: the control has ONE 1 GbE uplink shared by every transfer it makes, the
fabric is much faster. So the control's shared side (the management bridge) is shaped, not each
node's link. Prints a table: two-hop (the tool's `stage`), fan-out (control -> 4 nodes in
parallel, the same rsync), and a no-change rerun of a 1,000-file model.

    sudo .venv/bin/python benchmarks/staging.py [--mb 256] [--rate 200mbit]
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tabulate import tabulate

from cluster.config import load
from cluster.listing import model_dir
from cluster.remote import Cluster
from cluster.weights import stage
from testbeds.clustertool import make_model, tool_config
from testbeds.simcluster import SimCluster


def two_hop(settings_file: Path, model: str) -> float:
    s = load(settings_file)
    with Cluster(s, out=io.StringIO()) as cl:
        t = time.monotonic()
        stage(cl, s.model(model))
        return time.monotonic() - t


def fan_out(settings_file: Path, model: str) -> float:
    """What the seed warns against: the control pushes to all four nodes itself."""
    s = load(settings_file)
    spec = s.model(model)
    with Cluster(s, out=io.StringIO()) as cl:
        ssh = shlex.join(["ssh", *cl.ssh_options()])
        dst = model_dir(s.model_root, spec)
        src = s.workspace / spec.hf_id

        def push(node_mgmt: str) -> int:
            subprocess.run(["ssh", *cl.ssh_options(), node_mgmt, f"mkdir -p {shlex.quote(dst)}"], check=True)
            return subprocess.run(["rsync", "-a", "--partial", "-e", ssh, f"{src}/", f"{node_mgmt}:{dst}/"],
                                  check=True).returncode

        t = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(push, [n.mgmt for n in s.nodes]))
        return time.monotonic() - t


def link_ratio(sim: SimCluster) -> tuple[float, float]:
    """MB/s of one fabric stream (head -> w1) and of the shaped uplink (control -> head), 32 MB each."""
    sim.node_run("head", "mkdir -p /srv/probe && head -c 33554432 /dev/urandom > /srv/probe/f", check=True)
    t = time.monotonic()
    sim.node_run("head", "rsync -a /srv/probe/ w1-fab:/srv/probe/", check=True)
    fabric = 32 / (time.monotonic() - t)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "f").write_bytes(os.urandom(32 * 1024**2))
        t = time.monotonic()
        subprocess.run(["rsync", "-a", "-e", f"ssh -F {sim.ssh_config}", f"{tmp}/f", "head:/srv/probe/g"], check=True)
        uplink = 32 / (time.monotonic() - t)
    for n in ("head", "w1"):
        sim.node_run(n, "rm -rf /srv/probe")
    return fabric, uplink


def clear(sim: SimCluster) -> None:
    for n in sim.node_names:
        sim.node_run(n, "rm -rf /srv/models", check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="model size in MB (default 256)")
    ap.add_argument("--rate", default="100mbit", help="shared control uplink rate (tc tbf), default 100mbit")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, SimCluster() as sim:
        tmpd = Path(tmp)
        cfg = tool_config(sim, tmpd)
        shard = 64 * 1024**2
        sizes = tuple([shard] * (args.mb * 1024**2 // shard) + ([args.mb * 1024**2 % shard] if args.mb * 1024**2 % shard else []))
        make_model(tmpd / "workspace", "Qwen/Qwen3.5-397B-A17B-FP8", files=200, big=sizes)
        sim.shape_uplink(args.rate)
        try:
            fabric, uplink = link_ratio(sim)
            print(f"one fabric stream {fabric:.0f} MB/s, shared uplink {uplink:.1f} MB/s: 1:{fabric / uplink:.0f}")
            for run in range(args.runs):
                clear(sim)
                t2 = two_hop(cfg, "qwen")
                clear(sim)
                tf = fan_out(cfg, "qwen")
                rows.append([run + 1, f"{args.mb} MB", args.rate, f"{t2:.1f}", f"{tf:.1f}", f"{tf / t2:.2f}x"])
        finally:
            sim.shape_uplink(None)
        print(tabulate(rows, headers=["run", "model", "shared uplink", "two-hop s", "fan-out s", "two-hop speed-up"]))
        # no-change rerun of a 1,000-file model
        clear(sim)
        make_model(tmpd / "workspace", "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4", files=1000, big=(1_000_000,))
        two_hop(cfg, "nemotron")
        rerun = two_hop(cfg, "nemotron")
        print()
        print(tabulate([["no-change rerun", "1,002 files", f"{rerun:.2f}", "< 5 s", "ok" if rerun < 5 else "MISSED"]],
                       headers=["case", "model", "seconds", "target", ""]))
        clear(sim)
    os.sync()


if __name__ == "__main__":
    main()
