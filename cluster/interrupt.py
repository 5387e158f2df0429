"""Ctrl-C that stops remote work within seconds, not when the remote command happens to end.

Without a pty, Fabric answers Ctrl-C by re-raising it and then joining its reader threads, which
return only when the remote command ends (fabric/runners.py `Remote.send_interrupt`, invoke
runners.py `_run_body`): a 40 GB `docker save | ssh w docker load` kept streaming for minutes.
So every remote command runs in its own session on the node (`setsid`), which writes its process
group to a pid file named by a token; `guard()` installs a SIGINT handler that, besides raising
KeyboardInterrupt as Python's default does, kills each registered group (TERM, then KILL after
TERM_GRACE_S) over a fresh channel of the same SSH connection. The remote command then ends, Fabric's
readers see end-of-file and the interrupt propagates. Local processes (rsync, ssh streams) are
started in their own session and killed the same way. Killing the group kills the head's
`ssh wN docker load` clients too: a load cut mid-stream fails and tags nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .shell import q

RUN_DIR = "/tmp/gx10-runs"
# TERM first: most commands end at once; `podman build` needs 1-3 s (more on a loaded machine)
# to remove its RUN container (killed sooner, the container's process outlives the build).
# KILL only what is left after this; remotely that wait is detached and delays nobody.
TERM_GRACE_S = 10.0
WAIT_S = 5.0  # how long a Ctrl-C waits, at most, for a remote group that is cleaning up

Stopper = Callable[[], None]

_lock = threading.Lock()
_active: dict[str, Stopper] = {}
_interrupted = threading.Event()
_stopping: list[threading.Thread] = []


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def remote_wrapper(command: str, token: str, shell_leads: bool = True) -> str:
    """`command` run by the user's shell as before, but in its own session whose process group
    is written to RUN_DIR/TOKEN.pid (removed when it ends); the exit status is kept. By default
    the shell running `command` leads the group, as under plain sshd (telemetry relies on it).
    `shell_leads=False` puts a small `sh` there instead: with the command's shell as leader, a
    TERMed `podman build` left its RUN container running (seen on the simulated cluster; why is
    not yet understood), with the `sh` leader it removes it."""
    pidfile = q(f"{RUN_DIR}/{token}.pid")
    inner = 'echo $$ > "$0"; exec "$@"' if shell_leads else 'echo $$ > "$0"; "$@"'
    return (f"mkdir -p {RUN_DIR} && {{ setsid -w sh -c {q(inner)} {pidfile} "
            f'"${{SHELL:-sh}}" -c {q(command)}; rc=$?; rm -f {pidfile}; exit $rc; }}')


def remote_kill(token: str) -> str:
    """Stop the group started by `remote_wrapper(..., token)`: TERM now, wait up to WAIT_S for it
    to end while the caller keeps the connection (a command cleaning up, like `podman build`
    removing its RUN container, dies half-way once its output channel closes), then KILL what is
    left after TERM_GRACE_S from a detached watcher."""
    pidfile = f"{RUN_DIR}/{token}.pid"
    wait, rest = int(WAIT_S / 0.1), int((TERM_GRACE_S - WAIT_S) / 0.1)
    alive = 'kill -0 -- -"$p" 2>/dev/null'
    return (f'f={q(pidfile)}; p=$(cat "$f" 2>/dev/null) || exit 0; rm -f "$f"; '
            f'kill -TERM -- -"$p" 2>/dev/null || exit 0; '
            f'for i in $(seq {wait}); do {alive} || exit 0; sleep 0.1; done; '
            f'(for i in $(seq {rest}); do {alive} || exit 0; sleep 0.1; done; '
            f'kill -KILL -- -"$p" 2>/dev/null) </dev/null >/dev/null 2>&1 & exit 0')


def kill_local_group(proc: subprocess.Popen[Any]) -> None:
    """TERM then KILL a local process group started with start_new_session=True. Its leader is
    polled (and so reaped): a dead but unreaped leader would keep the group "alive"."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(int(TERM_GRACE_S / 0.05)):
        if proc.poll() is not None:
            return
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def registered(token: str, stop: Stopper) -> Iterator[None]:
    """While inside, a Ctrl-C calls `stop` (from another thread)."""
    with _lock:
        _active[token] = stop
    if _interrupted.is_set():  # started after the Ctrl-C, in a thread that has not noticed yet
        _spawn([stop])
    try:
        yield
    finally:
        with _lock:
            _active.pop(token, None)


def interrupted() -> bool:
    return _interrupted.is_set()


def _spawn(stoppers: list[Stopper]) -> None:
    def run(stop: Stopper) -> None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - a node gone away cannot be stopped; nothing else to do
            pass

    for stop in stoppers:
        t = threading.Thread(target=run, args=(stop,), name="interrupt-stop", daemon=True)
        t.start()
        _stopping.append(t)


def stop_all() -> None:
    """Stop every registered operation, in parallel (what the SIGINT handler does)."""
    _interrupted.set()
    with _lock:
        stoppers = list(_active.values())
    _spawn(stoppers)


def wait_stopped(timeout: float = WAIT_S + 3) -> None:
    """Wait for the stops started so far (so the connections they use are not closed first)."""
    for t in list(_stopping):
        t.join(timeout)


@contextmanager
def guard() -> Iterator[None]:
    """Install the SIGINT handler (main thread only); restore the previous one after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        first = not _interrupted.is_set()
        if first:
            stop_all()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
