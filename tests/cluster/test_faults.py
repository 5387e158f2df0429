"""Every failure a clean message and a meaningful exit code (issue 18 items 1-5, 9): config files,
known_hosts, status/doctor exit codes, a port 22 that does not speak SSH, the operations log."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.opslog import shell_line
from testbeds.clustertool import inv, tool_config


def test_yaml_syntax_error_names_file_line_column(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("cluster:\n  head:\n    name: head\n   mgmt: 10.0.0.1\n")
    r = inv(cfg, "status")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"config error: {cfg} line 4, column 4: "), r.stderr


def test_missing_runtime_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missnig.yaml"
    r = inv(missing, "status")
    assert r.returncode == 2
    assert f"config error: config file {missing}" in r.stderr and "does not exist" in r.stderr
    assert "placeholders" not in r.stderr + r.stdout


def test_ops_log_line_is_valid_shell() -> None:
    script = 'x=1\n{ echo "a $x" > /dev/null; echo "b\'s"; } &\necho c \\\n  | tr c d\nwait\n'
    line = shell_line(script)
    assert "\n" not in line
    direct = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    pasted = subprocess.run(["bash", "-c", line], capture_output=True, text=True)
    assert pasted.returncode == 0 and sorted(pasted.stdout.split()) == sorted(direct.stdout.split()) == ["b's", "d"]


@pytest.mark.cluster
def test_missing_known_hosts_is_refused_up_front(simcluster: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_known_hosts"
    cfg = tool_config(simcluster, tmp_path, cluster__ssh={"user": "root", "key": str(simcluster.control_key),
                                                         "known_hosts": str(missing)})
    r = inv(cfg, "status")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"cluster.ssh.known_hosts = '{missing}': no such file" in r.stderr
    assert "sshd running" not in r.stdout + r.stderr
    assert not missing.exists()
    assert not (tmp_path / "results" / "operations.log").exists()  # no node was contacted


@pytest.mark.cluster
def test_status_exit_code_names_unreachable(simcluster: Any, tmp_path: Path) -> None:
    cfg = tool_config(simcluster, tmp_path)
    assert inv(cfg, "status").returncode == 0
    simcluster.stop_sshd("w3")
    try:
        r = inv(cfg, "status")
    finally:
        simcluster.start_sshd("w3")
    assert r.returncode == 1
    assert "status: 1 of 4 node(s) unreachable: w3" in r.stderr
    assert "UNREACHABLE" in next(line for line in r.stdout.splitlines() if line.startswith("w3"))


NOT_SSH = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 22)); s.listen(16); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"HTTP/1.1 400 Bad Request\\r\\n\\r\\n"); c.close()
"""


@pytest.mark.cluster
def test_port_that_does_not_speak_ssh_is_one_clean_line(simcluster: Any, tmp_path: Path) -> None:
    cfg = tool_config(simcluster, tmp_path)
    simcluster.stop_sshd("w2")
    fake = subprocess.Popen([*simcluster._enter("w2"), "/usr/bin/python3", "-c", NOT_SSH, simcluster.nodes["w2"].mgmt],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        r = inv(cfg, "status")
    finally:
        fake.kill()
        fake.wait()
        time.sleep(0.2)
        simcluster.start_sshd("w2")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "protocol banner" not in r.stderr, r.stderr
    w2 = next(line for line in r.stdout.splitlines() if line.startswith("w2"))
    assert "UNREACHABLE" in w2
    assert r.stderr.strip().splitlines() == ["status: 1 of 4 node(s) unreachable: w2"], r.stderr
