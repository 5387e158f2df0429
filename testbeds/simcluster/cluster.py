"""A simulated GB10 cluster of 2 to 8 nodes (default 4) on one machine: network namespaces, one real sshd per node,
and a per-node podman image store behind a `docker` command.

Each node is held open by a "keeper" process (`sleep infinity`) that owns the node's network,
mount and UTS namespaces; sshd and test helpers enter those namespaces with `nsenter`. Keeping the
namespaces independent of sshd lets a test stop a node's sshd (an unreachable worker) and still
inspect or restart that node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

from . import images
from .host import SSHD, alive, comm, kill_all, missing_requirements, netns_pids, run, shared_host_paths
from .layout import (
    DEFAULT_NODES,
    FABRIC_MTU,
    MANUAL_OWNER,
    MAX_NODES,
    InstanceLock,
    Layout,
    SimClusterError,
    lock_instance,
    node_names,
    pick_instance,
)
from .nodefiles import CONTAINERS_CONF, KEEPER_SCRIPT, SSHD_CONFIG, STORAGE_CONF

ASSETS = Path(__file__).parent / "assets"
T = TypeVar("T")
# sshd's compiled-in PATH for root sessions; node_run uses the same so both see the docker shim.
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_TIMEOUT = 10.0


class NodeAddr(NamedTuple):
    mgmt: str
    fabric: str


def _parallel(fn: Callable[[str], T], items: Iterable[str]) -> list[T]:
    """Run `fn` for each node at once: node steps are independent and mostly wait on I/O."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


