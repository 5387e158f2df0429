"""Weights staging end to end: control -> head -> workers over real SSH and rsync."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.config import load
from cluster.remote import Cluster
from testbeds.clustertool import PROJECT, inv, make_model, tool_config
from testbeds.simcluster.host import comm, netns_pids

SLACK = float(os.environ.get("GX10_TIME_SCALE", "1"))  # loaded CI boxes: scale timing bounds

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


def stamps(sim: Any) -> dict[str, str]:
    """Per node: every file's inode, mtime and ctime. A rerun that copies nothing leaves all equal."""
    return {n: sim.node_run(n, f"cd {REMOTE} 2>/dev/null && find . -type f -printf '%P %i %T@ %C@\\n' | sort"
                            ).stdout for n in sim.node_names}


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
    before = stamps(clean_models)
    assert all(before.values())
    rerun = inv(cfg, "stage", "--model", "nemotron")
    assert rerun.returncode == 0, rerun.stderr
    assert stamps(clean_models) == before  # no file rewritten, renamed or touched on any node


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
    shard = 60_000_000
    make_model(tmp_path / "workspace", HF_ID, big=(shard,))
    clean_models.shape_uplink("80mbit")  # ~6 s for the shard: time to interrupt it
    try:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "stage",
                                 "--model", "nemotron", "--hop", "control-head"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        big = f"{REMOTE}/model-00000.safetensors"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = clean_models.node_run("head", f"find {REMOTE} -name '*model-00000*' -size +24M 2>/dev/null")
            if r.stdout.strip():
                break
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
        # the partial shard itself survived the interrupt (not only the small files)
        got = clean_models.node_run("head", f"stat -c %s {big}", check=True).stdout.strip()
        partial = int(got)
        assert 24_000_000 < partial < shard, f"partial shard is {partial} B: interrupt came too late"
        # the rerun, link still shaped, sends only the missing part over the control's uplink
        sent0 = clean_models.link_bytes("head")
        r = inv(cfg, "stage", "--model", "nemotron")
        sent = clean_models.link_bytes("head") - sent0
    finally:
        clean_models.shape_uplink(None)
    assert r.returncode == 0, r.stderr
    assert "verified on head, w1, w2, w3" in r.stdout
    missing = shard - partial
    assert sent < missing + 4_000_000, f"rerun sent {sent} B for {missing} B missing: the shard was copied again"


def test_symlinked_copy_is_followed_and_dangling_link_is_missing(clean_models: Any, tmp_path: Path) -> None:
    """A Hugging Face cache: snapshots/REV/* are links into blobs/. Nodes get real files."""
    cfg = tool_config(clean_models, tmp_path)
    real = make_model(tmp_path / "blobs", "real")
    snap = tmp_path / "workspace" / HF_ID
    snap.mkdir(parents=True)
    for f in real.rglob("*"):
        if f.is_file():
            link = snap / f.relative_to(real)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
    r = inv(cfg, "stage", "--model", "nemotron")
    assert r.returncode == 0, r.stderr
    expected = subprocess.run(f"cd {real} && find . -type f -printf '%P %s\\n' | sort", shell=True,
                              capture_output=True, text=True, check=True).stdout
    for node in clean_models.node_names:
        assert listing(clean_models, node) == expected
        assert clean_models.node_run(node, f"find {REMOTE} -type l").stdout == ""
    # a dangling link on a node is a missing file for verify
    clean_models.node_run("w2", f"cd {REMOTE} && rm config-1.json && ln -s /nowhere config-1.json", check=True)
    v = inv(cfg, "verify-weights", "--model", "nemotron")
    assert v.returncode == 1 and "w2: config-1.json" in v.stderr
    # a dangling link at the source: refused before anything moves, naming it
    (real / "config-2.json").unlink()
    before = stamps(clean_models)
    bad = inv(cfg, "stage", "--model", "nemotron")
    assert bad.returncode == 1 and "dangling" in bad.stderr and "config-2.json" in bad.stderr
    assert stamps(clean_models) == before


