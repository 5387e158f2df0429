"""launch, stop, logs, status and doctor's launch preflight, end to end on the simulated cluster.

The stand-in launcher (testbeds/launcher/repo, installed on the head at the config's launcher_repo) starts
`vllm_node` containers on every node with the nodes' real container engine, reaching the workers
over the fabric with ssh, and serves the project's simulated vLLM endpoint on the head's port
8000; recipes on the head set its load delay and inject faults. Every test starts from a clean
slate (no container, no launch record, pristine recipes) and leaves one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbeds.checks import skip_or_fail, timing
from testbeds.clustertool import PROJECT, gone_soon, inv, make_model, tool_config
from testbeds.launcher import harness
from testbeds.launcher.harness import (
    HF,
    RECIPES,
    RECORD,
    REPO,
    api_listener,
    containers,
    each_node,
    install,
    record,
    reset,
    set_recipe,
    uninstall,
)

pytestmark = pytest.mark.cluster

@pytest.fixture(scope="module")
def lab(simcluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Images and staged weights for both models, and the stand-in launcher on the head."""
    sim = simcluster
    base = tmp_path_factory.mktemp("launch")
    cfg = tool_config(sim, base)
    for hf_id in HF.values():
        make_model(base / "workspace", hf_id, files=5, big=(200_000,))
    try:
        install(sim)
    except harness.NoNodePython as e:
        skip_or_fail(str(e))
    try:
        for model in HF:
            r = inv(cfg, "stage", "--model", model)
            assert r.returncode == 0, r.stdout + r.stderr
        yield {"sim": sim, "workspace": base / "workspace"}
    finally:
        uninstall(sim)


