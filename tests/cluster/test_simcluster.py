"""The simulated cluster itself: if these fail, every end-to-end test built on it is suspect."""

from __future__ import annotations

import errno
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from fabric import Config, Connection

from testbeds.checks import timing
from testbeds.simcluster import SimCluster

pytestmark = pytest.mark.cluster

TORCH_PROBE = 'python3 -c "import torch; print(torch.__version__, torch.version.cuda)"'
GOOD, REGRESSED = "gx10-test/vllm:good", "gx10-test/vllm:regressed"


@pytest.fixture(scope="module")
def test_images(simcluster: SimCluster) -> dict[str, str]:
    """A good and a regressed image on every node; returns name -> image ID on the head."""
    ids = {GOOD: simcluster.build_test_image("head", GOOD),
           REGRESSED: simcluster.build_test_image("head", REGRESSED, torch="2.10.0+cpu",
                                                  cuda=None)}
    simcluster.distribute_test_image(GOOD)
    simcluster.distribute_test_image(REGRESSED)
    return ids


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def ssh_ok(cluster: SimCluster, node: str, cmd: str) -> str:
    result = cluster.ssh(node, cmd)
    assert result.returncode == 0, f"{node}: {cmd!r} failed: {result.stderr}"
    return result.stdout


def test_every_node_answers_ssh_with_pinned_host_key(simcluster: SimCluster) -> None:
    for node in simcluster.node_names:
        assert ssh_ok(simcluster, node, "hostname").strip() == node


