"""`inv doctor` and `inv rebuild` against each generation of the launcher (seed, jan26, current),
as the stand-in reproduces it (testbeds/launcher/generations/, docs/launcher.md), over real SSH
with real podman on the simulated cluster. One cluster, one module fixture; each test installs
the generation it needs as a dated git checkout."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.config import defaults
from testbeds.clustertool import inv, tool_config
from testbeds.launcher import harness
from testbeds.simcluster import SimCluster

pytestmark = pytest.mark.cluster

REPO = harness.REPO
GENS = ("seed", "jan26", "current")
NODE = "vllm-node"
BASE = "gx10-standin/base"
SAVED = "gx10-gen-saved"
PRESENT, MISSING = "gx10-gen/present", "gx10-gen/missing"  # recipe containers: everywhere / head only
PINNED = list(defaults()["wheels"])
VLLM = next(w for w in PINNED if w.startswith("vllm-"))


def _heads(sim: SimCluster, cmd: str) -> str:
    return sim.node_run("head", cmd, check=True).stdout


@pytest.fixture(scope="module")
def sim(simcluster: SimCluster) -> Iterator[SimCluster]:
    """The base image and the two recipe-container images; the head's repo and vllm-node as
    another module left them are set aside and put back."""
    for n in simcluster.node_names:
        simcluster.node_run(n, f"podman image exists {NODE} && podman tag {NODE} {SAVED}:{NODE}; "
                               f"podman rmi -f {NODE} >/dev/null 2>&1; true")
    simcluster.node_run("head", f"if [ -e {REPO} ]; then rm -rf {REPO}.gen-saved && mv {REPO} {REPO}.gen-saved; fi",
                        check=True)
    simcluster.build_test_image("head", BASE)
    simcluster.build_test_image("head", PRESENT, vllm="0.0.1")
    simcluster.distribute_test_image(PRESENT)
    simcluster.build_test_image("head", MISSING, vllm="0.0.2")
    yield simcluster
    for n in simcluster.node_names:
        simcluster.node_run(n, f"podman rmi -f {NODE} {PRESENT} {MISSING} >/dev/null 2>&1; "
                               f"if podman image exists {SAVED}:{NODE}; then podman tag {SAVED}:{NODE} {NODE} && "
                               f"podman rmi {SAVED}:{NODE}; fi >/dev/null 2>&1; podman image prune -f >/dev/null 2>&1; "
                               "rm -rf /root/.gx10-ops; true")
    simcluster.node_run("head", f"rm -rf {REPO}; podman rmi -f {BASE} >/dev/null 2>&1; "
                        f"if [ -e {REPO}.gen-saved ]; then mv {REPO}.gen-saved {REPO}; fi", check=True)


@dataclass
class Site:
    sim: SimCluster
    tmp: Path
    generation: str

    def config(self, **launcher: Any) -> Path:
        over: dict[str, Any] = {"launcher": launcher} if launcher else {}
        return tool_config(self.sim, self.tmp / f"cfg{len(list(self.tmp.iterdir()))}", **over)

    def inv(self, *args: str, **launcher: Any) -> subprocess.CompletedProcess[str]:
        return inv(self.config(**launcher), *args, timeout=600)

    def write_env(self, **keys: str) -> None:
        _heads(self.sim, f"cat > {REPO}/.env <<'EOF'\n" + "".join(f"{k}={v}\n" for k, v in keys.items()) + "EOF")

    def hashes(self) -> dict[str, str]:
        out = _heads(self.sim, f"cd {REPO} && for w in {' '.join(PINNED)}; do "
                     f"f=$(find wheels .wheel-cache -name \"$w\" 2>/dev/null | head -1); "
                     "echo \"$w $(sha256sum < \"$f\" | cut -c1-64)\"; done")
        return dict(line.split() for line in out.splitlines())

    def commit(self) -> str:
        return _heads(self.sim, f"git -C {REPO} rev-parse HEAD").strip()


def _install(sim: SimCluster, tmp: Path, generation: str) -> Site:
    sim.node_run("head", f"rm -rf /root/.gx10-ops; podman rmi -f {NODE} >/dev/null 2>&1; true")
    harness.install_repo(sim, generation, interfaces=False)  # as a new user writes .env: no ETH_IF/IB_IF
    harness.install_wheels(sim, generation, PINNED)
    for model, container in (("qwen", MISSING), ("nemotron", PRESENT)):
        path = harness.RECIPES[model]
        data = yaml.safe_load((harness.LAUNCHER / path).read_text())
        data["container"] = container
        sim.node_run("head", f"cat > {REPO}/{path}", input=yaml.safe_dump(data), check=True)
    return Site(sim, tmp, generation)


def _row(out: str, node: str, check: str) -> str:
    """The doctor table's one row for `check` on `node`."""
    pattern = re.compile(rf"^(OK|WARN|FAIL)\s+{re.escape(node)}\s+{re.escape(check)}\s{{2,}}")
    rows = [line for line in out.splitlines() if pattern.match(line)]
    assert len(rows) == 1, (node, check, out)
    return rows[0]


