"""`inv launch` against each generation of the launcher (seed: Ray by default; current: no-Ray by
default; jan26: no run-recipe), on a 4-node and a 2-node simulated cluster, over real SSH with real
podman. The stand-in (testbeds/launcher/repo/standin.py, STANDIN_GENERATION) copies into every
node's container the launch script that node received and runs a process carrying its command
line, so the tests read what each container really got."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.config import defaults
from testbeds.checks import skip_or_fail
from testbeds.clustertool import PROJECT, inv, make_model, tool_config
from testbeds.launcher import harness
from testbeds.simcluster import SimCluster, missing_requirements

pytestmark = pytest.mark.cluster

REPO = harness.REPO
SCRIPT = "/workspace/launch-script.sh"  # standin.EXEC_SCRIPT
NAMES = ("vllm_node", "gx_serve", "stray")
GENS = ("seed", "current")
BASE = "gx10-standin/base"


@dataclass
class Lab:
    sim: SimCluster
    workspace: Path

    @property
    def fabric(self) -> list[str]:
        return [self.sim.nodes[n].fabric for n in self.sim.node_names]

    def config(self, tmp: Path, *, relaunch: bool = False, **over: Any) -> Path:
        models = yaml.safe_load((PROJECT / "cluster" / "defaults.yaml").read_text())["models"]
        if not relaunch:
            for m in models.values():
                m["relaunch"] = None
        return tool_config(self.sim, tmp, control__workspace=str(self.workspace), models=models, **over)

    def recipe(self, model: str, **changes: Any) -> None:
        data = yaml.safe_load((harness.LAUNCHER / harness.RECIPES[model]).read_text())
        data.update({k: v for k, v in changes.items() if k != "command_extra"})
        if "command_extra" in changes:
            data["command"] = data["command"].rstrip().rstrip("\\").rstrip() + " " + changes["command_extra"] + "\n"
        self.sim.node_run("head", f"cat > {REPO}/{harness.RECIPES[model]}", input=yaml.safe_dump(data), check=True)

    def env_file(self, **keys: str) -> None:
        self.sim.node_run("head", f"cat > {REPO}/.env", check=True,
                          input="".join(f"{k}={v}\n" for k, v in keys.items()))

    def default_env(self, **over: str) -> dict[str, str]:
        keys = {"CLUSTER_NODES": ",".join(self.fabric), "LOCAL_IP": self.fabric[0], "CONTAINER_NAME": "vllm_node",
                "ETH_IF": harness.FABRIC_IF, "IB_IF": harness.IB_IF}
        keys.update(over)
        return {k: v for k, v in keys.items() if v}

    def reset(self, generation: str) -> None:
        harness.each_node(self.sim, "; ".join(f"podman rm -f -t 0 {n} >/dev/null 2>&1" for n in NAMES) + "; true")
        harness.reset(self.sim)
        harness.install_repo(self.sim, generation)
        self.env_file(**self.default_env())

    def script_on(self, node: str, name: str = "vllm_node") -> str | None:
        r = self.sim.node_run(node, f"podman exec {name} cat {SCRIPT}")
        return r.stdout if r.returncode == 0 else None


def _lab(sim: SimCluster, base: Path, models: tuple[str, ...]) -> Lab:
    for model in models:
        make_model(base / "workspace", harness.HF[model], files=5, big=(200_000,))
    try:
        harness.install(sim)
    except harness.NoNodePython as e:
        skip_or_fail(str(e))
    cfg = tool_config(sim, base, control__workspace=str(base / "workspace"))
    for model in models:
        r = inv(cfg, "stage", "--model", model)
        assert r.returncode == 0, r.stdout + r.stderr
    return Lab(sim, base / "workspace")


@pytest.fixture(scope="module")
def four(simcluster: SimCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = _lab(simcluster, tmp_path_factory.mktemp("gen4"), ("qwen", "nemotron"))
    try:
        yield lab
    finally:
        harness.each_node(simcluster, "podman rm -f -t 0 gx_serve >/dev/null 2>&1; true")
        harness.uninstall(simcluster)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A pair: the two boxes cabled directly, tp=2 (most Spark owners)."""
    problems = missing_requirements()
    if problems:
        skip_or_fail("simulated cluster unavailable: " + "; ".join(problems))
    sim = SimCluster(nodes=2)
    try:
        sim.up()
        yield _lab(sim, tmp_path_factory.mktemp("gen2"), ("qwen",))
    finally:
        sim.down()


