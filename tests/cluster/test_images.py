"""Container images end to end: rebuild through a stand-in launcher, verify, distribute over the
fabric, backup/restore and prune, with real podman on the simulated nodes over real SSH."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.config import defaults
from cluster.images.prune import parse_age, parse_created
from cluster.images.verify import at_least, same_build
from cluster.images.wheels import wheel_problems
from testbeds.clustertool import PROJECT, inv, procs_on, tool_config
from testbeds.launcher import harness
from testbeds.simcluster import SimCluster

pytestmark = pytest.mark.cluster

REPO = "/root/spark-vllm-docker"  # cluster.launcher_repo in testbeds/clustertool.py
NODE, TF5, MIMO = "vllm-node", "vllm-node-tf5", "vllm-node-mimo"
MINE = (NODE, TF5, MIMO, "gx10-img/old", "gx10-img/dangling", "gx10-img/used")
BASE = "gx10-standin/base"
CONTAINER = "gx10-img-c"
# Where another module's images under our names wait meanwhile: `saved:NAME`, because podman
# resolves a short name like `vllm-node` to any local `.../vllm-node` too.
SAVED = "gx10-images-saved"
REGRESSED = "the rebuild silently regressed; do not distribute"


def _each_node(sim: SimCluster, cmd: str) -> None:
    with ThreadPoolExecutor(len(sim.node_names)) as pool:
        list(pool.map(lambda n: sim.node_run(n, cmd, timeout=300), sim.node_names))


def wipe(sim: SimCluster) -> None:
    """Remove what these tests create (by name) and the dangling images their builds leave."""
    names = " ".join(MINE)
    _each_node(sim, f"podman ps -aq --filter name={CONTAINER} | xargs -r podman rm -f >/dev/null 2>&1; "
                    f"podman rmi --ignore {names} "
                    ">/dev/null 2>&1; podman image prune -f >/dev/null 2>&1; rm -rf /root/.gx10-ops; true")


def reset_launcher(sim: SimCluster, generation: str = "seed") -> None:
    """A fresh stand-in checkout of `generation` with the pinned wheels where it keeps them."""
    harness.install_repo(sim, generation)
    harness.install_wheels(sim, generation, defaults()["wheels"])


@pytest.fixture(scope="module")
def launcher(simcluster: SimCluster) -> Iterator[SimCluster]:
    """The stand-in launcher repo and its base image on the head, for this module only. What
    another module may have left under the same names (repo, image tags) is set aside and put back."""
    live = " ".join((NODE, TF5, MIMO))
    _each_node(simcluster, f"for i in {live}; do podman image exists $i && podman tag $i {SAVED}:$i; done; true")
    simcluster.node_run("head", f"if [ -e {REPO} ]; then rm -rf {REPO}.saved && mv {REPO} {REPO}.saved; fi", check=True)
    wipe(simcluster)
    reset_launcher(simcluster)
    simcluster.build_test_image("head", BASE)
    yield simcluster
    wipe(simcluster)
    simcluster.node_run("head", f"rm -rf {REPO}; podman rmi -f {BASE} >/dev/null 2>&1; podman image prune -f "
                        f">/dev/null 2>&1; if [ -e {REPO}.saved ]; then mv {REPO}.saved {REPO}; fi", check=True)
    _each_node(simcluster, f"for i in {live}; do if podman image exists {SAVED}:$i; then podman tag {SAVED}:$i $i "
                           f"&& podman rmi {SAVED}:$i; fi; done >/dev/null; true")


@dataclass
class Env:
    sim: SimCluster
    cfg: Path
    tmp: Path

    def inv(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return inv(self.cfg, *args, timeout=timeout)

    def ids(self, tag: str) -> dict[str, str | None]:
        out = {}
        for n in self.sim.node_names:
            r = self.sim.node_run(n, f"podman image inspect --format '{{{{.Id}}}}' {tag} 2>/dev/null")
            out[n] = r.stdout.strip() or None
        return out

    def record(self, image_id: str) -> dict[str, object] | None:
        r = self.sim.node_run("head", f"cat /root/.gx10-ops/verified/{image_id}.json 2>/dev/null")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def log(self) -> str:
        path = self.tmp / "results" / "operations.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def env(launcher: SimCluster, tmp_path: Path) -> Env:
    """Every test starts from no vllm-node* image anywhere and a good stand-in launcher."""
    wipe(launcher)
    reset_launcher(launcher)
    return Env(launcher, tool_config(launcher, tmp_path), tmp_path)


# -- pure helpers ------------------------------------------------------------------------------
def test_version_and_time_helpers() -> None:
    assert at_least("5.1.0", "5.0") and at_least("5.0.0rc1", "5.0") and not at_least("4.57.1", "5.0")
    assert same_build("0.22.1rc1.dev124+gace95c9cf.d20260603.cu132", "0.22.1rc1.dev124+gace95c9cf.d20260603")
    assert not same_build("0.22.1rc1.dev1245", "0.22.1rc1.dev124")
    assert parse_created("2026-01-01 00:00:00 +0000 UTC") == 1_767_225_600
    assert parse_created("2026-01-01T01:00:00.123456789+01:00") == 1_767_225_600
    assert parse_age("24h") == parse_age("1d") == parse_age("24") == 86_400
    problems = wheel_problems(["vllm-0.22-cp312.whl", "flashinfer_cubin-0.6.12-py3.whl"],
                              {"vllm-0.21-cp312.whl": 10, "flashinfer_cubin-0.6.12-py3.whl": 0})
    assert problems == ["stale: wheels/ has vllm-0.21-cp312.whl but the config pins vllm-0.22-cp312.whl",
                        "empty: flashinfer_cubin-0.6.12-py3.whl is 0 bytes (an interrupted download?)"]


# -- verify --------------------------------------------------------------------------------------
def test_verify_passes_a_good_image_and_fails_a_regressed_one(env: Env) -> None:
    good = env.sim.build_test_image("head", NODE)
    bad = env.sim.build_test_image("head", MIMO, torch="2.10.0+cpu", cuda=None)
    ok = env.inv("verify", "--image", NODE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{NODE}:latest on head (ID {good[:12]}): OK" in ok.stdout
    assert "OK    torch 2.11.0+cu130, CUDA 13.0" in ok.stdout
    failed = env.inv("verify", "--image", MIMO)
    assert failed.returncode == 1
    assert f"torch 2.10.0+cpu (CUDA None): {REGRESSED}" in failed.stdout
    assert REGRESSED in failed.stderr and "vllm-node-mimo:latest on head" in failed.stderr
    # recorded by image ID on the head, the pass and the failure
    assert (env.record(good) or {}).get("ok") is True
    assert (env.record(bad) or {}).get("ok") is False
    # the probe ran the seed's command against the ID itself
    assert f"run --rm --entrypoint python3 {good} -c 'import torch; print(torch.__version__, torch.version.cuda)'" \
        in env.log()


def test_verify_names_old_transformers_and_nodes_lacking_the_image(env: Env) -> None:
    env.sim.build_test_image("head", MIMO, transformers="4.57.1")
    r = env.inv("verify", "--image", MIMO, "--node", "all")
    assert r.returncode == 1
    assert "transformers 4.57.1 < 5.0" in r.stdout
    for w in ("w1", "w2", "w3"):
        assert f"{w} has no {MIMO}:latest" in r.stdout


# -- distribute ----------------------------------------------------------------------------------
def test_distribute_refuses_a_regressed_image(env: Env) -> None:
    env.sim.build_test_image("head", MIMO, torch="2.10.0+cpu", cuda=None)
    r = env.inv("distribute", "--image", MIMO)
    assert r.returncode == 1
    assert "was never verified: verifying on head first" in r.stdout
    assert "refusing to distribute vllm-node-mimo:latest" in r.stderr and REGRESSED in r.stderr
    assert all(env.ids(MIMO)[w] is None for w in ("w1", "w2", "w3"))
    again = env.inv("distribute", "--image", MIMO)  # now refused from the record
    assert again.returncode == 1 and "it failed verification at" in again.stderr


def test_distribute_streams_to_every_worker_and_skips_current_ones(env: Env) -> None:
    head_id = env.sim.build_test_image("head", NODE)
    env.sim.distribute_test_image(NODE, nodes=["w2"])
    r = env.inv("distribute", "--image", NODE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{NODE}:latest: up to date on w2" in r.stdout, r.stdout
    assert "streaming" in r.stdout and "to w1, w3 over the fabric" in r.stdout, r.stdout
    assert set(env.ids(NODE).values()) == {head_id}
    # one save on the head, piped (no tar), to the fabric addresses of w1 and w3 only
    stream = [line for line in env.log().splitlines() if " head exit=0 " in line and "tee -p" in line]
    assert len(stream) == 1, env.log()
    assert env.sim.nodes["w1"].fabric in stream[0] and env.sim.nodes["w3"].fabric in stream[0]
    assert env.sim.nodes["w2"].fabric not in stream[0] and ".tar" not in stream[0]
    before = env.log()
    rerun = env.inv("distribute", "--image", NODE)
    assert rerun.returncode == 0 and "every worker is up to date" in rerun.stdout, rerun.stdout + rerun.stderr
    # the evidence is what ran, not the message: no save, stream or load on any node
    ran = env.log()[len(before):]
    assert ran and not any(w in ran for w in ("docker save", "tee -p", "docker load")), ran


def _loading_on(sim: SimCluster, node: str) -> bool:
    """A `podman load` runs inside `node` (its network namespace), i.e. the stream reached it."""
    return any(argv.split()[0].endswith("podman") and "load" in argv.split()
               for argv in procs_on(sim, node, b"podman", b"load"))


def test_worker_lost_mid_stream_is_named_and_a_rerun_finishes(env: Env) -> None:
    head_id = env.sim.build_test_image("head", NODE, extra_bytes=64 * 1024**2)
    assert env.inv("verify", "--image", NODE).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(env.cfg), "distribute", "--image", NODE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _loading_on(env.sim, "w3"):
            assert proc.poll() is None and time.monotonic() < deadline, "the stream never reached w3"
            time.sleep(0.05)
        time.sleep(0.3)
        env.sim.stop_sshd("w3")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        env.sim.start_sshd("w3")
    assert proc.returncode == 1, out + err
    assert "distribute failed on w3:" in err and "w3: vllm-node:latest: docker load over the fabric exited" in err, err
    ids = env.ids(NODE)
    assert ids["w1"] == ids["w2"] == head_id and ids["w3"] is None
    rerun = env.inv("distribute", "--image", NODE)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "up to date on w1, w2" in rerun.stdout and "to w3 over the fabric" in rerun.stdout
    assert set(env.ids(NODE).values()) == {head_id}


# -- backup and restore ------------------------------------------------------------------------
def test_backup_then_restore_onto_a_node_that_lost_the_image(env: Env) -> None:
    head_id = env.sim.build_test_image("head", NODE)
    env.sim.distribute_test_image(NODE, nodes=["w2"])
    backups = env.tmp / "backups"
    dry = env.inv("backup", "--image", NODE, "--dry-run")
    assert dry.returncode == 0 and "[dry-run] control: ssh " in dry.stdout and "docker save" in dry.stdout
    assert not backups.exists() or not any(backups.iterdir())
    r = env.inv("backup", "--image", NODE)
    assert r.returncode == 0, r.stderr
    meta = json.loads((backups / f"{NODE}.json").read_text())
    assert meta["id"] == head_id and meta["bytes"] == (backups / f"{NODE}.tar").stat().st_size
    assert sorted(p.name for p in backups.iterdir()) == [f"{NODE}.json", f"{NODE}.tar"]
    tar = backups / f"{NODE}.tar"
    stamp = (tar.stat().st_ino, tar.stat().st_mtime_ns, tar.stat().st_ctime_ns)
    before = env.log()
    again = env.inv("backup", "--image", NODE)
    assert again.returncode == 0 and "already holds ID" in again.stdout, again.stdout + again.stderr
    assert (tar.stat().st_ino, tar.stat().st_mtime_ns, tar.stat().st_ctime_ns) == stamp  # not rewritten
    assert "docker save" not in env.log()[len(before):]

    env.sim.node_run("w2", f"podman rmi {NODE}", check=True)  # the seed's pitfall struck w2
    assert env.inv("restore", "--image", NODE, "--node", "w2", "--dry-run").returncode == 0
    assert env.ids(NODE)["w2"] is None
    r = env.inv("restore", "--image", NODE, "--node", "w2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert env.ids(NODE)["w2"] == head_id
    before = env.log()
    again = env.inv("restore", "--image", NODE, "--node", "w2")
    assert again.returncode == 0 and "already holds" in again.stdout, again.stdout + again.stderr
    assert "docker load" not in env.log()[len(before):]

    other = env.sim.build_test_image("w3", NODE, vllm="0.0.9")  # a different image under the tag
    refused = env.inv("restore", "--image", NODE, "--node", "w3")
    assert refused.returncode == 1 and "Pass --force" in refused.stderr
    assert env.ids(NODE)["w3"] == other
    assert env.inv("restore", "--image", NODE, "--node", "w3", "--force").returncode == 0
    assert env.ids(NODE)["w3"] == head_id


# -- prune ---------------------------------------------------------------------------------------
def test_prune_never_removes_live_images_or_what_a_container_uses(env: Env) -> None:
    sim = env.sim
    # Other modules' images on w1 are not this test's to prune: a stopped container pins each.
    foreign = sim.node_run("w1", "podman images -q --no-trunc", check=True).stdout.split()
    for i, image in enumerate(foreign):
        sim.node_run("w1", f"podman create --name {CONTAINER}-keep-{i} {image} true", check=True)
    # created 2026-01-01: old, and no container uses it (a spec of its own: no other image shares its ID)
    live = sim.build_test_image("w1", NODE, transformers="4.99.0")
    base = sim.build_test_image("w1", TF5, vllm="0.0.6")  # base of the live mimo image
    old = sim.build_test_image("w1", "gx10-img/old", vllm="0.0.1")
    dangling = sim.build_test_image("w1", "gx10-img/dangling", vllm="0.0.2")
    sim.build_test_image("w1", "gx10-img/dangling", vllm="0.0.3")  # the tag moves: dangling is untagged
    used = sim.build_test_image("w1", "gx10-img/used", vllm="0.0.4")
    sim.node_run("w1", f"podman create --name {CONTAINER} gx10-img/used true", check=True)  # stopped
    sim.build_test_image("w1", "gx10-img/used", vllm="0.0.5")  # `used` is untagged now, like a rebuild

    def present() -> set[str]:
        out = sim.node_run("w1", "podman images -q --no-trunc", check=True).stdout
        return {i.removeprefix("sha256:") for i in out.split()}

    before = present()
    dry = env.inv("prune", "--node", "w1", "--older-than", "24h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove <none> {dangling[:12]}" in dry.stdout and "would remove gx10-img/old:latest" in dry.stdout
    assert "image rm" in dry.stdout and "prune -a" not in dry.stdout
    assert present() == before

    r = env.inv("prune", "--node", "w1")  # default: dangling only
    assert r.returncode == 0, r.stderr
    assert "keep   vllm-node:latest: live" in r.stdout
    assert f"keep   <none> {used[:12]}: used by container {CONTAINER}" in r.stdout
    after = present()
    assert dangling not in after and {live, base, old, used} <= after

    r = env.inv("prune", "--node", "w1", "--older-than", "24h")
    assert r.returncode == 0, r.stderr
    after = present()
    assert old not in after
    assert {live, base, used} <= after
    assert sim.node_run("w1", f"podman container exists {CONTAINER}").returncode == 0


# -- dry run ---------------------------------------------------------------------------------------
def test_dry_runs_change_nothing(env: Env) -> None:
    head_id = env.sim.build_test_image("head", NODE)
    r = env.inv("distribute", "--image", NODE, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "[dry-run] head: bash -c" in r.stdout and "docker save vllm-node:latest" in r.stdout
    for w in ("w1", "w2", "w3"):
        assert env.sim.nodes[w].fabric in r.stdout
    assert env.ids(NODE) == {"head": head_id, "w1": None, "w2": None, "w3": None}
    assert env.record(head_id) is None  # verified for the plan, but the record was only printed
    b = env.inv("rebuild", "--image", NODE, "--dry-run")
    assert b.returncode == 0, b.stderr
    assert f"[dry-run] head: cd {REPO} && {{ ./build-and-copy.sh -t vllm-node; }} 2>&1" in b.stdout
    assert "launcher on head: seed generation (" in b.stdout
    assert env.ids(NODE)["head"] == head_id


# -- rebuild through the stand-in launcher ----------------------------------------------------------
def test_rebuild_distribute_builds_and_ships_both_live_images(env: Env) -> None:
    r = env.inv("rebuild")
    assert r.returncode == 1
    assert "vllm-node-mimo builds FROM vllm-node-tf5:latest, which is not on head" in r.stderr
    assert "nothing was built" in r.stderr and env.ids(NODE)["head"] is None
    for image in (NODE, TF5):  # the overlay's base is not live: built on purpose, once
        step = env.inv("rebuild", "--image", image)
        assert step.returncode == 0, step.stdout + step.stderr
    r = env.inv("rebuild", "distribute")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "build order: vllm-node -> vllm-node-mimo" in r.stdout
    assert "[head] Building runner image with command: docker build -t vllm-node" in r.stdout
    assert ": FROM vllm-node-tf5:latest" in r.stdout
    assert "OK    transformers 5.1.0" in r.stdout
    assert "head build vllm-node-mimo | STEP 1/3: FROM vllm-node-tf5:latest" in env.log()
    for tag in (NODE, MIMO):
        ids = env.ids(tag)
        assert None not in ids.values() and len(set(ids.values())) == 1, (tag, ids)
    assert env.ids(TF5)["w1"] is None  # not live: stays on the head


def test_regressed_rebuild_stops_before_anything_is_distributed(env: Env) -> None:
    previous = env.sim.build_test_image("head", NODE)
    env.sim.distribute_test_image(NODE)
    env.sim.build_test_image("head", TF5, transformers="4.57.1")
    env.sim.node_run("head", f"echo '2.10.0+cpu None' > {REPO}/standin-torch", check=True)
    r = env.inv("rebuild", "distribute")
    assert r.returncode == 1
    assert REGRESSED in r.stderr and "Nothing was distributed" in r.stderr
    assert f"docker tag {previous} vllm-node:latest" in r.stderr
    assert "streaming" not in r.stdout and "building vllm-node-mimo" not in r.stdout
    ids = env.ids(NODE)
    assert ids["head"] != previous and {ids["w1"], ids["w2"], ids["w3"]} == {previous}
    assert env.ids(MIMO)["head"] is None
    d = env.inv("distribute", "--image", NODE)
    assert d.returncode == 1 and "refusing to distribute" in d.stderr
    assert {env.ids(NODE)[w] for w in ("w1", "w2", "w3")} == {previous}
    assert "torch==2.11.0+cu130" in r.stderr  # the fix names the pinned torch


def test_rebuild_refuses_missing_or_stale_wheels_and_a_copy_step(env: Env) -> None:
    pinned = [w for w in defaults()["wheels"] if w.startswith("vllm-")][0]
    env.sim.node_run("head", f"cd {REPO}/wheels && rm flashinfer_cubin-* && mv '{pinned}' "
                     "vllm-0.21.0-cp312-cp312-linux_aarch64.whl", check=True)
    r = env.inv("rebuild", "--image", NODE)
    assert r.returncode == 1
    assert "missing: flashinfer_cubin-0.6.12-py3-none-any.whl" in r.stderr
    assert f"stale: wheels/ has vllm-0.21.0-cp312-cp312-linux_aarch64.whl but the config pins {pinned}" in r.stderr
    assert "nothing was built" in r.stderr and env.ids(NODE)["head"] is None
    reset_launcher(env.sim)
    cfg = tool_config(env.sim, env.tmp / "copy", images={NODE: {"build": "./build-and-copy.sh --use-wheels -c"}})
    r = inv(cfg, "rebuild", "--image", NODE)
    assert r.returncode == 1 and "asks the launcher to copy (-c)" in r.stderr
    assert env.ids(NODE)["head"] is None
