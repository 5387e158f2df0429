"""Weights staging end to end: control -> head -> workers over real SSH and rsync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from testbeds.clustertool import PROJECT, inv, make_model, tool_config

pytestmark = pytest.mark.cluster
HF_ID = "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4"
REMOTE = f"/srv/models/{HF_ID}"


@pytest.fixture
def clean_models(simcluster: Any) -> Any:
    for n in simcluster.node_names:
        simcluster.node_run(n, "umount /srv/models 2>/dev/null; rm -rf /srv/models", check=True)
    yield simcluster
    for n in simcluster.node_names:
        simcluster.node_run(n, "umount /srv/models 2>/dev/null; rm -rf /srv/models")


def listing(sim: Any, node: str) -> str:
    return sim.node_run(node, f"cd {REMOTE} && find . -type f -printf '%P %s\\n' | sort", check=True).stdout


def test_stage_both_hops_then_rerun_copies_nothing(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    src = make_model(tmp_path / "workspace", HF_ID)
    r = inv(cfg, "stage", "--model", "nemotron")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified on head, w1, w2, w3" in r.stdout
    expected = subprocess.run(f"cd {src} && find . -type f -printf '%P %s\\n' | sort", shell=True,
                              capture_output=True, text=True, check=True).stdout
    for node in clean_models.node_names:
        assert listing(clean_models, node) == expected
    # hop 2 went over the fabric from the head, not from the control
    log = (tmp_path / "results" / "operations.log").read_text()
    assert clean_models.nodes["w3"].fabric in log
    rerun = inv(cfg, "stage", "--model", "nemotron")
    assert rerun.returncode == 0, rerun.stderr
    assert "hop 1: head is up to date" in rerun.stdout
    assert "hop 2: every worker is up to date" in rerun.stdout


def test_disk_too_small_fails_before_copying(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    make_model(tmp_path / "workspace", HF_ID, big=(6_000_000, 6_000_000))
    other = "Qwen/Qwen3.5-397B-A17B-FP8"
    clean_models.mount_small_fs("w1", "/srv/models", 8)
    clean_models.node_run("w1", f"mkdir -p /srv/models/{other} && head -c 3000000 /dev/zero > /srv/models/{other}/x",
                          check=True)
    r = inv(cfg, "stage", "--model", "nemotron")
    assert r.returncode == 1
    assert "not enough disk for nemotron" in r.stderr and "w1:" in r.stderr and "GiB missing" in r.stderr
    assert "qwen weights hold" in r.stderr and "inv clear-weights --model qwen --node w1" in r.stderr
    assert "nothing was copied" in r.stderr
    for node in clean_models.node_names:  # refused before any hop
        assert clean_models.node_run(node, f"test -e {REMOTE}").returncode != 0


def test_corrupted_file_found_by_verify_and_fixed_by_rerun(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    make_model(tmp_path / "workspace", HF_ID)
    assert inv(cfg, "stage", "--model", "nemotron").returncode == 0
    # same size, same mtime, other content: only the checksum can see it
    clean_models.node_run("w2", f"f={REMOTE}/config-3.json; t=$(stat -c %Y $f); printf '{{\"i\": 9}}\\n' > $f; "
                          "touch -d @$t $f", check=True)
    clean_models.node_run("w3", f"truncate -s 100 {REMOTE}/model-00000.safetensors", check=True)
    v = inv(cfg, "verify-weights", "--model", "nemotron")
    assert v.returncode == 1
    assert "w2: config-3.json" in v.stderr and "w3: model-00000.safetensors" in v.stderr
    fix = inv(cfg, "stage", "--model", "nemotron")
    assert fix.returncode == 0, fix.stderr
    assert inv(cfg, "verify-weights", "--model", "nemotron").returncode == 0


def test_interrupted_hop_resumes(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    make_model(tmp_path / "workspace", HF_ID, big=(60_000_000,))
    clean_models.shape_uplink("80mbit")  # ~6 s for the shard: time to interrupt it
    try:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "stage",
                                 "--model", "nemotron", "--hop", "control-head"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = clean_models.node_run("head", f"find {REMOTE} -type f -size +1M 2>/dev/null | head -1")
            if r.stdout.strip():
                break
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
        partial = clean_models.node_run("head", f"du -sb {REMOTE} | cut -f1").stdout.strip()
        assert 0 < int(partial or 0) < 60_000_000, "interrupt came too late to test resuming"
    finally:
        clean_models.shape_uplink(None)
    r = inv(cfg, "stage", "--model", "nemotron")
    assert r.returncode == 0, r.stderr
    assert "verified on head, w1, w2, w3" in r.stdout


def test_clear_weights_dry_run_then_real_and_refuses_served(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    make_model(tmp_path / "workspace", HF_ID)
    assert inv(cfg, "stage", "--model", "nemotron").returncode == 0
    dry = inv(cfg, "clear-weights", "--model", "nemotron", "--node", "w1", "--dry-run")
    assert dry.returncode == 0 and "would free" in dry.stdout and "[dry-run] w1: rm -rf" in dry.stdout
    assert clean_models.node_run("w1", f"test -d {REMOTE}").returncode == 0
    # a launch record on the head says nemotron is being served: refuse without --force
    clean_models.node_run("head", "mkdir -p /root/.gx10-ops && echo '{\"model\": \"nemotron\"}' > /root/.gx10-ops/serving.json",
                          check=True)
    try:
        refused = inv(cfg, "clear-weights", "--model", "nemotron")
        assert refused.returncode == 1 and "being served" in refused.stderr
        assert clean_models.node_run("head", f"test -d {REMOTE}").returncode == 0
    finally:
        clean_models.node_run("head", "rm -f /root/.gx10-ops/serving.json")
    real = inv(cfg, "clear-weights", "--model", "nemotron", "--node", "w1,w2")
    assert real.returncode == 0, real.stderr
    assert clean_models.node_run("w1", f"test -d {REMOTE}").returncode != 0
    assert clean_models.node_run("w3", f"test -d {REMOTE}").returncode == 0