# -- doctor ------------------------------------------------------------------------------------
@pytest.mark.parametrize("generation", GENS)
def test_doctor_names_the_generation_and_catches_what_its_scripts_need(
        sim: SimCluster, tmp_path: Path, generation: str) -> None:
    site = _install(sim, tmp_path, generation)
    fabric = [sim.nodes[n].fabric for n in sim.node_names]
    # as harness.install writes it: no ETH_IF / IB_IF, and the head has no ibdev2netdev
    r = site.inv("doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    row = _row(r.stdout, "head", "launcher")
    assert row.startswith("OK") and f"{generation} generation ({site.commit()[:12]}, " in row, row
    assert harness.GENERATION_DATES[generation][:10] in row, row
    missing = [_row(r.stdout, w, "recipe images") for w in sim.workers]
    assert all(m.startswith("FAIL") and f"no {MISSING} (the container: of qwen's recipe)" in m
               and "inv distribute" in m for m in missing), missing
    assert _row(r.stdout, "head", "recipe images").startswith("OK")
    assert _row(r.stdout, "head", "launcher scripts").startswith("OK")
    if generation == "jan26":
        # 74c02c3 reads no .env: interfaces come from autodiscover.sh, which needs ibdev2netdev
        row = _row(r.stdout, "head", "launcher interfaces")
        assert row.startswith("FAIL") and "reads no .env" in row and "ibdev2netdev not found" in row, row
        assert _row(r.stdout, "head", "run-recipe").startswith("FAIL")
        return
    row = _row(r.stdout, "head", ".env ETH_IF/IB_IF")
    assert row.startswith("FAIL") and "ETH_IF and IB_IF not set" in row and "ibdev2netdev not found" in row, row
    assert row.rstrip().endswith(f"IB_IF=<RoCE device> in {REPO}/.env on head"), row
    assert _row(r.stdout, "head", ".env LOCAL_IP").startswith("OK")
    assert _row(r.stdout, "head", ".env CLUSTER_NODES").startswith("OK")

    site.write_env(CLUSTER_NODES=",".join(fabric[1:] + ["10.255.0.99"]), LOCAL_IP="10.255.0.99",
                   ETH_IF="enp1s0f0np0", IB_IF="rocep1s0f0", CONTAINER_NAME="vllm_spark", MASTER_PORT="29501")
    r = site.inv("doctor")
    assert r.returncode == 1
    row = _row(r.stdout, "head", ".env LOCAL_IP")
    assert row.startswith("FAIL") and "LOCAL_IP=10.255.0.99 is not one of the cluster's nodes" in row, row
    assert f"set LOCAL_IP={fabric[0]}" in row
    row = _row(r.stdout, "head", ".env CLUSTER_NODES")
    assert row.startswith("FAIL") and "lists 10.255.0.99, not a node of ours" in row and f"head ({fabric[0]})" in row
    assert _row(r.stdout, "head", ".env ETH_IF/IB_IF").startswith("OK")
    row = _row(r.stdout, "head", ".env CONTAINER_NAME")
    assert row.startswith("WARN") and "cluster.container_name: vllm_spark" in row


def test_doctor_checks_the_pin_the_recipe_files_and_the_helpers(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "seed")
    _heads(sim, f"cd {REPO} && rm {harness.RECIPES['qwen']} resolve-model.py && chmod -x launch-cluster.sh")
    r = site.inv("doctor", pin_commit="0123456789abcdef")
    row = _row(r.stdout, "head", "launcher pin")
    assert row.startswith("FAIL") and site.commit() in row, row
    row = _row(r.stdout, "head", "recipe qwen")
    assert row.startswith("FAIL") and f"{REPO}/{harness.RECIPES['qwen']} does not exist" in row, row
    rows = [line for line in r.stdout.splitlines() if " launcher scripts " in line]
    assert any(x.startswith("FAIL") and "lacks resolve-model.py" in x for x in rows), rows
    assert any(x.startswith("FAIL") and "not executable: launch-cluster.sh" in x and "chmod +x launch-cluster.sh" in x
               for x in rows), rows
    ok = site.inv("doctor", pin_commit=site.commit()[:8])
    assert _row(ok.stdout, "head", "launcher pin").startswith("OK")


# -- rebuild -------------------------------------------------------------------------------------
def test_seed_rebuild_keeps_the_pinned_wheels_over_a_newer_release(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "seed")
    newer = "vllm-0.23.0rc1.dev5+g1111111.d20260615.cu132-cp312-cp312-linux_aarch64.whl"
    harness.publish_release(sim, "vllm", [newer])  # the release moved on since the pin
    before = site.hashes()
    r = site.inv("rebuild", "--image", NODE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building vllm-node:latest on head: ./build-and-copy.sh -t vllm-node" in r.stdout
    assert "--use-wheels" not in r.stdout.split("building vllm-node:latest", 1)[1].splitlines()[0]
    assert "Local vllm wheels are newer than release 'prebuilt-vllm-current'" in r.stdout
    assert "Could not fetch release assets for 'prebuilt-flashinfer-current'" in r.stdout
    assert "pinned wheels unchanged by the build (4, sha256 checked)" in r.stdout
    assert "vllm 0.22.1rc1.dev124+gace95c9cf.d20260603" in r.stdout  # verified: built from the pin
    assert site.hashes() == before
    assert _heads(sim, f"ls {REPO}/wheels").split().count(newer) == 0


def test_a_build_that_replaces_a_pinned_wheel_fails_naming_it(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "seed")
    newer = "vllm-0.23.0rc1.dev5+g1111111.d20260615.cu132-cp312-cp312-linux_aarch64.whl"
    harness.publish_release(sim, "vllm", [newer])
    before = site.hashes()
    r = site.inv("rebuild", "--image", NODE, build_args={"seed": ["--force-vllm-download"]})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Force downloading vllm wheels from release 'prebuilt-vllm-current'" in r.stdout
    assert f"changed the pinned wheels: {VLLM} was removed; {VLLM} now has {newer} beside it in wheels/" in r.stderr
    assert "The pinned files were put back" in r.stderr and "nothing was verified or distributed" in r.stderr
    assert site.hashes() == before  # put back from the hard link
    assert "verifying" not in r.stdout


def test_seed_refuses_use_wheels_before_anything_runs(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "seed")
    r = site.inv("rebuild", "--image", NODE, build_args={"seed": ["--use-wheels"]})
    assert r.returncode == 1
    assert "passes --use-wheels to build-and-copy.sh, which this launcher (seed," in r.stderr
    assert '"Unknown parameter passed: --use-wheels"' in r.stderr and "nothing was built" in r.stderr
    assert "building" not in r.stdout


def test_pin_commit_mismatch_is_refused_before_anything_runs(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "current")
    cfg = site.config(pin_commit="0123456789abcdef")
    r = inv(cfg, "rebuild", "--image", NODE)
    assert r.returncode == 1
    assert f"launcher.pin_commit is 0123456789abcdef but {REPO} on head is at {site.commit()}" in r.stderr
    assert "nothing was built" in r.stderr
    log = (cfg.parent / "results" / "operations.log").read_text()
    assert "./build-and-copy.sh" not in log and "sha256sum" not in log and "touch -c" not in log, log
    assert sim.node_run("head", f"podman image exists {NODE}").returncode != 0
    ok = inv(site.config(pin_commit=site.commit()[:10]), "rebuild", "--image", NODE, "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_jan26_builds_from_source_and_never_passes_use_wheels_unasked(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "jan26")
    _heads(sim, f"echo 0.22.1rc1.dev124+gace95c9cf.d20260603 > {REPO}/standin-vllm-source")  # VLLM_REF's build
    r = site.inv("rebuild", "--image", NODE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building vllm-node:latest on head: ./build-and-copy.sh -t vllm-node" in r.stdout
    assert "[head] Building vLLM from source" in r.stdout
    assert "the pinned wheels are not used" in r.stdout
    # asked for: --use-wheels here means nightly vLLM from the internet, which verify catches
    r = site.inv("rebuild", "--image", NODE, build_args={"jan26": ["--use-wheels"]})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "installs nightly vLLM from the internet (Dockerfile.wheels)" in r.stdout
    assert "[head] Using pre-built vLLM wheels (mode: nightly)" in r.stdout
    assert "0.15.0rc2.dev85+g5e1d3c0a7" in r.stdout + r.stderr and "failed verification" in r.stderr


def test_current_builds_from_the_wheel_cache_and_quotes_the_launchers_error(sim: SimCluster, tmp_path: Path) -> None:
    site = _install(sim, tmp_path, "current")
    harness.publish_release(sim, "flashinfer", ["flashinfer_python-0.6.11-py3-none-any.whl"], newer=False)
    before = site.hashes()
    r = site.inv("rebuild", "--image", NODE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "building vllm-node:latest on head: ./build-and-copy.sh --use-wheels -t vllm-node" in r.stdout
    assert "[head] Using vLLM wheel profile: regular (./.wheel-cache/vllm/regular)" in r.stdout
    assert "Local flashinfer wheels are newer than release" in r.stdout
    assert "pinned wheels unchanged by the build (4, sha256 checked)" in r.stdout
    assert site.hashes() == before
    # without --use-wheels this generation pulls its prebuilt runner: the error is the launcher's line
    r = site.inv("rebuild", "--image", NODE, build_args={"current": []})
    assert r.returncode == 1
    assert "pulls its prebuilt runner image instead of building from the pinned wheels" in r.stdout
    assert "failed (exit 1: Error response from daemon: Get \"https://registry-1.docker.io/v2/\"" in r.stderr, r.stderr
    # the wheel check finds the current layout, and names where it looked
    _heads(sim, f"rm {REPO}/.wheel-cache/vllm/regular/{VLLM}")
    r = site.inv("rebuild", "--image", NODE)
    assert r.returncode == 1 and f"missing: {VLLM}" in r.stderr and ".wheel-cache/vllm/regular" in r.stderr