def _launched(lab: Lab, r: subprocess.CompletedProcess[str], image: str) -> None:
    assert r.returncode == 0, r.stdout + r.stderr
    for node, found in harness.containers(lab.sim).items():
        assert len(found) == 1 and found[0].startswith(f"vllm_node localhost/{image}:latest Up"), (node, found)


def _assert_ray(lab: Lab, port: int) -> None:
    """Ray: the head's container holds the script (nothing distributed appended: the recipe runs
    no `vllm serve`), the workers' join the head's Ray and get no script."""
    head = lab.script_on("head")
    assert head is not None and "--nnodes" not in head and "bench.sim" in head, head
    for w in lab.sim.workers:
        assert lab.script_on(w) is None, w
        log = lab.sim.node_run(w, "podman logs vllm_node").stdout
        assert f"ray start --address={lab.fabric[0]}:{port}" in log, (w, log)


def _assert_no_ray(lab: Lab, port: int) -> None:
    """no-Ray: every node's own script, the backend flag gone, its rank appended."""
    n = len(lab.sim.node_names)
    for rank, node in enumerate(lab.sim.node_names):
        script = lab.script_on(node)
        assert script is not None, node
        tail = f"--nnodes {n} --node-rank {rank} --master-addr {lab.fabric[0]} --master-port {port}"
        assert script.rstrip().endswith(tail + (" --headless" if rank else "")), (node, script)
        assert "--distributed-executor-backend" not in script, (node, script)
        cmdlines = lab.sim.node_run(node, "podman exec vllm_node ps -o args").stdout
        assert tail in cmdlines, (node, cmdlines)  # a process in the container carries it


@pytest.mark.parametrize("generation", GENS)
def test_both_models_run_the_checked_image_on_the_backend_their_recipe_expects(
        four: Lab, tmp_path: Path, generation: str) -> None:
    lab = four
    lab.reset(generation)
    cfg = lab.config(tmp_path)
    # qwen's recipe names another container and no backend (written for Ray); -t runs the checked one
    lab.recipe("qwen", container="gx10-not-built", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1})
    r = inv(cfg, "launch", "--model", "qwen", "--timeout", "2")
    _launched(lab, r, "vllm-node-mimo")
    flag = {"seed": "", "current": " (--ray)"}[generation]
    assert f"launcher: {generation} generation (" in r.stdout and f"; qwen on ray{flag}\n" in r.stdout, r.stdout
    assert "-t vllm-node-mimo:latest" in r.stdout
    _assert_ray(lab, 29510)
    # the rendered serve command is visible inside the head's container (provenance reads it there)
    assert "bench.sim" in lab.sim.node_run("head", "podman exec vllm_node ps -o args").stdout

    # nemotron's recipe asks for the torch-distributed backend: no-Ray on either generation
    lab.recipe("nemotron", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1},
               command_extra="--distributed-executor-backend mp")
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    _launched(lab, r, "vllm-node")
    flag = {"seed": " (--no-ray)", "current": ""}[generation]
    assert f"; nemotron on no-ray{flag}\n" in r.stdout, r.stdout
    _assert_no_ray(lab, 29520)
    rec = harness.record(lab.sim)
    assert rec and rec["backend"] == "no-ray" and rec["launcher"] == generation

    # launcher.backend overrides what the recipe says
    r = inv(lab.config(tmp_path / "forced", launcher={"backend": "ray"}), "launch", "--model", "nemotron",
            "--timeout", "2")
    _launched(lab, r, "vllm-node")
    _assert_ray(lab, 29520)