def test_unknown_host_key_is_refused(simcluster: SimCluster) -> None:
    result = subprocess.run(
        ["ssh", "-F", str(simcluster.ssh_config), "-o", "UserKnownHostsFile=/dev/null", "w1",
         "true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_fabric_with_reject_policy(simcluster: SimCluster) -> None:
    config = Config(runtime_ssh_path=str(simcluster.ssh_config),
                    overrides={"run": {"in_stream": False, "hide": True}})
    for node in simcluster.node_names:
        with Connection(node, config=config) as conn:
            conn.client.load_host_keys(str(simcluster.known_hosts))
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            assert conn.run("hostname").stdout.strip() == node


def test_nodes_are_separate_machines(simcluster: SimCluster) -> None:
    ssh_ok(simcluster, "w1", "echo w1 > /root/marker; echo w1 > /tmp/marker")
    for node in ("head", "w2"):
        assert ssh_ok(simcluster, node, "cat /root/marker /tmp/marker 2>/dev/null; true") == ""
    out = ssh_ok(simcluster, "w2", "cat /etc/hostname; getent hosts head w3-fab")
    assert out.split() == ["w2", simcluster.nodes["head"].mgmt, "head",
                           simcluster.nodes["w3"].fabric, "w3-fab"]


def test_head_reaches_workers_over_fabric(simcluster: SimCluster) -> None:
    out = ssh_ok(simcluster, "head",
                 "for w in w1 w2 w3; do ssh $w-fab 'echo $(hostname) $SSH_CONNECTION'; done")
    head_fabric = simcluster.nodes["head"].fabric
    for line, worker in zip(out.splitlines(), simcluster.workers, strict=True):
        name, client_ip, _, server_ip, _ = line.split()
        assert (name, client_ip, server_ip) == (worker, head_fabric,
                                                simcluster.nodes[worker].fabric)


def test_control_has_no_route_to_fabric(simcluster: SimCluster) -> None:
    start = time.monotonic()
    with pytest.raises(OSError) as info, socket.socket() as sock:
        sock.settimeout(5)
        sock.connect((simcluster.nodes["w1"].fabric, 22))
    assert info.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    timing(time.monotonic() - start, 1, "an unreachable connect")


def test_container_runs_on_every_node(simcluster: SimCluster,
                                      test_images: dict[str, str]) -> None:
    for node in simcluster.node_names:
        out = ssh_ok(simcluster, node, f"docker run --rm --gpus all {GOOD} sh -c 'echo ok'")
        assert out.strip() == "ok"


def test_torch_probe_good_and_regressed(simcluster: SimCluster,
                                        test_images: dict[str, str]) -> None:
    assert ssh_ok(simcluster, "w3", f"docker run --rm {GOOD} {TORCH_PROBE}") == (
        "2.11.0+cu130 13.0\n")
    assert ssh_ok(simcluster, "w3", f"docker run --rm {REGRESSED} {TORCH_PROBE}") == (
        "2.10.0+cpu None\n")
    probe = ('python3 -c "import vllm, transformers; '
             'print(vllm.__version__); print(transformers.__version__)"')
    assert ssh_ok(simcluster, "w1", f"docker run --rm {GOOD} {probe}") == (
        "0.22.1rc1.dev124+gace95c9cf.d20260603\n5.0.0\n")
    missing = simcluster.ssh("w1", f"docker run --rm {GOOD} python3 -c 'import flash_attn'")
    assert missing.returncode == 1 and "No module named 'flash_attn'" in missing.stderr


def test_same_image_id_on_every_node(simcluster: SimCluster,
                                     test_images: dict[str, str]) -> None:
    for name, head_id in test_images.items():
        for node in simcluster.node_names:
            out = ssh_ok(simcluster, node, f"docker image inspect --format '{{{{.Id}}}}' {name}")
            assert out.strip() == head_id, f"{name} on {node}"


def test_docker_save_load_from_head_keeps_id(simcluster: SimCluster) -> None:
    image_id = simcluster.build_test_image("head", "gx10-test/only-head", vllm="0.0.1")
    ssh_ok(simcluster, "head", "docker save gx10-test/only-head | ssh w2-fab docker load")
    assert simcluster.image_id("w2", "gx10-test/only-head") == image_id
    assert simcluster.node_run("w1", "podman image exists gx10-test/only-head").returncode == 1


def test_stopped_sshd_makes_exactly_one_node_unreachable(simcluster: SimCluster) -> None:
    simcluster.stop_sshd("w2")
    try:
        result = simcluster.ssh("w2", "true", timeout=15)
        assert result.returncode == 255 and "refused" in result.stderr
        for node in ("head", "w1", "w3"):
            assert ssh_ok(simcluster, node, "hostname").strip() == node
        assert simcluster.node_run("w2", "hostname", check=True).stdout.strip() == "w2"
    finally:
        simcluster.start_sshd("w2")
    assert ssh_ok(simcluster, "w2", "hostname").strip() == "w2"


def test_small_fs_fills_up(simcluster: SimCluster) -> None:
    simcluster.mount_small_fs("w3", "/srv/small", 4)
    result = simcluster.ssh("w3", "dd if=/dev/zero of=/srv/small/f bs=1M count=8")
    assert result.returncode != 0 and "No space left" in result.stderr
    assert simcluster.node_run("w1", "mountpoint -q /srv/small").returncode != 0


def test_shape_uplink_limits_both_directions(simcluster: SimCluster) -> None:
    bridge = simcluster.layout.mgmt_bridge
    simcluster.shape_uplink("32mbit")  # 4 MiB take at least 1 s each way
    try:
        qdisc = subprocess.run(["tc", "qdisc", "show", "dev", bridge], capture_output=True,
                               text=True, check=True).stdout
        assert "tbf" in qdisc and "32Mbit" in qdisc
        ssh = ["ssh", "-F", str(simcluster.ssh_config), "head"]
        start = time.monotonic()
        pulled = subprocess.run([*ssh, "head -c 4194304 /dev/zero"], capture_output=True,
                                timeout=60, stdin=subprocess.DEVNULL)
        assert len(pulled.stdout) == 4194304
        assert time.monotonic() - start > 0.8, "node -> control traffic is not shaped"
        start = time.monotonic()
        pushed = subprocess.run([*ssh, "wc -c"], input=bytes(4194304), capture_output=True,
                                timeout=60)
        assert pushed.stdout.strip() == b"4194304"
        assert time.monotonic() - start > 0.8, "control -> node traffic is not shaped"
    finally:
        simcluster.shape_uplink(None)
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", bridge], capture_output=True,
                           text=True, check=True).stdout
    assert "tbf" not in qdisc


@pytest.fixture
def second_cluster(simcluster: SimCluster) -> Iterator[SimCluster]:
    other = SimCluster()
    try:
        yield other.up()
    finally:
        other.down()


def test_parallel_instance_and_clean_teardown(simcluster: SimCluster,
                                              second_cluster: SimCluster) -> None:
    other = second_cluster
    assert other.instance != simcluster.instance
    assert ssh_ok(other, "head", "hostname").strip() == "head"
    other.build_test_image("w1", "gx10-test/bg")
    ssh_ok(other, "w1", "docker run -d gx10-test/bg sleep infinity")
    other.down()
    prefix = f"gx{other.instance}"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in netns.split() if n.startswith(f"{prefix}-")]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert not set(other.layout.links()) & {line.split()[0].split("@")[0]
                                            for line in links.splitlines()}
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True,
                            text=True).stdout
    assert other.layout.fabric_cidr not in routes.split()
    assert not other.state_dir.exists()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                 and str(other.state_dir).encode() in _read(p / "cmdline")]
    assert not leftovers, "processes of the torn-down instance are still running"
    assert ssh_ok(simcluster, "head", "hostname").strip() == "head"


def test_node_count_names_and_bounds() -> None:
    from testbeds.simcluster.layout import Layout, SimClusterError, node_names
    assert node_names(2) == ("head", "w1") and node_names() == ("head", "w1", "w2", "w3")
    assert node_names(8)[-1] == "w7" and Layout(3).fabric_ip("w7") == "10.78.3.17"
    for bad in (1, 9):
        with pytest.raises(SimClusterError, match="2 to 8 nodes"):
            node_names(bad)


def test_eight_nodes_up_and_a_default_sized_object_tears_them_down() -> None:
    big = SimCluster(nodes=8)
    try:
        big.up()
        assert big.workers[-1] == "w7" and len(big.nodes) == 8
        assert ssh_ok(big, "w7", "hostname").strip() == "w7"
        assert "ok" in ssh_ok(big, "head", f"ssh {big.nodes['w7'].fabric} echo ok")
        instance = big.instance
    finally:
        big.down()
    # a crashed run of another size is cleaned up by whoever takes the instance next
    again = SimCluster(instance, nodes=8)
    again.up()
    again._lock.release() if again._lock else None  # noqa: SLF001 - simulate a crash: no down()
    again._lock = None  # noqa: SLF001
    SimCluster(instance).down()  # default size (4) still removes w4..w7
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in netns.split() if n.startswith(f"gx{instance}-")], netns
    assert not again.state_dir.exists()
