"""How fast `launch` notices readiness and death, on the simulated cluster with the stand-in launcher.

Targets (issue 6): readiness noticed within 2 s of /health turning 200; a dead container within
10 s. Three measurements, each repeated, all on one clock (time.monotonic in this process):

* ready: a side poller asks /health every 10 ms; lag = when `launch` saw 200 - when the poller did.
* container: a worker's container is killed (`podman kill`, as a crash would end it) while the
  model loads; lag = when `launch` noticed - when the kill command started.
* engine: the API server process on the head is killed while the containers stay up (issue #257);
  lag = noticed - kill. This one waits out the deliberate grace (DOWN_GRACE_S) on purpose.

    sudo .venv/bin/python benchmarks/launch_detect.py [--runs 3]

Exits 1, saying which, when the worst run misses a target.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from cluster import health
from cluster.config import Settings, load
from cluster.launch.errors import ContainerExited, EngineDied, LaunchError
from cluster.launch.launcher import launch
from cluster.launch.watch import DOWN_GRACE_S
from cluster.remote import Cluster
from cluster.weights import stage
from testbeds.clustertool import make_model, tool_config
from testbeds.launcher import harness
from testbeds.simcluster import SimCluster

READY_TARGET_S = 2.0  # issue 6: readiness noticed within 2 s of /health turning 200
DEATH_TARGET_S = 10.0  # ... and a dead container within 10 s


def run_launch(s: Settings, model: str, timeout_s: float = 120) -> tuple[Any, LaunchError | None, float]:
    """(outcome or None, error or None, when it returned)."""
    with Cluster(s, out=io.StringIO()) as cl:
        try:
            out = launch(cl, s.model(model), timeout_s=timeout_s)
            return out, None, time.monotonic()
        except LaunchError as e:
            return None, e, time.monotonic()


def ready_lag(sim: Any, s: Settings) -> float:
    harness.reset(sim)
    harness.set_recipe(sim, "qwen", load_delay=3)
    seen: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if health.probe(s.head.mgmt, s.api_port, "/health", 0.2).state == health.READY:
                seen.append(time.monotonic())
                return
            time.sleep(0.01)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    out, err, _ = run_launch(s, "qwen")
    stop.set()
    t.join()
    if err or not out or not seen:
        raise RuntimeError(f"launch did not become ready: {err}")
    return float(out.ready_at - seen[0])


def death_lag(sim: Any, s: Settings, kill: Callable[[], None], expect: type[LaunchError]) -> tuple[float, float]:
    """(noticed - kill, raised - kill) for a kill made once the engine listens."""
    harness.reset(sim)
    harness.set_recipe(sim, "qwen", load_delay=300)
    result: list[tuple[Any, LaunchError | None, float]] = []
    t = threading.Thread(target=lambda: result.append(run_launch(s, "qwen", 600)), daemon=True)
    t.start()
    deadline = time.monotonic() + 120
    while harness.api_listener(sim) is None:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("the simulated engine never listened")
        time.sleep(0.2)
    time.sleep(1.0)
    killed = time.monotonic()
    kill()
    t.join(timeout=120)
    _, err, returned = result[0]
    if not isinstance(err, expect) or err.detected_at is None:
        raise RuntimeError(f"expected {expect.__name__}, got {err!r}")
    return err.detected_at - killed, returned - killed


def kill_container(sim: Any, node: str) -> Callable[[], None]:
    return lambda: sim.node_run(node, "podman kill vllm_node", check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with SimCluster() as sim, tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for hf_id in harness.HF.values():
            make_model(base / "workspace", hf_id, files=5, big=(100_000,))
        s = load(tool_config(sim, base))
        harness.install(sim)
        try:
            with Cluster(s, out=io.StringIO()) as cl:
                stage(cl, s.model("qwen"))
            ready = [ready_lag(sim, s) for _ in range(args.runs)]
            container = [death_lag(sim, s, kill_container(sim, sim.workers[i % len(sim.workers)]), ContainerExited)
                         for i in range(args.runs)]
            engine = [death_lag(sim, s, lambda: sim.node_run("head", f"kill {harness.api_listener(sim)}", check=True),
                                EngineDied) for _ in range(args.runs)]
        finally:
            harness.uninstall(sim)

    def row(what: str, values: list[float], target: str) -> list[Any]:
        return [what, len(values), f"{min(values):.2f}", f"{statistics.median(values):.2f}", f"{max(values):.2f}",
                target]

    rows = [row("/health 200 -> launch sees ready", ready, f"< {READY_TARGET_S:g} s"),
            row("worker container killed -> noticed", [a for a, _ in container], f"< {DEATH_TARGET_S:g} s"),
            row("worker container killed -> error raised", [b for _, b in container], "(logs saved)"),
            row("API server killed -> noticed", [a for a, _ in engine], f"grace {DOWN_GRACE_S:g} s by design"),
            row("API server killed -> error raised", [b for _, b in engine], "")]
    print(tabulate(rows, headers=["measurement", "runs", "min s", "median s", "max s", "target"]))
    missed = [f"{what}: worst {max(values):.2f} s, target < {bound:g} s"
              for what, values, bound in (("readiness noticed", ready, READY_TARGET_S),
                                          ("dead worker container noticed", [a for a, _ in container], DEATH_TARGET_S))
              if not max(values) < bound]
    if missed:
        avg = "/".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"MISSED {len(missed)} target(s) (load average now {avg}):\n  " + "\n  ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