@pytest.mark.parametrize("generation", GENS)
def test_the_launchers_env_container_name_is_followed_by_status_logs_and_stop(
        four: Lab, tmp_path: Path, generation: str) -> None:
    lab = four
    lab.reset(generation)
    lab.env_file(**lab.default_env(CONTAINER_NAME="gx_serve"))
    lab.recipe("nemotron", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1})
    cfg = lab.config(tmp_path)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the launcher's .env names its containers gx_serve (not vllm_node): following it" in r.stdout
    for node, found in harness.containers(lab.sim).items():
        assert len(found) == 1 and found[0].startswith("gx_serve "), (node, found)
    s = inv(cfg, "status")
    assert "serving: nemotron" in s.stdout and "health: ready (HTTP 200)" in s.stdout, s.stdout
    logs = inv(cfg, "logs", "--node", "w1", "--lines", "3")
    assert logs.returncode == 0 and "== w1: gx_serve, last 3 lines ==" in logs.stdout, logs.stdout + logs.stderr
    stop = inv(cfg, "stop")
    assert stop.returncode == 0 and "gx_serve on head" in stop.stdout, stop.stdout
    assert all(found == [] for found in harness.containers(lab.sim).values())


@pytest.mark.parametrize("generation", GENS)
def test_a_failed_launch_names_the_launchers_error_and_leaves_no_record(
        four: Lab, tmp_path: Path, generation: str) -> None:
    lab = four
    lab.reset(generation)
    lab.env_file(**lab.default_env(ETH_IF="", IB_IF=""))  # autodiscover.sh then needs ibdev2netdev
    cfg = lab.config(tmp_path)
    r = inv(cfg, "launch", "--model", "qwen", "--timeout", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the launcher failed on head: Error: ibdev2netdev not found. Cannot auto-detect interfaces." in r.stderr
    assert harness.record(lab.sim) is None
    s = inv(cfg, "status")
    assert "not ready yet" not in s.stdout and "serving: qwen" not in s.stdout, s.stdout


@pytest.mark.parametrize("generation", GENS)
def test_a_missing_image_is_refused_before_the_launcher_runs(four: Lab, tmp_path: Path, generation: str) -> None:
    lab = four
    lab.reset(generation)
    # the seed's relaunch wrapper runs the recipe's own container: it must be the checked image
    lab.recipe("qwen", container="gx10-not-built")
    r = inv(lab.config(tmp_path, relaunch=True), "launch", "--model", "qwen", "--timeout", "1")
    assert r.returncode == 1
    assert "runs container 'gx10-not-built', but the image checked is vllm-node-mimo:latest" in r.stderr
    assert "nothing was started" in r.stderr
    assert "Recipe:" not in r.stdout and "EOFError" not in r.stdout + r.stderr  # the launcher never ran
    assert harness.record(lab.sim) is None
    # what the wrapper would have hit: run-recipe's bare input() with stdin closed
    direct = lab.sim.node_run("head", f"cd {REPO} && ./run-recipe.sh {harness.RECIPES['qwen']} -d < /dev/null")
    assert direct.returncode == 1
    assert "Build now? [y/N]" in direct.stdout and "EOFError" in direct.stderr, direct.stdout + direct.stderr


def test_the_head_is_local_ip_anywhere_and_a_running_cluster_still_gets_the_exec(four: Lab, tmp_path: Path) -> None:
    lab = four
    lab.reset("seed")
    lab.env_file(**lab.default_env(CLUSTER_NODES=",".join(lab.fabric[1:] + lab.fabric[:1])))  # head listed last
    lab.recipe("nemotron", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1})
    run = f"cd {REPO} && ./run-recipe.sh {harness.RECIPES['nemotron']} -d -t vllm-node < /dev/null"
    first = lab.sim.node_run("head", run)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Head Node: {lab.fabric[0]}" in first.stdout
    again = lab.sim.node_run("head", run)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Cluster containers are already running. Skipping launch." in again.stdout
    assert "Executing command on head node (rank 0):" in again.stdout  # the exec still runs
    lab.env_file(**lab.default_env(LOCAL_IP="10.255.0.99"))
    off = lab.sim.node_run("head", run)
    assert off.returncode == 1
    assert f"Error: Local IP (10.255.0.99) is not in the list of nodes ({','.join(lab.fabric)})." in off.stdout