class SimCluster:
    """One instance of the simulated cluster: `up()`, use, `down()` (also a context manager).

    The instance number comes from `instance`, else env `SIMCLUSTER_INSTANCE`, else the lowest
    free one; it is locked for the life of this object so parallel runs never share names.
    `nodes` is how many nodes (head, w1, ...): 2 to 8.
    """

    def __init__(self, instance: int | None = None, nodes: int = DEFAULT_NODES) -> None:
        self.node_names: tuple[str, ...] = node_names(nodes)
        self.workers: tuple[str, ...] = self.node_names[1:]
        env = os.environ.get("SIMCLUSTER_INSTANCE")
        if instance is None and env:
            instance = int(env)
        self._lock: InstanceLock | None = (
            pick_instance() if instance is None else lock_instance(instance))
        self.layout: Layout = self._lock.layout
        self.instance = self.layout.instance
        self.state_dir = self.layout.state_dir
        self.ssh_config = self.state_dir / "ssh_config"
        self.known_hosts = self.state_dir / "known_hosts"
        self.control_key = self.state_dir / "keys" / "control_ed25519"
        self.cluster_key = self.state_dir / "keys" / "cluster_ed25519"
        self.nodes = {n: NodeAddr(self.layout.mgmt_ip(n), self.layout.fabric_ip(n))
                      for n in self.node_names}
        self.control_ip = self.layout.control_ip
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> SimCluster:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- lifecycle -------------------------------------------------------------------------

    def up(self, owner: str | None = None) -> SimCluster:
        """Build the cluster from nothing (first clearing leftovers of a crashed run of it).

        `owner` is recorded for other processes; `manual` keeps auto-pick away after this
        process exits (command-line use).
        """
        self._teardown()
        for sub in ("keys", "bin", "images"):
            (self.state_dir / sub).mkdir(parents=True)
        (self.state_dir / "owner").write_text(f"{owner or os.getpid()}\n")
        shutil.copy2(ASSETS / "docker", self.state_dir / "bin" / "docker")
        self._make_keys()
        self._make_network()
        self._write_node_files()
        _parallel(self._start_keeper, self.node_names)
        _parallel(self.start_sshd, self.node_names)
        return self

    def down(self) -> None:
        """Tear everything down; safe to call repeatedly, also after a failed `up()`."""
        try:
            self._teardown()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _teardown(self) -> None:
        lay = self.layout
        every = node_names(MAX_NODES)  # a crashed run of this instance may have had another size
        used = [n for n in every if self._keeper_pid(n) is not None
                and any((self.state_dir / n / "containers").iterdir())]
        # Containers with a private netns are not in the node's netns: let podman remove them.
        _parallel(lambda n: self.node_run(n, "podman rm -a -f -t 0", timeout=60), used)
        for ns in map(lay.netns, every):
            kill_all(netns_pids(ns), signal.SIGTERM)
        deadline = time.monotonic() + 3
        while any(netns_pids(lay.netns(n)) for n in every) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for ns in map(lay.netns, every):
            kill_all(netns_pids(ns), signal.SIGKILL)
        self._reap(wait=True)
        existing_ns = set(run(["ip", "netns", "list"]).stdout.split())
        existing_links = {line.split()[0].split("@")[0]
                          for line in run(["ip", "-br", "link"]).stdout.splitlines()}
        batch = [f"netns del {lay.netns(n)}" for n in every if lay.netns(n) in existing_ns]
        batch += [f"link del {link}" for link in lay.links() if link in existing_links]
        routes = run(["ip", "route", "show", "type", "unreachable"]).stdout
        if lay.fabric_cidr in routes.split():
            batch.append(f"route del unreachable {lay.fabric_cidr}")
        if batch:
            run(["ip", "-force", "-batch", "-"], input="\n".join(batch) + "\n", check=False)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def _reap(self, wait: bool = False) -> None:
        for proc in self._procs:
            if wait:
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.poll()
        self._procs = [p for p in self._procs if p.returncode is None]

    # ---- bring-up steps --------------------------------------------------------------------

    def _make_keys(self) -> None:
        jobs = [(self.control_key, "control"), (self.cluster_key, "head-cluster")]
        for n in self.node_names:
            (self.state_dir / n).mkdir()
            jobs.append((self.state_dir / n / "ssh_host_ed25519_key", n))
        procs = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                                   "-f", str(path)], stdin=subprocess.DEVNULL)
                 for path, comment in jobs]
        if any(p.wait() != 0 for p in procs):
            raise SimClusterError("ssh-keygen failed")

    def _make_network(self) -> None:
        lay = self.layout
        batch = [f"netns add {lay.netns(n)}" for n in self.node_names]
        batch += [
            f"link add {lay.mgmt_bridge} type bridge",
            f"addr add {lay.control_ip}/24 dev {lay.mgmt_bridge}",
            f"link set {lay.mgmt_bridge} up",
            f"link add {lay.fabric_bridge} mtu {FABRIC_MTU} type bridge",
            f"link set {lay.fabric_bridge} up",
            # The control has no fabric address; without this route, fabric-bound packets
            # would follow the default route off the machine.
            f"route add unreachable {lay.fabric_cidr}",
        ]
        for n in self.node_names:
            vm, vf = lay.veths(n)
            batch += [
                f"link add {vm} type veth peer name mgmt0 netns {lay.netns(n)}",
                f"link add {vf} mtu {FABRIC_MTU} type veth peer name fab0 mtu {FABRIC_MTU} "
                f"netns {lay.netns(n)}",
                f"link set {vm} master {lay.mgmt_bridge} up",
                f"link set {vf} master {lay.fabric_bridge} up",
            ]
        run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        _parallel(lambda n: run(["ip", "-n", lay.netns(n), "-batch", "-"], input=(
            f"link set lo up\naddr add {lay.mgmt_ip(n)}/24 dev mgmt0\nlink set mgmt0 up\n"
            f"addr add {lay.fabric_ip(n)}/24 dev fab0\nlink set fab0 up\n")), self.node_names)

    def _write_node_files(self) -> None:
        st, lay = self.state_dir, self.layout
        hosts = ["127.0.0.1 localhost", "::1 localhost", f"{lay.control_ip} control"]
        known = []
        for n in self.node_names:
            mgmt, fab = self.nodes[n]
            hosts += [f"{mgmt} {n}", f"{fab} {n}-fab"]
            key = (st / n / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"{n},{mgmt},{n}-fab,{fab} {' '.join(key)}")
        (st / "hosts").write_text("\n".join(hosts) + "\n")
        self.known_hosts.write_text("\n".join(known) + "\n")
        authorized = (self.control_key.with_suffix(".pub").read_text()
                      + self.cluster_key.with_suffix(".pub").read_text())
        for n in self.node_names:
            d = st / n
            for sub in ("root/.ssh", "srv", "tmp", "containers", "networks"):
                (d / sub).mkdir(parents=True)
            (d / "root").chmod(0o700)
            (d / "root/.ssh").chmod(0o700)
            (d / "tmp").chmod(0o1777)
            (d / "root/.ssh/authorized_keys").write_text(authorized)
            (d / "hostname").write_text(f"{n}\n")
            (d / "sshd_config").write_text(SSHD_CONFIG.format(d=d))
            etc = d / "etc-containers"
            shutil.copytree("/etc/containers", etc, ignore=shutil.ignore_patterns("libpod.conf"))
            (etc / "containers.conf").write_text(CONTAINERS_CONF.format(d=d))
            (etc / "storage.conf").write_text(STORAGE_CONF.format(d=d))
        # The head reaches the workers over the fabric with its own key, as on the real cluster.
        head_ssh = st / "head/root/.ssh"
        shutil.copy2(self.cluster_key, head_ssh / "id_ed25519")
        shutil.copy2(self.known_hosts, head_ssh / "known_hosts")
        (head_ssh / "config").write_text(
            "Host *\n  User root\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
        entries = [f"Host {n}\n  HostName {self.nodes[n].mgmt}\n" for n in self.node_names]
        entries.append(
            f"Host *\n  User root\n  IdentityFile {self.control_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n  ConnectTimeout 5\n")
        self.ssh_config.write_text("".join(entries))

    def _start_keeper(self, node: str) -> None:
        d = self.state_dir / node
        with open(d / "keeper.log", "wb") as log:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.layout.netns(node)}", "--",
                 "unshare", "--mount", "--uts", "--propagation", "private", "--",
                 "/bin/sh", "-c", KEEPER_SCRIPT, "keeper", str(d), str(self.state_dir), node,
                 *shared_host_paths()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._procs.append(proc)
        (d / "keeper.pid").write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + READY_TIMEOUT
        while not (d / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SimClusterError(
                    f"{node}: namespace setup failed: {(d / 'keeper.log').read_text()}")
            time.sleep(0.005)

    # ---- node access -----------------------------------------------------------------------

    def _keeper_pid(self, node: str) -> int | None:
        try:
            pid = int((self.state_dir / node / "keeper.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid in netns_pids(self.layout.netns(node)) else None

    def _enter(self, node: str) -> list[str]:
        pid = self._keeper_pid(node)
        if pid is None:
            raise SimClusterError(f"{node}: node is not running (instance {self.instance})")
        return ["nsenter", "-t", str(pid), "-m", "-u", "-n", "--"]

    def node_run(self, node: str, cmd: str, check: bool = False, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside a node, bypassing ssh (for test setup and assertions)."""
        env = {"PATH": NODE_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        proc = subprocess.run([*self._enter(node), "/bin/sh", "-c", f"cd /root && {cmd}"],
                              env=env, input=input, capture_output=True, text=True,
                              timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise SimClusterError(f"{node}: `{cmd}` failed ({proc.returncode}): "
                                  f"{proc.stderr.strip()}")
        return proc

    def ssh(self, node: str, cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command on a node the way the control does: `ssh -F ssh_config NODE CMD`."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), node, cmd],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start_sshd(self, node: str) -> None:
        """Start the node's sshd (again) and wait until a real key-verified login works."""
        d = self.state_dir / node
        proc = subprocess.Popen(
            [*self._enter(node), SSHD, "-D", "-f", str(d / "sshd_config"), "-E",
             str(d / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._procs.append(proc)
        (d / "sshd.pid").write_text(f"{proc.pid}\n")
        addr = (self.nodes[node].mgmt, 22)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                socket.create_connection(addr, timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SimClusterError(f"{node}: sshd did not start: "
                                          f"{(d / 'sshd.log').read_text()}") from None
                time.sleep(0.01)
        probe = self.ssh(node, "true", timeout=READY_TIMEOUT)
        if probe.returncode != 0:
            raise SimClusterError(f"{node}: ssh login failed: {probe.stderr.strip()}")

    def stop_sshd(self, node: str) -> None:
        """Make a node unreachable: stop its sshd and every ssh session on it.

        The node's namespaces, containers and files stay, so `start_sshd` brings it back.
        """
        pids = [p for p in netns_pids(self.layout.netns(node)) if comm(p) == "sshd"]
        kill_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        kill_all([p for p in pids if alive(p)], signal.SIGKILL)
        self._reap()

    def mount_small_fs(self, node: str, path: str, size_mb: int) -> None:
        """Mount a `size_mb` tmpfs at `path` inside one node (a nearly full disk for tests)."""
        self.node_run(node, f"mkdir -p '{path}' && mount -t tmpfs -o size={size_mb}m,mode=755 "
                      f"gx10-small '{path}'", check=True)

    def shape_uplink(self, rate: str | None) -> None:
        """Limit control<->nodes traffic on the mgmt bridge (the control's one shared uplink).

        tbf on the bridge shapes control->nodes; nodes->control is redirected through an ifb
        device and shaped the same. `rate=None` removes the shaping. Example: "200mbit".
        """
        lay = self.layout
        bridge, ifb = lay.mgmt_bridge, lay.ifb
        run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False)
        run(["tc", "qdisc", "del", "dev", bridge, "ingress"], check=False)
        run(["ip", "link", "del", ifb], check=False)
        if rate is None:
            return
        tbf = ["tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]
        run(["tc", "qdisc", "add", "dev", bridge, "root", *tbf])
        run(["ip", "link", "add", ifb, "type", "ifb"])
        run(["ip", "link", "set", ifb, "up"])
        run(["tc", "qdisc", "add", "dev", ifb, "root", *tbf])
        run(["tc", "qdisc", "add", "dev", bridge, "handle", "ffff:", "ingress"])
        # u32 "match everything": this kernel has no matchall classifier.
        run(["tc", "filter", "add", "dev", bridge, "parent", "ffff:", "protocol", "all", "u32",
              "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb])

    def shape_fabric(self, rate: str | None) -> None:
        """Limit each worker's fabric port (traffic toward it: its host-side veth's egress), so
        the head -> workers hop takes a realistic share of the job. `rate=None` removes it."""
        for n in self.node_names:
            if n == "head":
                continue
            vf = self.layout.veths(n)[1]
            run(["tc", "qdisc", "del", "dev", vf, "root"], check=False)
            if rate is not None:
                run(["tc", "qdisc", "add", "dev", vf, "root", "tbf", "rate", rate, "burst", "1mb",
                     "latency", "50ms"])

    def link_bytes(self, node: str, net: str = "mgmt") -> int:
        """Bytes sent toward `node` over its mgmt (or fabric) port so far: what crossed the link."""
        vm, vf = self.layout.veths(node)
        return int(Path(f"/sys/class/net/{vm if net == 'mgmt' else vf}/statistics/tx_bytes").read_text())

    def status(self) -> str:
        """One line per node: addresses and whether its namespaces and sshd are alive."""
        lines = [f"instance {self.instance}: state {self.state_dir}, ssh -F {self.ssh_config}"]
        for n, (mgmt, fab) in self.nodes.items():
            pids = netns_pids(self.layout.netns(n))
            sshd = any(comm(p) == "sshd" for p in pids)
            up = "up" if self._keeper_pid(n) else "down"
            lines.append(f"  {n:<4} mgmt {mgmt:<13} fabric {fab:<13} node {up:<4} "
                         f"sshd {'up' if sshd else 'down'}")
        return "\n".join(lines)

    # ---- images ----------------------------------------------------------------------------

    def image_id(self, node: str, name: str) -> str:
        """The full image ID of `name` on `node` (podman's `sha256:`-less hex)."""
        out = self.node_run(node, f"podman image inspect --format '{{{{.Id}}}}' "
                            f"'{images.normalize(name)}'", check=True)
        return out.stdout.strip()

    def build_test_image(self, node: str, name: str, torch: str = "2.11.0+cu130",
                         cuda: str | None = "13.0",
                         vllm: str = "0.22.1rc1.dev124+gace95c9cf.d20260603",
                         transformers: str = "5.0.0", extra_bytes: int = 0) -> str:
        """Import a busybox test image reporting these versions on `node`; returns its ID.

        Building the same arguments on several nodes yields the same ID everywhere.
        """
        spec = images.ImageSpec(torch, cuda, vllm, transformers, extra_bytes)
        tarball = images.rootfs_for(self.state_dir / "images", spec)
        self.node_run(node, " ".join(["podman", "import", "-q", *(
            f"'{a}'" for a in images.IMPORT_CHANGES), str(tarball),
            images.normalize(name)]), check=True, timeout=600)
        return self.image_id(node, name)

    def distribute_test_image(self, name: str, nodes: Iterable[str] | None = None,
                              source: str = "head") -> dict[str, str]:
        """Copy image `name` from `source` to `nodes` (default: the workers); node -> image ID.

        One `podman save` to a shared archive, then `podman load` on all targets at once:
        for a 1 GiB image about twice as fast as re-importing the rootfs on every node.
        """
        targets = [n for n in (self.workers if nodes is None else nodes) if n != source]
        archive = self.state_dir / "images" / f"save-{os.getpid()}-{time.monotonic_ns()}.tar"
        self.node_run(source, f"podman save -q -o {archive} '{images.normalize(name)}'",
                      check=True, timeout=900)
        try:
            _parallel(lambda n: self.node_run(n, f"podman load -q -i {archive}", check=True,
                                              timeout=900), targets)
        finally:
            archive.unlink()
        ids = {n: self.image_id(n, name) for n in [source, *targets]}
        if len(set(ids.values())) != 1:
            raise SimClusterError(f"image {name} has different IDs across nodes: {ids}")
        return ids


__all__ = ["MANUAL_OWNER", "NodeAddr", "SimCluster", "SimClusterError", "missing_requirements"]
