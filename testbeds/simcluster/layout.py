"""Names, addresses and paths of one simulated-cluster instance, and who may use which instance.

Several engineers run the simulated cluster on the same machine at once, so every kernel object
(network namespace, bridge, veth, route) and every subnet is derived from a small instance number.
An instance is claimed with an exclusive `flock`; the state directory records its owner so that a
crashed run (owner dead) can be recovered while a live or manually started one is left alone.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

# /var/tmp, not /tmp: each node gets a private /tmp, and the state (host keys, podman stores)
# must stay visible inside every node at the same path.
BASE_DIR = Path("/var/tmp/gx10-simcluster")
DEFAULT_NODES = 4
MAX_NODES = 8  # host octets 10..17; teardown looks for this many so any size is cleaned up
HEAD_OCTET = 10


def node_names(count: int = DEFAULT_NODES) -> tuple[str, ...]:
    """`head` then `w1`..`w<count-1>`: a pair (the two boxes cabled directly), four, or eight."""
    if not 2 <= count <= MAX_NODES:
        raise SimClusterError(f"a simulated cluster has 2 to {MAX_NODES} nodes, not {count}")
    return ("head", *(f"w{i}" for i in range(1, count)))


def host_octet(node: str) -> int:
    return HEAD_OCTET if node == "head" else HEAD_OCTET + int(node.removeprefix("w"))


CONTROL_OCTET = 1
FABRIC_MTU = 9000
# 0 is left to the shared reference sketch (10.77.0.0/24); octets stop at 254.
INSTANCE_RANGE = range(1, 255)
MANUAL_OWNER = "manual"


class SimClusterError(RuntimeError):
    """The simulated cluster could not be brought up, used or torn down."""



@dataclass(frozen=True)
class Layout:
    """Everything named after the instance number; computing it changes nothing on the machine."""

    instance: int

    @property
    def prefix(self) -> str:
        return f"gx{self.instance}"

    @property
    def mgmt_net(self) -> str:
        return f"10.77.{self.instance}"

    @property
    def fabric_net(self) -> str:
        return f"10.78.{self.instance}"

    @property
    def fabric_cidr(self) -> str:
        return f"{self.fabric_net}.0/24"

    @property
    def control_ip(self) -> str:
        return f"{self.mgmt_net}.{CONTROL_OCTET}"

    @property
    def mgmt_bridge(self) -> str:
        return f"{self.prefix}m0"

    @property
    def fabric_bridge(self) -> str:
        return f"{self.prefix}f0"

    @property
    def ifb(self) -> str:
        return f"{self.prefix}ifb"

    @property
    def state_dir(self) -> Path:
        return BASE_DIR / str(self.instance)

    @property
    def lock_path(self) -> Path:
        return BASE_DIR / f"{self.instance}.lock"

    def netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def mgmt_ip(self, node: str) -> str:
        return f"{self.mgmt_net}.{host_octet(node)}"

    def fabric_ip(self, node: str) -> str:
        return f"{self.fabric_net}.{host_octet(node)}"

    def veths(self, node: str) -> tuple[str, str]:
        """Host-side veth names (mgmt, fabric); at most 10 chars, under the 15-char limit."""
        return f"{self.prefix}{node}m", f"{self.prefix}{node}f"

    def links(self) -> list[str]:
        """Every root-namespace interface of this instance, bridges last."""
        names = [v for node in node_names(MAX_NODES) for v in self.veths(node)]
        return [*names, self.ifb, self.mgmt_bridge, self.fabric_bridge]


class InstanceLock:
    """An exclusive hold on one instance number for the life of this process (or until release)."""

    def __init__(self, layout: Layout, fd: int) -> None:
        self.layout = layout
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _try_lock(layout: Layout) -> InstanceLock | None:
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return InstanceLock(layout, fd)


def running_instances() -> list[int]:
    """Instances with a state directory on this machine (live, manual or crashed)."""
    if not BASE_DIR.exists():
        return []
    return sorted(int(p.name) for p in BASE_DIR.iterdir() if p.is_dir() and p.name.isdigit())


def read_owner(layout: Layout) -> str | None:
    """The recorded owner: a pid, `manual` (started from the command line), or None."""
    try:
        return (layout.state_dir / "owner").read_text().strip() or None
    except FileNotFoundError:
        return None


def _owner_alive(owner: str | None) -> bool:
    if owner is None:
        return False
    if owner == MANUAL_OWNER:
        return True
    try:
        os.kill(int(owner), 0)
    except (ValueError, ProcessLookupError):
        return False
    return int(owner) != os.getpid()


def lock_instance(instance: int) -> InstanceLock:
    """Claim a given instance; fails if another live process holds it."""
    if instance not in INSTANCE_RANGE:
        raise SimClusterError(f"instance {instance} is outside {INSTANCE_RANGE}")
    layout = Layout(instance)
    held = _try_lock(layout)
    if held is None:
        raise SimClusterError(
            f"simcluster instance {instance} is in use (owner {read_owner(layout)}); "
            f"pick another with SIMCLUSTER_INSTANCE or leave it unset to auto-pick"
        )
    return held


def pick_instance() -> InstanceLock:
    """Claim the lowest instance that is neither locked nor left running by a live owner."""
    for instance in INSTANCE_RANGE:
        layout = Layout(instance)
        held = _try_lock(layout)
        if held is None:
            continue
        if _owner_alive(read_owner(layout)):
            held.release()
            continue
        return held
    raise SimClusterError(
        "no free simcluster instance (1..254); see `python -m testbeds.simcluster status`")
