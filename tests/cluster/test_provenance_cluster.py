"""The provenance card's cluster facts on the simulated cluster (cluster/provenance.py): a sweep
against the stand-in launcher's head records every node's real image ID, the versions `inv verify`
recorded for it and the command line the head's container runs, and `inv bench` and `inv report`
do the same;
a recipe edited during a sweep is caught by the post-check on the points it touched; after the
image changes under the same tag (and the model is relaunched), resuming refuses, naming it."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.hooks import SweepHooks
from bench.reproduce import reproduce_markdown
from bench.shapes import ResultsDoc
from bench.sweep import SweepConfig, arun_sweep
from cluster import config
from cluster import provenance as cluster_provenance
from cluster.facts import normalize_id
from cluster.listing import model_dir
from cluster.remote import Cluster
from testbeds.checks import skip_or_fail
from testbeds.clustertool import inv, make_model, procs_on, tool_config
from testbeds.launcher import REPO_DIR, harness
from testbeds.launcher.harness import HF, install_repo, reset, set_recipe, uninstall

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
STANDIN = Path(__file__).resolve().parents[2] / "testbeds" / "standins" / "nvidia-smi"
IMAGE = "vllm-node"  # nemotron's image; its config expects no transformers


def head_script() -> str:
    """The script the stand-in launcher's head container runs (read from the stand-in)."""
    spec = importlib.util.spec_from_file_location("standin", REPO_DIR / "standin.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return str(mod.HEAD_SCRIPT)


@pytest.fixture
def lab(simcluster: Any, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    sim = simcluster
    cfg = tool_config(sim, tmp_path, bench={"concurrency": [1], "input_len": 8, "output_len": 8,
                                            "requests_per_point": 2})
    source = make_model(tmp_path / "workspace", HF["nemotron"], files=5, big=(100_000,))
    (tmp_path / "source").symlink_to(source)
    try:
        harness.node_python()
    except harness.NoNodePython as e:
        skip_or_fail(str(e))
    try:
        sim.build_test_image("head", IMAGE, transformers="4.57.1")
        sim.distribute_test_image(IMAGE)
        install_repo(sim)
        set_recipe(sim, "nemotron", load_delay=0.5)
        for args in (("stage", "--model", "nemotron"), ("verify-weights", "--model", "nemotron"),
                     ("verify", "--image", IMAGE, "--node", "all"),
                     ("launch", "--model", "nemotron", "--timeout", "2")):
            r = inv(cfg, *args)
            assert r.returncode == 0, r.stdout + r.stderr
        yield sim, cfg
    finally:
        uninstall(sim)


class EditsRecipe(SweepHooks):
    """Rewrites the head's recipe when the first point ends: the post-check must see it."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def point_end(self, c: int, *args: Any) -> None:
        set_recipe(self.sim, "nemotron", load_delay=0.7)


def sweep(settings: config.Settings, folder: Path, concurrency: list[int], hooks: SweepHooks | None = None,
          label: str = "prov") -> ResultsDoc:
    spec = settings.model("nemotron")
    with Cluster(settings) as cl:
        hooks = hooks or SweepHooks()
        hooks.regather = lambda: cluster_provenance.gather(cl, spec)
        cfg = SweepConfig(base_url=f"http://{settings.head.mgmt}:{settings.api_port}", model=spec.served_name,
                          label=label, results_dir=folder, concurrency=concurrency, input_len=8,
                          output_len=8, requests_per_point=2, warmup=0, hooks=hooks,
                          cluster_facts=cluster_provenance.gather(cl, spec))
        return asyncio.run(arun_sweep(cfg, progress=False))


def test_card_holds_real_image_ids_verified_versions_and_command_line_then_refuses_a_new_image(
        lab: tuple[Any, Path], tmp_path: Path) -> None:
    sim, cfg = lab
    settings = config.load(cfg)
    folder = tmp_path / "results"
    doc = sweep(settings, folder, [1])
    card = json.loads((folder / "prov" / "results.json").read_text())["provenance"]
    assert card == doc["provenance"] and card["source"] == "cluster"  # type: ignore[typeddict-item]
    assert card["unknown"] == [] and "provenance_changed" not in doc  # the post-check saw the same facts

    # every node: the ID the node really holds, and what `inv verify` found in it
    ids = {n: sim.image_id(n, IMAGE) for n in sim.node_names}
    assert [(n["host"], n["image_tag"], n["image_id"]) for n in card["nodes"]] == [
        (n, f"{IMAGE}:latest", normalize_id(ids[n])) for n in sim.node_names]
    for n in card["nodes"]:
        assert n["verified_ok"] is True and n["verified_at"], n
        assert n["versions"] == {"torch": "2.11.0+cu130, CUDA 13.0", "vllm": "0.22.1rc1.dev124+gace95c9cf.d20260603"}, n
        assert n["kernel"] and n["mem_available_kib"] > 0, n

    # the head container's PID 1 as it runs (seen from the node's own process table)
    cmd = card["container_command"]
    assert cmd["container"] == "vllm_node" and cmd["pid1"] == ["sh", "-c", head_script()]
    assert cmd["serve"] is None and card["command_line"] == shlex.join(cmd["pid1"])  # no vllm serve inside
    assert any("Starting Ray head node" in p for p in procs_on(sim, "head", b"sh", b"-c", b"Ray head"))
    recipe = card["recipe"]
    truth = sim.node_run("head", f"sha256sum {harness.REPO}/{harness.RECIPES['nemotron']}", check=True)
    assert recipe["path"] == harness.RECIPES["nemotron"] and recipe["sha256"] == truth.stdout.split()[0]
    head_commit = sim.node_run("head", f"git -C {harness.REPO} rev-parse HEAD", check=True).stdout.strip()
    # the stand-in is a dated git checkout of one launcher generation (harness.install_repo)
    assert card["launcher"]["path"] == harness.REPO and card["launcher"]["git"] is True
    assert card["launcher"]["commit"] == head_commit
    assert card["launcher"]["generation"] == "seed" and card["launcher"]["ray_default"] is True
    assert card["mods"] == list(settings.model("nemotron").mods)
    # the staged copy: the manifest digest verify-weights recorded, the same on every node, and
    # equal to the source's files, sizes and sha256 (every file here is small enough to be hashed)
    src = tmp_path / "source"
    rows = sorted([str(f.relative_to(src)), f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()]
                  for f in src.rglob("*") if f.is_file())
    copy_digest = "sha256:" + hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
    w = card["weights"]
    assert w["digest"] == copy_digest and w["node_digests"] == {n: copy_digest for n in sim.node_names}, w
    assert w["digests_differ"] is False and w["hf_id"] == HF["nemotron"] and w["verified_at"], w
    text = reproduce_markdown(doc)  # the post's section shows these very facts
    assert f"| head | {IMAGE}:latest | {normalize_id(ids['head'])} | torch 2.11.0+cu130, CUDA 13.0, vllm " in text
    assert card["command_line"] in text and recipe["sha256"] in text

    # `inv bench` gathers the same facts itself (and again after the last point); nvidia-smi
    # answers now, so each node's driver is read too
    shutil.copy2(STANDIN, sim.state_dir / "bin" / "nvidia-smi")
    try:
        r = inv(cfg, "bench", "--model", "nemotron", "--concurrency", "1", "--requests", "2",
                "--input-len", "8", "--output-len", "8")
    finally:
        (sim.state_dir / "bin" / "nvidia-smi").unlink(missing_ok=True)
    assert r.returncode == 0, r.stdout + r.stderr
    by_inv = json.loads((folder / "nemotron" / "results.json").read_text())
    got = by_inv["provenance"]
    assert got["unknown"] == [] and "provenance_changed" not in by_inv
    assert [n["image_id"] for n in got["nodes"]] == [n["image_id"] for n in card["nodes"]]
    assert got["command_line"] == card["command_line"] and got["recipe"] == card["recipe"]
    assert [n["driver"] for n in got["nodes"]] == ["580.159.04"] * len(sim.node_names)

    # `inv report` (bench.ipynb under papermill) gathers them too, before and after its sweep
    shutil.rmtree(folder / "nemotron")
    r = inv(cfg, "report", "--model", "nemotron", timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    by_report = json.loads((folder / "nemotron" / "results.json").read_text())
    rep = by_report["provenance"]
    assert rep["source"] == "cluster" and rep["unknown"] == [] and "provenance_changed" not in by_report
    assert [n["image_id"] for n in rep["nodes"]] == [n["image_id"] for n in card["nodes"]]
    assert rep["command_line"] == card["command_line"] and rep["recipe"] == card["recipe"]
    assert [n["image_id"] for n in rep["nodes"]][0][7:19] in (folder / "nemotron" / "reproduce.md").read_text()

    # a recipe edited during a sweep: the facts read after the last point differ, said on the point
    before = card["recipe"]["sha256"]
    changed = sweep(settings, folder, [1, 2], hooks=EditsRecipe(sim), label="edited")
    after = sim.node_run("head", f"sha256sum {harness.REPO}/{harness.RECIPES['nemotron']}", check=True)
    want = f"recipe hash: {before} -> {after.stdout.split()[0]}"
    assert changed["provenance_changed"] == {"points": [1, 2], "changes": [want]}  # type: ignore[typeddict-item]
    assert [p.get("provenance_changed") for p in changed["points"]] == [[want], [want]]

    # a new image under the same tag on every node, verified and relaunched: resume refuses
    old = normalize_id(ids["head"])
    sim.build_test_image("head", IMAGE, transformers="4.57.1", extra_bytes=4096)  # same versions, new bytes
    sim.distribute_test_image(IMAGE)
    new = normalize_id(sim.image_id("head", IMAGE))
    assert new != old
    reset(sim)
    set_recipe(sim, "nemotron", load_delay=0.5)
    for args in (("verify", "--image", IMAGE, "--node", "all"), ("launch", "--model", "nemotron", "--timeout", "2")):
        r = inv(cfg, *args)
        assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(BenchError, match=f"image ID on head: {old} -> {new}"):
        sweep(settings, folder, [1, 2])
    stored = json.loads((folder / "prov" / "results.json").read_text())
    assert [p["concurrency"] for p in stored["points"]] == [1]  # nothing appended

    # one worker's copy altered in place (same size): verify-weights fails naming it, and the
    # card reports that the nodes' copies differ
    worker = sim.workers[0]
    rel = "config-1.json"
    path = f"{model_dir(settings.model_root, settings.model('nemotron'))}/{rel}"
    sim.node_run(worker, f"printf '{{\"i\": 9}}\\n' > {shlex.quote(path)}", check=True)
    r = inv(cfg, "verify-weights", "--model", "nemotron")
    assert r.returncode == 1 and worker in r.stdout + r.stderr and rel in r.stdout + r.stderr, r.stdout + r.stderr
    with Cluster(settings) as cl:
        w = cluster_provenance.gather(cl, settings.model("nemotron"))["weights"]
    assert w["digests_differ"] is True and w["digest"] == copy_digest, w
    assert w["node_digests"][worker] != copy_digest and w["node_digests"]["head"] == copy_digest, w
