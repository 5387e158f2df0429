"""`inv watch` in a real terminal (tmux: send-keys, capture-pane) against the simulated cluster:
every node's readings from the nvidia-smi stand-in, the head's server gauges while `inv bench`
runs a real sweep against a simulated endpoint on the head, the sweep's progress, a throttled
node appearing within seconds, and Ctrl-C ending it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.shell import q
from testbeds.clustertool import PROJECT, tool_config
from testbeds.launcher.harness import node_python

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
STANDIN = PROJECT / "testbeds" / "standins" / "nvidia-smi"
MEMINFO = "/root/watch-meminfo"
MODEL = "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4"  # nemotron's served name in defaults.yaml
POWER = {"head": 41.5, "w1": 33.5, "w2": 27.5, "w3": 19.5}


def put(sim: Any, node: str, path: str, text: str) -> None:
    sim.node_run(node, f"cat > {q(path)}.tmp && mv {q(path)}.tmp {q(path)}", check=True, input=text)


def scenario(sim: Any, node: str, **data: Any) -> None:
    put(sim, node, "/root/.nvidia-smi-standin.json", json.dumps(data))


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_screen(session: str, ok: Callable[[str], bool], within: float) -> str:
    deadline = time.monotonic() + within
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if ok(screen):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"screen never matched within {within:g} s:\n{screen}")


@pytest.fixture
def lab(simcluster: Any, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    shutil.copy2(STANDIN, simcluster.state_dir / "bin" / "nvidia-smi")
    for node in simcluster.nodes:
        scenario(simcluster, node, readings={"power.draw": POWER[node], "clocks.sm": 2400, "utilization.gpu": 90})
        put(simcluster, node, MEMINFO, "MemFree: 2000000 kB\nMemAvailable: 104857600 kB\nCached: 90000000 kB\n"
                                       "SwapTotal: 0 kB\nSwapFree: 0 kB\n")
    sim_cfg = json.dumps({"decode_base_s": 0.05})
    python, pythonpath = node_python()  # a Python the node can run (its /root and /tmp are private)
    pid = simcluster.node_run("head", f"cd {q(str(PROJECT))} && PYTHONPATH={q(pythonpath)} setsid {q(python)} "
                              "-m bench.sim --host 0.0.0.0 "
                              f"--port 8000 --model {q(MODEL)} --config {q(sim_cfg)} > /root/watch-sim.log 2>&1 "
                              "< /dev/null & echo $!", check=True).stdout.strip()
    deadline = time.monotonic() + 20
    while simcluster.node_run("head", "curl -sf -o /dev/null http://127.0.0.1:8000/health").returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError("the simulated endpoint on the head did not start: "
                                 + simcluster.node_run("head", "cat /root/watch-sim.log").stdout)
        time.sleep(0.2)
    cfg = tool_config(simcluster, tmp_path, telemetry={"interval_ms": 250, "meminfo_path": MEMINFO})
    yield simcluster, cfg
    simcluster.node_run("head", f"kill {int(pid)}")
    for node in simcluster.nodes:
        simcluster.node_run(node, f"rm -f /root/.nvidia-smi-standin.json {MEMINFO} /root/watch-sim.log")
    (simcluster.state_dir / "bin" / "nvidia-smi").unlink(missing_ok=True)


def test_watch_shows_nodes_gauges_sweep_and_a_throttled_node(lab: tuple[Any, Path]) -> None:
    sim, cfg = lab
    session = f"gx10watch{int(time.time() * 1000) % 100000}"
    inv = [sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg)]
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40")
    try:
        tmux("set-option", "-t", session, "remain-on-exit", "on")
        tmux("send-keys", "-t", session, shlex.join([*inv, "watch"]), "Enter")
        screen = wait_screen(session, lambda s: all(f"{w:.1f}" in s for w in POWER.values()), 30)
        for node in POWER:
            assert any(line.strip().startswith(("│ " + node + " ", node + " ")) or f" {node} " in line
                       for line in screen.splitlines()), node
        assert "100.0" in screen  # MemAvailable GiB from the test's meminfo
        assert "sweep: none running" in screen

        bench = subprocess.Popen([*inv, "bench", "--model", "nemotron", "--concurrency", "1,4",
                                  "--requests", "8", "--input-len", "8", "--output-len", "40"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        try:
            screen = wait_screen(session, lambda s: "running C=4" in s and "server: running 4" in s, 90)
            assert "sweep nemotron: 1/2 points done (C=1" in screen
            scenario(sim, "w2", readings={"power.draw": 12.0, "clocks.sm": 700, "utilization.gpu": 96,
                                          "clocks_event_reasons.active": "0x4"})
            screen = wait_screen(session, lambda s: "sw_power_cap" in s, 10)
            [w2] = [line for line in screen.splitlines() if " w2 " in line]
            assert "12.0" in w2 and "700" in w2
            out, _ = bench.communicate(timeout=120)
        finally:
            if bench.poll() is None:
                bench.kill()
        assert bench.returncode == 0, out
        folder = cfg.parent / "results" / "nemotron"  # inv bench ran every node's sampler for the sweep
        doc = json.loads((folder / "results.json").read_text())
        assert [sorted(p["telemetry"]["nodes"]) for p in doc["points"]] == [sorted(POWER)] * 2
        assert doc["points"][0]["telemetry"]["flagged_nodes"] == [] and (folder / "telemetry.csv").exists()
        assert "w2" in doc["points"][1]["telemetry"]["flagged_nodes"]  # throttled during C=4
        wait_screen(session, lambda s: "2/2 points done" in s and "finished" in s, 10)
        tmux("send-keys", "-t", session, "C-c", "")
        wait_screen(session, lambda s: s.rstrip().endswith(("$", "#")) or "Pane is dead" in s, 15)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_status_shows_each_nodes_power_clock_and_temperature(lab: tuple[Any, Path]) -> None:
    from testbeds.clustertool import inv

    sim, cfg = lab
    scenario(sim, "w3", readings={"power.draw": 9.5, "clocks.sm": 600, "utilization.gpu": 97})
    r = inv(cfg, "status")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    [header] = [line for line in lines if line.startswith("node") and "power W" in line]
    assert header.split()[:6] == ["node", "power", "W", "SM", "MHz", "temp"]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 2:] if line.strip()}
    for node, watts in {**POWER, "w3": 9.5}.items():
        assert node in rows, r.stdout
        assert rows[node][1:4] == [f"{watts:.1f}", "600" if node == "w3" else "2400", "35"], rows.get(node)


def test_stall_log_tails_saved_for_head_and_workers(lab: tuple[Any, Path]) -> None:
    """What the watchdog's `save_logs` writes, over real SSH: each node's serving container log
    tail, and for a node without one the reason, naming it."""
    from cluster import config, sweeptelemetry
    from cluster.remote import Cluster

    sim, cfg = lab
    image = "gx10-logtail-test"
    sim.build_test_image("head", image)
    sim.distribute_test_image(image, ["w1", "w2"])
    for node in ("head", "w1", "w2"):
        sim.node_run(node, f"podman run -d --name vllm_node {image} sh -c 'for i in 1 2 3; do echo {node}-line-$i; done; "
                     "sleep 60'", check=True)
    try:
        time.sleep(1.0)
        with Cluster(config.load(cfg)) as cl:
            paths = sweeptelemetry.save_log_tails(cl, cfg.parent / "results" / "m", lines=2)
        texts = {p.stem: p.read_text() for p in paths}
        assert sorted(texts) == sorted(POWER)
        for node in ("head", "w1", "w2"):
            assert texts[node].split() == [f"{node}-line-2", f"{node}-line-3"], texts[node]
        assert texts["w3"].startswith("# could not read vllm_node's log on w3: exit ")
    finally:
        for node in POWER:
            sim.node_run(node, f"podman rm -f -t 0 vllm_node >/dev/null 2>&1; podman rmi -f {image} >/dev/null 2>&1; true")
