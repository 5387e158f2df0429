"""What the simulated cluster needs from the machine it runs on (root, tools, sshd), which host
paths its nodes must keep seeing, and the plain process helpers the set-up and teardown use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .layout import SimClusterError

# The checkout this package runs from (testbeds/simcluster/ -> the repo): nodes bind it in.
PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
REQUIRED_TOOLS = ("ip", "tc", "nsenter", "unshare", "ssh", "ssh-keygen", "podman", "runc",
                  "busybox", "rsync")
SSHD = "/usr/sbin/sshd"


def missing_requirements() -> list[str]:
    """Why this machine cannot run the simulated cluster (empty when it can)."""
    problems = [] if os.geteuid() == 0 else ["needs root (network namespaces, mounts, sshd)"]
    problems += [f"missing tool: {t}" for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not Path(SSHD).exists():
        problems.append(f"missing {SSHD} (apt-get install openssh-server)")
    return problems


def run(cmd: Sequence[str], input: str | None = None, check: bool = True,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise SimClusterError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def shared_host_paths() -> list[str]:
    """The project checkout and its venv, when they lie where nodes have private mounts (/root,
    /tmp; CI may clone under /tmp): nodes run project code (the stand-in launcher, the simulated
    vLLM endpoint) from there."""
    private = ("/root/", "/tmp/")
    candidates = {str(PROJECT_DIR), os.path.realpath(sys.prefix)}
    return sorted(p for p in candidates if p.startswith(private) and os.path.isdir(p))


def netns_pids(name: str) -> list[int]:
    """Live processes in a named network namespace (what `ip netns pids` prints)."""
    try:
        target = os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """True for a running process; False for a gone or zombie one (killed, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