@pytest.fixture
def env(lab: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """(simcluster, a config with this test's own results dir), between two clean slates."""
    sim = lab["sim"]
    reset(sim)
    cfg = tool_config(sim, tmp_path, control__workspace=str(lab["workspace"]))
    yield sim, cfg
    reset(sim)


def saved_logs(cfg: Path) -> list[Path]:
    return sorted((cfg.parent / "results" / "launch-logs").glob("*"))


def test_launch_healthy_status_then_the_other_model_replaces_it_everywhere(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    set_recipe(sim, "qwen", load_delay=2)
    set_recipe(sim, "nemotron", load_delay=1)
    r = inv(cfg, "launch", "--model", "qwen", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qwen is serving Qwen/Qwen3.5-397B-A17B-FP8" in r.stdout
    assert "loaded in 0m" in r.stdout and "(expected 10-13 min)" in r.stdout and "vLLM 0.32.0+sim" in r.stdout
    assert "[head] Cluster started in background (Daemon mode)." in r.stdout  # the launcher's output, streamed
    for node, found in containers(sim).items():
        assert len(found) == 1 and found[0].startswith("vllm_node localhost/vllm-node-mimo:latest Up"), (node, found)
    rec = record(sim)
    assert rec and rec["model"] == "qwen" and rec["master_port"] == 29510 and rec["load_seconds"] > 2
    s = inv(cfg, "status")
    assert s.returncode == 0, s.stderr
    assert "serving: qwen as Qwen/Qwen3.5-397B-A17B-FP8 (known from the API)" in s.stdout
    assert "health: ready (HTTP 200)" in s.stdout and "vLLM: 0.32.0+sim" in s.stdout
    assert "uptime: 0m" in s.stdout and "ready (launched" in s.stdout

    # the other model: everything of the first goes, also a container of its image under another name
    sim.node_run("w3", "podman run -d --name stray vllm-node-mimo sleep 600", check=True)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "single tenancy: stopping qwen (by its API): vllm_node on head, vllm_node on w1, vllm_node on w2, " \
           "stray on w3, vllm_node on w3" in r.stdout
    for node, found in containers(sim).items():
        assert len(found) == 1 and found[0].startswith("vllm_node localhost/vllm-node:latest Up"), (node, found)
    models = subprocess.run(["curl", "-s", f"http://{sim.nodes['head'].mgmt}:8000/v1/models"],
                            capture_output=True, text=True, check=True).stdout
    assert [m["id"] for m in json.loads(models)["data"]] == [HF["nemotron"]]
    rec = record(sim)
    assert rec and rec["model"] == "nemotron" and rec["master_port"] == 29520


def test_worker_dying_while_loading_fails_within_seconds_with_its_log(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    set_recipe(sim, "qwen", load_delay=60, env={"STANDIN_FAIL_NODE": "w2", "STANDIN_FAIL_AFTER_S": 3})
    died: list[float] = []

    def watch_w2() -> None:  # when w2's container goes away, as seen on the node itself
        seen = False
        while time.monotonic() < deadline:
            ps = sim.node_run("w2", "podman ps --format '{{.Names}}'")
            if ps.returncode != 0:
                continue
            up = "vllm_node" in ps.stdout
            if seen and not up:
                died.append(time.monotonic())
                return
            seen = seen or up
            time.sleep(0.25)

    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(1) as pool:
        watcher = pool.submit(watch_w2)
        r = inv(cfg, "launch", "--model", "qwen", "--timeout", "1")
        ended = time.monotonic()
        watcher.result()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the vllm_node container on w2 exited while qwen was loading" in r.stderr
    assert "torch.OutOfMemoryError: CUDA out of memory" in r.stderr  # the line that explains it
    assert died and ended - died[0] < 10, f"noticed {ended - died[0]:.1f} s after w2's container died"
    (saved,) = saved_logs(cfg)
    assert str(saved) in r.stderr
    w2 = (saved / "w2.log").read_text()
    assert "Loading safetensors checkpoint shards: 1/60" in w2 and "CUDA out of memory" in w2
    assert "Ray node" in (saved / "head.log").read_text() or "Ray runtime started" in (saved / "head.log").read_text()
    assert json.loads((saved / "launch.json").read_text())["model"] == "qwen"


def test_health_timeout_saves_logs_leaves_the_cluster_then_logs_and_stop(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    set_recipe(sim, "nemotron", load_delay=120)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "0.25")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nemotron did not become healthy within 0.25 min (expected 10-13 min); last /health: HTTP 503" in r.stderr
    assert "the containers were left running" in r.stderr and "inv stop" in r.stderr
    (saved,) = saved_logs(cfg)
    assert {p.name for p in saved.iterdir()} >= {"head.log", "w1.log", "w2.log", "w3.log", "launcher.log"}
    assert "Loading safetensors checkpoint shards" in (saved / "w3.log").read_text()
    assert all(len(found) == 1 for found in containers(sim).values())

    logs = inv(cfg, "logs", "--node", "w1", "--lines", "2")
    assert logs.returncode == 0, logs.stderr
    body = logs.stdout.split("== w1: vllm_node, last 2 lines ==\n", 1)[1].splitlines()
    assert len(body) == 2 and all("RayWorkerWrapper" in line for line in body), logs.stdout
    follow = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "logs", "--follow",
                               "--node", "head,w3", "--lines", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    stream = follow.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while sum(line.startswith("[w3] ") for line in lines) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)  # the last 5 lines, then at least one new (live) one
    follow.send_signal(signal.SIGINT)
    sent = time.monotonic()
    follow.wait(timeout=15)
    took = time.monotonic() - sent
    reader.join(timeout=5)
    out = "".join(lines)
    assert follow.returncode == 0 and "[head] http://0.0.0.0:8000" in out
    assert took < 5, took  # Ctrl-C stops within seconds, and the followers on the nodes go with it
    assert gone_soon(sim, ["head", "w3"], b"attach", b"--no-stdin", within=5) == []
    assert gone_soon(sim, ["head", "w3"], b"tail", b"0.2", within=5) == []
    w3 = [line for line in lines if line.startswith("[w3] ")]
    assert len(w3) >= 6 and all("Loading safetensors checkpoint shards" in line for line in w3), out

    partial = inv(cfg, "stop", "--node", "w1")
    assert partial.returncode == 0 and "vllm_node on w1" in partial.stdout and "launch record stays" in partial.stdout
    assert containers(sim)["w1"] == [] and len(containers(sim)["w2"]) == 1 and record(sim)
    s = inv(cfg, "stop")
    assert s.returncode == 0, s.stderr
    assert "stopping nemotron (by the launch record): vllm_node on head, vllm_node on w2, vllm_node on w3" in s.stdout
    assert all(found == [] for found in containers(sim).values())
    assert record(sim) is None
    time.sleep(1)
    assert api_listener(sim) is None  # the engine went with the head container
    again = inv(cfg, "stop")
    assert again.returncode == 0 and "no serving container on head, w1, w2, w3" in again.stdout
    gone = inv(cfg, "logs")
    assert gone.returncode == 1 and "no vllm_node container on head" in gone.stderr


def test_engine_dying_while_containers_stay_up_is_noticed(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    set_recipe(sim, "qwen", load_delay=120)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "launch",
                             "--model", "qwen", "--timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (pid := api_listener(sim)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid is not None, "the simulated engine never listened"
        time.sleep(1)
        sim.node_run("head", f"kill {pid}", check=True)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "the engine died" in err and "stopped listening on port 8000" in err
    timing(time.monotonic() - killed, 10, "noticing the dead engine")
    assert all(len(found) == 1 for found in containers(sim).values())  # the containers stayed up


def test_ctrl_c_while_waiting_leaves_the_cluster_and_says_how_to_stop(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    set_recipe(sim, "nemotron", load_delay=120)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "launch",
                             "--model", "nemotron"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while api_listener(sim) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert took < 5, took
    assert gone_soon(sim, list(sim.node_names), b"attach", b"--no-stdin", within=5) == []  # the wait's followers
    assert "interrupted after" in err and "the cluster was left as it is; nemotron goes on loading" in err
    assert "stop it with `inv stop`" in err
    assert all(len(found) == 1 for found in containers(sim).values())
    assert api_listener(sim) is not None
    rec = record(sim)
    assert rec and rec["model"] == "nemotron"


def test_refuses_missing_image_or_weights_with_the_fix_and_changes_nothing(
        env: tuple[Any, Path], lab: dict[str, Any]) -> None:
    sim, cfg = env
    sim.node_run("w1", "podman run -d --name stray vllm-node sleep 600", check=True)
    before = containers(sim, status=False)
    sim.stop_sshd("w3")
    try:
        r = inv(cfg, "launch", "--model", "qwen")
    finally:
        sim.start_sshd("w3")
    assert r.returncode == 1
    assert "cannot launch, node(s) unreachable:" in r.stderr and f"w3: cannot reach w3 ({sim.nodes['w3'].mgmt})" in r.stderr
    sim.node_run("w3", "podman rmi -f vllm-node-mimo", check=True)
    try:
        r = inv(cfg, "launch", "--model", "qwen")
    finally:
        sim.distribute_test_image("vllm-node-mimo", nodes=["w3"])
    assert r.returncode == 1
    assert "cannot launch qwen; nothing was changed" in r.stderr
    assert "vllm-node-mimo:latest is missing on w3" in r.stderr and "fix: inv distribute --image vllm-node-mimo" in r.stderr
    shard = f"/srv/models/{HF['nemotron']}/model-00000.safetensors"
    sim.node_run("w2", f"truncate -s 10 {shard}", check=True)
    try:
        r = inv(cfg, "launch", "--model", "nemotron")
        assert r.returncode == 1
        assert "w2: 1 of 6 files of nemotron missing or of another size" in r.stderr
        assert "fix: inv stage --model nemotron" in r.stderr
    finally:
        assert inv(cfg, "stage", "--model", "nemotron").returncode == 0
    assert containers(sim, status=False) == before  # the stray container was not stopped for a refused launch
    assert record(sim) is None


def test_dry_run_prints_each_hosts_commands_and_changes_nothing(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    sim.node_run("head", "podman run -d --name vllm_node vllm-node sleep 600", check=True)
    sim.node_run("w2", "podman run -d --name vllm_node vllm-node sleep 600", check=True)
    sim.node_run("head", f"mkdir -p /root/.gx10-ops && echo '{{\"model\": \"nemotron\"}}' > {RECORD}", check=True)
    before = containers(sim, status=False)
    r = inv(cfg, "launch", "--model", "qwen", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "single tenancy: stopping nemotron (by the launch record): vllm_node on head, vllm_node on w2" in r.stdout
    assert "[dry-run] head: docker rm -f vllm_node" in r.stdout and "[dry-run] w2: docker rm -f vllm_node" in r.stdout
    assert "[dry-run] w1:" not in r.stdout
    assert "[dry-run] head: mkdir -p \"$HOME\"/.gx10-ops && printf" in r.stdout
    assert f"[dry-run] head: cd {REPO} && PYTHONUNBUFFERED=1 ./relaunch-qwen397-fp8-mtp-qwen3next-tp4.sh < /dev/null" in r.stdout
    s = inv(cfg, "stop", "--dry-run")
    assert s.returncode == 0 and "[dry-run] head: rm -f \"$HOME\"/.gx10-ops/serving.json" in s.stdout
    assert containers(sim, status=False) == before
    assert record(sim) == {"model": "nemotron"}
    log = (cfg.parent / "results" / "operations.log").read_text()
    assert " head dry-run " in log and "relaunch-qwen397" in log


def test_recipe_path_reports_a_failing_launcher_then_starts_without_waiting(
        env: tuple[Any, Path], lab: dict[str, Any], tmp_path: Path) -> None:
    sim, _ = env
    models = yaml.safe_load((PROJECT / "cluster" / "defaults.yaml").read_text())["models"]
    models["qwen"]["relaunch"] = None
    cfg = tool_config(sim, tmp_path / "recipe", control__workspace=str(lab["workspace"]), models=models)
    dry = inv(cfg, "launch", "--model", "qwen", "--dry-run")
    nodes = ",".join(sim.nodes[n].fabric for n in sim.node_names)
    assert (f"[dry-run] head: cd {REPO} && PYTHONUNBUFFERED=1 ./run-recipe.sh {RECIPES['qwen']} -d -t vllm-node-mimo:latest "
            f"-n {nodes} --name vllm_node "
            "--master-port 29510 --port 8000 < /dev/null") in dry.stdout, dry.stdout
    set_recipe(sim, "qwen", drop="command")
    r = inv(cfg, "launch", "--model", "qwen", "--timeout", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the launcher failed on head: Error: Recipe missing required field: command" in r.stderr
    assert "(exit 1)" in r.stderr
    assert record(sim) is None  # a failed launch leaves no record: status must not say "not ready yet"
    (saved,) = saved_logs(cfg)
    assert "Recipe missing required field" in (saved / "launcher.log").read_text()

    set_recipe(sim, "qwen", load_delay=30)
    r = inv(cfg, "launch", "--model", "qwen", "--no-wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qwen is starting (expected 10-13 min to load)" in r.stdout
    env_of = each_node(sim, "podman inspect --format '{{range .Config.Env}}{{println .}}{{end}}' vllm_node")
    for node, out in env_of.items():
        assert "MASTER_PORT=29510" in out.stdout.splitlines(), (node, out.stdout)
    rec = record(sim)
    assert rec and rec["model"] == "qwen" and "ready_epoch" not in rec


def test_doctor_launch_preflight(env: tuple[Any, Path]) -> None:
    sim, cfg = env
    sim.node_run("w2", "podman run -d --name stray vllm-node-mimo sleep 600", check=True)
    # something that is not a serving container holds the master port on the head
    holder = sim.node_run("head", "nohup python3 -m http.server 29520 --bind 0.0.0.0 >/dev/null 2>&1 & echo $!",
                          check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while ":29520" not in sim.node_run("head", "ss -Hltn").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        d = inv(cfg, "doctor", "--model", "nemotron")
    finally:
        sim.node_run("head", f"kill {holder}")
    assert d.returncode == 1, d.stdout
    rows = d.stdout.splitlines()
    assert any(r.startswith("OK    all     image") and "vllm-node:latest" in r and "head, w1, w2, w3" in r for r in rows)
    assert sum(r.startswith("OK") and " weights " in r for r in rows) == 4
    assert any(r.startswith("WARN  w2      container") and "stray" in r for r in rows)
    assert any(r.startswith("OK    head    API port") for r in rows)
    assert any(r.startswith("FAIL  head    nemotron master port") and "held by python" in r for r in rows), d.stdout


def test_launch_is_ready_only_once_a_token_comes_back(env: tuple[Any, Path]) -> None:
    """/health answers 200 after 1 s, the engine generates only after 4 s: ready (and the load time) waits for the token."""
    sim, cfg = env
    data = yaml.safe_load((harness.LAUNCHER / RECIPES["nemotron"]).read_text())
    data["defaults"]["load_delay"] = 1
    data["command"] = data["command"].rstrip("\n") + " --config '{{\"generate_delay_s\": 4}}'\n"
    sim.node_run("head", f"cat > {REPO}/{RECIPES['nemotron']}", input=yaml.safe_dump(data), check=True)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/health = 200 but no token yet (completion answered HTTP 503" in r.stdout
    rec = record(sim)
    assert rec and rec["load_seconds"] >= 4, rec


def test_memory_preflight_refuses_the_node_without_room_and_drops_the_page_cache(env: tuple[Any, Path]) -> None:
    """Per-node meminfo files the test writes; w2 has 20 GiB obtainable, the budget is 60 GiB."""
    sim, cfg = env
    meminfo, drop = "/root/test-meminfo", "/root/test-drop-caches"
    gib = 1024 * 1024
    for node in sim.nodes:
        free, cached = (8, 12) if node == "w2" else (8, 90)
        text = (f"MemTotal: {128 * gib} kB\nMemFree: {free * gib} kB\nMemAvailable: {free * gib} kB\n"
                f"Cached: {cached * gib} kB\nShmem: 0 kB\n")
        sim.node_run(node, f"printf %s '{text}' > {meminfo}; rm -f {drop}; touch {drop}", check=True)
    over = dict(telemetry={"meminfo_path": meminfo},
                memory={"node_budget_gib": 60, "drop_caches_path": drop})
    cfg = _with(cfg, over)
    before = containers(sim, status=False)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "1", "--drop-page-cache")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cannot launch nemotron: not enough memory; nothing was started" in r.stderr
    assert "w2: w2 lacks memory: 20.0 GiB obtainable (MemAvailable 8.0, MemFree 8.0 + page cache 12.0 " \
           "reclaimable); budget 60 GiB" in r.stderr
    assert "head:" not in r.stderr.split("not enough memory", 1)[1]  # only the node without room
    assert containers(sim, status=False) == before
    for node in sim.nodes:  # the page cache was dropped on every node first
        assert sim.node_run(node, f"cat {drop}").stdout.strip() == "3", node
    d = inv(cfg, "doctor", "--model", "nemotron")
    assert "w2 lacks memory" in d.stdout
    assert d.stdout.count("98.0 GiB obtainable") == 3  # head, w1, w3: MemFree 8 + page cache 90


def _with(cfg: Path, extra: dict[str, Any]) -> Path:
    data = yaml.safe_load(cfg.read_text())
    data.update(extra)
    cfg.write_text(yaml.safe_dump(data))
    return cfg