def test_worker_down_at_start_stages_the_others_then_names_it(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    src = make_model(tmp_path / "workspace", HF_ID)
    expected = subprocess.run(f"cd {src} && find . -type f -printf '%P %s\\n' | sort", shell=True,
                              capture_output=True, text=True, check=True).stdout
    clean_models.stop_sshd("w2")
    try:
        r = inv(cfg, "stage", "--model", "nemotron")
    finally:
        clean_models.start_sshd("w2")
    assert r.returncode == 1
    assert "staging failed on w2" in r.stderr and "finished and verified on head, w1, w3" in r.stderr
    for node in ("head", "w1", "w3"):
        assert listing(clean_models, node) == expected
    assert clean_models.node_run("w2", f"test -e {REMOTE}").returncode != 0
    others = {n: v for n, v in stamps(clean_models).items() if n != "w2"}
    again = inv(cfg, "stage", "--model", "nemotron")
    assert again.returncode == 0, again.stderr
    assert listing(clean_models, "w2") == expected
    assert {n: v for n, v in stamps(clean_models).items() if n != "w2"} == others  # only w2 was copied to


def test_local_copy_progress_reaches_the_bar_as_it_comes(simcluster: Any, tmp_path: Path) -> None:
    """Hop 1's rsync runs on the control: its progress must reach the bar when printed, not a
    4 KiB read later (a minute of progress lines; the head's bar showed 1.2 KiB mid-copy)."""
    s = load(tool_config(simcluster, tmp_path))
    got: list[tuple[float, str]] = []

    class Sink:
        def write(self, data: str) -> int:
            got.append((time.monotonic() - t, data))
            return len(data)

        def flush(self) -> None:
            pass

    with Cluster(s, out=io.StringIO()) as cl:
        t = time.monotonic()
        r = cl.run_local(["sh", "-c", "printf '  1,000  1%%\\r'; sleep 3; printf '  2,000 2%%\\n'"], sink=Sink())
    assert r.ok and got and got[0][1].startswith("  1,000")
    assert got[0][0] < 2, f"first progress line reached the sink after {got[0][0]:.1f} s (printed at 0 s)"


def rsyncs(sim: Any) -> dict[str, list[int]]:
    """rsync processes inside each node's network namespace (not the machine's others)."""
    out = {}
    for n in sim.node_names:
        out[n] = [p for p in netns_pids(sim.layout.netns(n)) if comm(p) == "rsync"]
    return {n: p for n, p in out.items() if p}


def test_ctrl_c_mid_overlap_stops_remote_rsyncs_and_rerun_resumes(clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    make_model(tmp_path / "workspace", HF_ID, big=(30_000_000, 30_000_000))
    clean_models.shape_uplink("80mbit")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "stage",
                                 "--model", "nemotron"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # the first shard is being forwarded, the second is on hop 1
            w = clean_models.node_run("w1", f"find {REMOTE} -name '*model-00000*' -size +2M 2>/dev/null")
            if w.stdout.strip() and "w1" in rsyncs(clean_models):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no forward to w1 started")
        os.killpg(proc.pid, signal.SIGINT)
        t = time.monotonic()
        proc.communicate(timeout=30)
        stopped = time.monotonic() - t
        left = rsyncs(clean_models)
        for _ in range(30):  # give the remote side the same ~2 s it is promised
            if not left or time.monotonic() - t > 3:
                break
            time.sleep(0.1)
            left = rsyncs(clean_models)
        assert not left, f"rsyncs still running {time.monotonic() - t:.1f} s after Ctrl-C: {left}"
        assert stopped < 3 * SLACK, f"stage took {stopped:.1f} s to stop after Ctrl-C"
        assert proc.returncode != 0
        r = inv(cfg, "stage", "--model", "nemotron")
    finally:
        clean_models.shape_uplink(None)
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


def arrived(sim: Any, node: str) -> int:
    """Bytes on the node's disk under the model folder, rsync's hidden partial files included."""
    out = sim.node_run(node, f"find {REMOTE} -type f -printf '%s\\n' 2>/dev/null").stdout
    return sum(int(x) for x in out.split())


def test_worker_lost_mid_overlap_others_finish_progress_true_rerun_copies_only_missing(
        clean_models: Any, tmp_path: Path) -> None:
    cfg = tool_config(clean_models, tmp_path)
    src = make_model(tmp_path / "workspace", HF_ID, big=(30_000_000, 30_000_000))
    expected = subprocess.run(f"cd {src} && find . -type f -printf '%P %s\\n' | sort", shell=True,
                              capture_output=True, text=True, check=True).stdout
    clean_models.shape_uplink("80mbit")  # hop 1 ~6 s: the second shard still crosses it
    clean_models.shape_fabric("40mbit")  # a 30 MB forward ~6 s: time to lose w2 inside it
    try:
        fab0 = clean_models.link_bytes("w2", "fabric")
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(cfg), "stage",
                                 "--model", "nemotron"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both shards being forwarded to w2 (2 procs per rsync)
            if len(rsyncs(clean_models).get("w2", [])) >= 4:
                break
            time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail("no two forwards to w2 in flight")
        time.sleep(2)  # both counters have moved: the bar must add them, not show the newest one's
        clean_models.stop_sshd("w2")
        try:
            out, err = proc.communicate(timeout=120)
            on_w2, fab = arrived(clean_models, "w2"), clean_models.link_bytes("w2", "fabric") - fab0
        finally:
            clean_models.start_sshd("w2")
    finally:
        clean_models.shape_uplink(None)
        clean_models.shape_fabric(None)
    assert proc.returncode == 1, out + err
    assert "staging failed on w2" in err and "finished and verified on head, w1, w3" in err, err
    for node in ("head", "w1", "w3"):
        assert listing(clean_models, node) == expected
    # w2's progress line shows the bytes that really arrived (rsync counts once a second: at
    # 5 MB/s it may lag a few MB), not the counter of one of its rsyncs
    line = next(ln for ln in err.splitlines() if ln.startswith("w2 (hop 2") and "(FAILED)" in ln)
    m = re.match(r"w2 \(hop 2, fabric\): ([\d.]+) (B|KiB|MiB|GiB) of", line)
    assert m, line
    shown = float(m.group(1)) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(m.group(2))
    assert on_w2 - 8_000_000 <= shown <= fab + 1024**2, f"{line!r}: {on_w2} B on w2's disk, {fab} B on its link"
    others = {n: v for n, v in stamps(clean_models).items() if n != "w2"}
    again = inv(cfg, "stage", "--model", "nemotron")
    assert again.returncode == 0, again.stderr
    assert listing(clean_models, "w2") == expected
    assert {n: v for n, v in stamps(clean_models).items() if n != "w2"} == others  # only w2 was copied to
