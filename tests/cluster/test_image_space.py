"""Free space is checked before image work: a node whose engine spool (/var/tmp) is too small is
refused with numbers and the fix before anything is streamed; the others go on."""

from __future__ import annotations

import pytest
import test_images
from test_images import NODE, Env

pytestmark = pytest.mark.cluster
launcher, env = test_images.launcher, test_images.env  # the image tests' fixtures, shared


STATE = "/var/tmp/gx10-simcluster"  # the simulated nodes' sshd config and keys live under /var/tmp


def small_var_tmp(env: Env, node: str, mb: int) -> None:
    """A `mb` MiB /var/tmp on `node`, keeping the simulator's state dir visible under it."""
    env.sim.node_run(node, f"mkdir -p /run/gx10-keep && mount --bind {STATE} /run/gx10-keep", check=True)
    env.sim.mount_small_fs(node, "/var/tmp", mb)
    env.sim.node_run(node, f"mkdir -p {STATE} && mount --bind /run/gx10-keep {STATE}", check=True)


def normal_var_tmp(env: Env, node: str) -> None:
    env.sim.node_run(node, f"umount {STATE}; umount /var/tmp; umount /run/gx10-keep", check=True)


def test_distribute_and_restore_refuse_a_node_without_room(env: Env) -> None:
    head_id = env.sim.build_test_image("head", NODE, extra_bytes=48 * 1024**2)
    assert env.inv("verify", "--image", NODE).returncode == 0
    small_var_tmp(env, "w2", 16)
    try:
        r = env.inv("distribute", "--image", NODE)
        assert env.inv("backup", "--image", NODE).returncode == 0
        rs = env.inv("restore", "--image", NODE, "--node", "w2")
    finally:
        normal_var_tmp(env, "w2")
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("  w2:"))
    assert "not sent: not enough disk for vllm-node:latest" in line
    assert "/var/tmp (where the engine spools the stream) has 16.0 MiB free, needs" in line
    assert "Fix: free space there" in line
    assert "to w1, w3 over the fabric" in r.stdout
    ids = env.ids(NODE)
    assert ids["w1"] == ids["w3"] == head_id and ids["w2"] is None
    assert rs.returncode == 1 and "w2: not enough disk for restoring vllm-node:latest" in rs.stderr
    assert "nothing was sent" in rs.stderr
    assert env.ids(NODE)["w2"] is None
    again = env.inv("distribute", "--image", NODE)  # room again: the rerun sends only to w2
    assert again.returncode == 0, again.stdout + again.stderr
    assert "up to date on w1, w3" in again.stdout and set(env.ids(NODE).values()) == {head_id}
