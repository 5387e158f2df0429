"""status and doctor end to end over real SSH against the simulated cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbeds.clustertool import inv, tool_config

pytestmark = pytest.mark.cluster


def test_status_reports_every_node(simcluster: Any, tmp_path: Path) -> None:
    cfg = tool_config(simcluster, tmp_path)
    r = inv(cfg, "status")
    assert r.returncode == 0, r.stderr
    lines: dict[str, str] = {}
    for line in r.stdout.splitlines():  # the first table's row (the readings table follows)
        if line.split():
            lines.setdefault(line.split()[0], line)
    for node in ("head", "w1", "w2", "w3"):
        assert node in lines and " ok " in lines[node], r.stdout
    assert "UNREACHABLE" not in r.stdout
    assert "free of" in r.stdout
    log = (tmp_path / "results" / "operations.log").read_text()
    assert " w3 exit=0 " in log and " head exit=0 " in log


def test_unreachable_worker_is_named_while_others_report(simcluster: Any, tmp_path: Path) -> None:
    cfg = tool_config(simcluster, tmp_path)
    simcluster.stop_sshd("w2")
    try:
        r = inv(cfg, "status")
        d = inv(cfg, "doctor")
    finally:
        simcluster.start_sshd("w2")
    assert r.returncode == 1, r.stderr
    assert "status: 1 of 4 node(s) unreachable: w2" in r.stderr
    w2 = next(line for line in r.stdout.splitlines() if line.startswith("w2"))
    assert "UNREACHABLE" in w2 and simcluster.nodes["w2"].mgmt in w2
    for node in ("head", "w1", "w3"):
        row = next(line for line in r.stdout.splitlines() if line.startswith(node))
        assert "UNREACHABLE" not in row
    # the head cannot reach w2 over the fabric either (its sshd is the same daemon)
    assert d.returncode == 1
    assert "FAIL  w2      ssh" in d.stdout
    assert "OK    w1      ssh" in d.stdout
    assert "check(s) failed" in d.stderr


def test_doctor_checks_and_fixes(simcluster: Any, tmp_path: Path) -> None:
    cfg = tool_config(simcluster, tmp_path)
    simcluster.node_run("head", "mkdir -p /root/spark-vllm-docker", check=True)
    r = inv(cfg, "doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "doctor: 1 check(s) failed" in r.stderr, r.stderr
    (row,) = [line for line in r.stdout.splitlines() if "launcher repo" in line]
    assert row.split()[:2] == ["FAIL", "head"], row
    assert "lacks build-and-copy.sh, launch-cluster.sh, autodiscover.sh" in row, row
    assert row.endswith("update the checkout on head (git pull), or clone it afresh there"), row
    for node in ("head", "w1", "w2", "w3"):
        assert f"OK    {node:<7} ssh" in r.stdout
        assert f"OK    {node:<7} container engine" in r.stdout
        assert f"OK    {node:<7} fabric" in r.stdout
    simcluster.node_run("head", "rm -rf /root/spark-vllm-docker", check=True)
    r = inv(cfg, "doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    (row,) = [line for line in r.stdout.splitlines() if "launcher repo" in line]
    assert row.split()[:2] == ["FAIL", "head"] and "does not exist" in row, row
    assert row.endswith("git clone https://github.com/eugr/spark-vllm-docker /root/spark-vllm-docker on head"), row


def test_unknown_host_key_is_refused(simcluster: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cfg = tool_config(simcluster, tmp_path, cluster__ssh={"user": "root", "key": str(simcluster.control_key),
                                                         "known_hosts": str(empty)})
    r = inv(cfg, "status")
    assert r.returncode == 1
    assert r.stdout.count("is not in") == 4, r.stdout
    assert empty.read_text() == ""  # nothing was trusted silently


def test_placeholder_config_touches_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("bench: {api: chat}\n")
    r = inv(cfg, "status")
    assert r.returncode == 2
    assert "cluster.head.mgmt = '<head-node>'" in r.stderr