def test_mods_run_in_every_container_and_a_failing_mod_stops_the_launch(four: Lab, tmp_path: Path) -> None:
    lab = four
    lab.reset("current")
    lab.sim.node_run("head", f"mkdir -p {REPO}/mods/ok {REPO}/mods/bad && "
                     f"printf '#!/bin/sh\\nhostname > /workspace/mod-ran\\n' > {REPO}/mods/ok/run.sh && "
                     f"printf '#!/bin/sh\\necho patch failed >&2\\nexit 3\\n' > {REPO}/mods/bad/run.sh", check=True)
    lab.recipe("nemotron", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1}, mods=["mods/ok"])
    cfg = lab.config(tmp_path)
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    for node in lab.sim.node_names:
        ran = lab.sim.node_run(node, "podman exec vllm_node cat /workspace/mods/ok/run.sh /workspace/mod-ran")
        assert ran.returncode == 0 and node in ran.stdout, (node, ran.stdout, ran.stderr)
    lab.recipe("nemotron", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1}, mods=["mods/bad"])
    r = inv(cfg, "launch", "--model", "nemotron", "--timeout", "2")
    assert r.returncode == 1
    assert "the launcher failed on head: Error: Patch script failed on" in r.stderr, r.stderr
    assert harness.record(lab.sim) is None


def test_jan26_has_no_run_recipe_and_is_refused_before_anything_runs(four: Lab, tmp_path: Path) -> None:
    lab = four
    lab.reset("jan26")
    r = inv(lab.config(tmp_path), "launch", "--model", "qwen")
    assert r.returncode == 1
    assert "jan26 generation" in r.stderr and "has no run-recipe.py" in r.stderr and "nothing was started" in r.stderr
    assert harness.record(lab.sim) is None


# -- rebuild, distribute, launch ------------------------------------------------------------------
def _pipeline(lab: Lab, tmp_path: Path, generation: str) -> None:
    sim = lab.sim
    lab.reset(generation)
    harness.install_wheels(sim, generation, list(defaults()["wheels"]))
    harness.each_node(sim, "podman rmi -f vllm-node vllm-node-mimo vllm-node-tf5 >/dev/null 2>&1; true")
    sim.build_test_image("head", BASE)
    lab.recipe("qwen", defaults={"port": 8000, "host": "0.0.0.0", "load_delay": 1})
    cfg = lab.config(tmp_path)
    tf5 = inv(cfg, "rebuild", "--image", "vllm-node"), inv(cfg, "rebuild", "--image", "vllm-node-tf5")
    for step in tf5:
        assert step.returncode == 0, step.stdout + step.stderr
    r = inv(cfg, "rebuild", "distribute", "launch", "--model", "qwen", "--timeout", "2", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qwen is serving Qwen/Qwen3.5-397B-A17B-FP8" in r.stdout
    _launched(lab, subprocess.CompletedProcess([], 0), "vllm-node-mimo")
    _assert_ray(lab, 29510)
    ids = {n: sim.image_id(n, "vllm-node-mimo") for n in sim.node_names}
    assert len(set(ids.values())) == 1, ids
    rec = harness.record(sim)
    assert rec and str(rec["image_id"]).split(":")[-1][:12] == ids["head"][:12], (rec, ids)


@pytest.mark.parametrize("generation", GENS)
def test_rebuild_distribute_launch_on_four_nodes(four: Lab, tmp_path: Path, generation: str) -> None:
    _pipeline(four, tmp_path, generation)


@pytest.mark.parametrize("generation", GENS)
def test_rebuild_distribute_launch_on_a_pair(two: Lab, tmp_path: Path, generation: str) -> None:
    _pipeline(two, tmp_path, generation)
