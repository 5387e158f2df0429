"""The SSH layer: Fabric connections built from the config, run on one node or all in parallel.

Host keys are verified against a known_hosts file (Fabric itself accepts any key). Commands never
raise for a remote failure: they return a `Result` per host, and `check` turns failures into one
`RemoteError` that names every failed host, the command and its stderr tail. A `Cluster` made
with `dry_run=True` prints mutating commands per host instead of running them; read-only
commands still run, because a plan depends on what the nodes hold.
"""

from __future__ import annotations

import codecs
import io
import logging
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from . import interrupt
from .config import Node, Settings
from .errors import ClusterError
from .opslog import OpsLog
from .shell import LineSplitter, tail

# How the head reaches a worker over the fabric: its own keys and known_hosts, host keys verified
# (no StrictHostKeyChecking=no), never a password prompt.
FABRIC_SSH = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10"


class Sink(Protocol):
    """Where streamed command output goes (a terminal, a progress bar)."""

    def write(self, data: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclass
class Result:
    node: str
    command: str
    exit_code: int | None  # None: never ran (unreachable, timed out)
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    error: str = ""  # why it never ran
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def why(self) -> str:
        """One short explanation of a failure, for error messages."""
        if self.error:
            return self.error
        last = tail(self.stderr) or tail(self.stdout)
        return f"exit {self.exit_code}" + (f": {last}" if last else "")


class RemoteError(ClusterError):
    """One or more hosts failed; the message names each with its command and stderr tail."""

    def __init__(self, what: str, failed: Mapping[str, Result]):
        self.failed = dict(failed)
        lines = [f"{what} failed on {len(failed)} node(s): {', '.join(failed)}"]
        for name, r in failed.items():
            lines.append(f"  {name}: {r.why()}")
            lines.append(f"    command: {_short(r.command)}")
        super().__init__("\n".join(lines))


def _short(command: str, limit: int = 300) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def prefixed_lines(node: str, sink: IO[str], also: Callable[[str], None] | None = None) -> LineSplitter:
    """Echoes remote output line by line as `[node] line` while the command runs (blank lines
    left out); `also` receives each line too (e.g. for the operations log)."""

    def echo(line: str) -> None:
        if line.strip():
            sink.write(f"[{node}] {line}\n")
            if also:
                also(line)

    return LineSplitter(echo, on_flush=sink.flush)


# paramiko logs a failed handshake (port open, no SSH banner; sshd dropping us under MaxStartups)
# as an ERROR with a traceback from its transport thread, which Python's last-resort handler
# prints beside our own one-line UNREACHABLE report. The failure reaches us as an exception anyway.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class Cluster:
    """The nodes of one config, reachable over SSH. Functions in cluster/ take one of these."""

    def __init__(
        self,
        settings: Settings,
        *,
        dry_run: bool = False,
        out: IO[str] | None = None,
        ops_log: OpsLog | None = None,
    ):
        settings.require_cluster()
        self.settings = settings
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.ops_log = ops_log if ops_log is not None else OpsLog(settings.ops_log)
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()

    # -- nodes -----------------------------------------------------------------------------
    @property
    def head(self) -> Node:
        return self.settings.head

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.settings.workers

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.settings.nodes

    def say(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()

    # -- connections -----------------------------------------------------------------------
    def _fabric_config(self) -> FabricConfig:
        ssh = self.settings.ssh
        overrides = {"run": {"in_stream": False}, "load_ssh_configs": True}
        cfg = FabricConfig(
            overrides=overrides,
            runtime_ssh_path=str(ssh.config_file) if ssh.config_file else None,
        )
        cfg.load_ssh_config()
        return cfg

    def known_hosts_file(self, conn: Connection | None = None) -> Path:
        ssh = self.settings.ssh
        if ssh.known_hosts:
            return ssh.known_hosts
        if conn is not None and conn.ssh_config.get("userknownhostsfile"):
            return Path(conn.ssh_config["userknownhostsfile"].split()[0]).expanduser()
        return Path("~/.ssh/known_hosts").expanduser()

    def connection(self, node: Node) -> Connection:
        """A connected Fabric Connection for `node`, host key verified; cached per node."""
        with self._lock:
            conn = self._connections.get(node.name)
            if conn is None:
                conn = self._new_connection(node)
                self._connections[node.name] = conn
            if not conn.is_connected:
                conn.open()
                if self.settings.ssh.accept_new_host_keys:
                    conn.client.save_host_keys(str(self.known_hosts_file(conn)))
            return conn

    def _new_connection(self, node: Node) -> Connection:
        ssh = self.settings.ssh
        kwargs: dict[str, object] = {}
        if ssh.key:
            kwargs["key_filename"] = [str(ssh.key)]
        conn = Connection(
            node.mgmt,
            user=ssh.user,
            config=self._fabric_config(),
            connect_timeout=ssh.connect_timeout,
            connect_kwargs=kwargs,
        )
        known = self.known_hosts_file(conn)
        if known.exists():
            conn.client.load_host_keys(str(known))
        elif not ssh.accept_new_host_keys:
            raise FileNotFoundError(
                f"known_hosts file {known} does not exist: host keys cannot be verified. "
                "Set cluster.ssh.known_hosts, or cluster.ssh.accept_new_host_keys: true once"
            )
        else:
            known.parent.mkdir(parents=True, exist_ok=True)
            known.touch()
            conn.client.load_host_keys(str(known))
        policy = paramiko.AutoAddPolicy() if ssh.accept_new_host_keys else paramiko.RejectPolicy()
        conn.client.set_missing_host_key_policy(policy)
        return conn

    def _connect_error(self, node: Node, exc: BaseException) -> str:
        where = f"{node.name} ({node.mgmt})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return (
                f"HOST KEY CHANGED for {where}: the node's key does not match known_hosts. "
                "If the node was reinstalled, remove its old line with ssh-keygen -R and verify "
                "the new key; otherwise do not connect"
            )
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return (
                f"host key of {where} is not in {self.known_hosts_file()}: check the key and add it "
                "(ssh-keyscan, then compare the fingerprint on the node), or set "
                "cluster.ssh.accept_new_host_keys: true for a first contact"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return (
                f"SSH login to {where} as {self.settings.ssh.user or 'the default user'} was "
                f"refused: check cluster.ssh.user and cluster.ssh.key ({exc})"
            )
        if isinstance(exc, FileNotFoundError) and "known_hosts" in str(exc):
            return f"{where}: {exc}"
        if isinstance(exc, socket.timeout | TimeoutError):
            return f"cannot reach {where}: connection timed out; is the node up and on the network?"
        if isinstance(exc, OSError | paramiko.SSHException):
            return f"cannot reach {where}: {exc}; is the node up and sshd running?"
        return f"cannot reach {where}: {type(exc).__name__}: {exc}"

    # -- running ---------------------------------------------------------------------------
    def run(
        self,
        node: Node,
        command: str,
        *,
        mutating: bool = False,
        stream: bool = False,
        timeout: float | None = None,
        sink: Sink | None = None,
        shell_leads: bool = True,
    ) -> Result:
        """Run `command` (a POSIX shell line) on `node`; never raises for a remote failure.
        `stream` echoes output as `[node] line`; `sink` receives stdout as it arrives instead.
        `shell_leads`: see interrupt.remote_wrapper."""
        if mutating and self.dry_run:
            self.say(f"[dry-run] {node.name}: {command}")
            self.ops_log.record(node.name, command, 0, 0.0, note="dry-run")
            return Result(node.name, command, 0, dry_run=True)
        start = time.monotonic()
        try:
            conn = self.connection(node)
            kwargs: dict[str, object] = {"hide": True, "warn": True, "in_stream": False}
            if timeout:
                kwargs["timeout"] = timeout
            if stream:
                kwargs["out_stream"] = prefixed_lines(node.name, self.out)
                kwargs["err_stream"] = prefixed_lines(node.name, self.out)
            elif sink is not None:
                kwargs["out_stream"] = sink
            token = interrupt.new_token()
            with interrupt.registered(token, lambda: self._kill_remote(conn, token)):
                try:
                    r = conn.run(interrupt.remote_wrapper(command, token, shell_leads), **kwargs)
                except CommandTimedOut:
                    self._kill_remote(conn, token)
                    raise
            result = Result(node.name, command, r.exited, r.stdout, r.stderr)
        except KeyboardInterrupt:
            self.ops_log.record(node.name, command, None, time.monotonic() - start,
                                note="interrupted (Ctrl-C): its processes on the node were stopped")
            raise
        except CommandTimedOut as exc:
            result = Result(
                node.name, command, None, exc.result.stdout, exc.result.stderr,
                error=f"timed out after {timeout:.0f} s on {node.name}",
            )
            self._drop(node)
        except Exception as exc:  # noqa: BLE001 - every connect failure becomes a named result
            result = Result(node.name, command, None, error=self._connect_error(node, exc))
            self._drop(node)
        result.seconds = time.monotonic() - start
        self.ops_log.record(
            node.name, command, result.exit_code, result.seconds,
            stderr=result.stderr, note=f"error: {result.error}" if result.error else "",
        )
        return result

    def stop_remote(self, node: Node, token: str) -> None:
        """Stop a command started on `node` through interrupt.remote_wrapper(..., token) by a
        process of our own (a control-side ssh stream), over the Fabric connection."""
        self._kill_remote(self.connection(node), token)

    def stream_argv(self, node: Node, command: str, token: str) -> list[str]:
        """`ssh NODE COMMAND` for a big stream the control runs itself, stoppable by token."""
        return self.ssh_argv(node, interrupt.remote_wrapper(command, token))

    @staticmethod
    def _kill_remote(conn: Connection, token: str) -> None:
        """Stop a command started through interrupt.remote_wrapper, over a new channel of the
        same connection (its own channel is busy streaming)."""
        transport = conn.client.get_transport()
        if transport is None or not transport.is_active():
            return
        chan = transport.open_session(timeout=3)
        try:
            chan.exec_command(interrupt.remote_kill(token))
            chan.status_event.wait(interrupt.WAIT_S + 3)
        finally:
            chan.close()

    def _drop(self, node: Node) -> None:
        with self._lock:
            conn = self._connections.pop(node.name, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    def run_all(
        self,
        command: str | Callable[[Node], str | None],
        nodes: Iterable[Node] | None = None,
        *,
        mutating: bool = False,
        stream: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Result]:
        """Run on several nodes in parallel (default: all). `command` may be a function of the
        node; a node for which it returns None is left out."""
        targets = list(nodes if nodes is not None else self.nodes)
        plan = {n.name: (n, command(n) if callable(command) else command) for n in targets}
        jobs = {name: (n, c) for name, (n, c) in plan.items() if c is not None}
        if not jobs:
            return {}
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {
                name: pool.submit(
                    self.run, n, c, mutating=mutating, stream=stream, timeout=timeout
                )
                for name, (n, c) in jobs.items()
            }
            return {name: f.result() for name, f in futures.items()}

    @staticmethod
    def check(what: str, results: Mapping[str, Result]) -> dict[str, Result]:
        """Raise one RemoteError naming every failed host; return the results otherwise."""
        failed = {name: r for name, r in results.items() if not r.ok}
        if failed:
            raise RemoteError(what, failed)
        return dict(results)

    # -- the head as the hub of the fabric -------------------------------------------------
    def fabric_ssh(self, worker: Node, command: str) -> str:
        """The command line the head runs to execute `command` on `worker` over the fabric,
        with the head's own keys and known_hosts (no StrictHostKeyChecking=no)."""
        user = self.settings.ssh.fabric_user
        target = f"{user}@{worker.fabric}" if user else worker.fabric
        return f"{FABRIC_SSH} {shlex.quote(target)} {shlex.quote(command)}"

    def fabric_rsync_target(self, worker: Node, path: str) -> str:
        """`[user@]fabric-ip:path` for an rsync the head runs toward a worker."""
        user = self.settings.ssh.fabric_user
        host = f"{user}@{worker.fabric}" if user else worker.fabric
        return f"{host}:{path}"

    # -- the control node's own ssh/rsync ---------------------------------------------------
    def ssh_options(self) -> list[str]:
        """OpenSSH options equal to what the Fabric connections use: same key, user, known_hosts,
        host keys verified. For rsync/ssh processes the control runs itself (big streams)."""
        ssh = self.settings.ssh
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={ssh.connect_timeout}"]
        if ssh.config_file:
            opts = ["-F", str(ssh.config_file), *opts]
        if ssh.key:
            opts += ["-i", str(ssh.key), "-o", "IdentitiesOnly=yes"]
        if ssh.user:
            opts += ["-l", ssh.user]
        if ssh.known_hosts or not ssh.config_file:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts_file()}"]
        policy = "accept-new" if ssh.accept_new_host_keys else "yes"
        return [*opts, "-o", f"StrictHostKeyChecking={policy}"]

    def ssh_argv(self, node: Node, command: str) -> list[str]:
        return ["ssh", *self.ssh_options(), node.mgmt, command]

    def run_local(
        self,
        argv: list[str],
        *,
        label: str = "control",
        mutating: bool = False,
        sink: Sink | None = None,
        stdin: IO[bytes] | None = None,
    ) -> Result:
        """Run a process on the control node (rsync, ssh streams), logged like remote commands.
        With `sink`, output goes there as it arrives (progress); else it is captured."""
        shown = shlex.join(argv)
        if mutating and self.dry_run:
            self.say(f"[dry-run] {label}: {shown}")
            self.ops_log.record(label, shown, 0, 0.0, note="dry-run")
            return Result(label, shown, 0, dry_run=True)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                start_new_session=True,  # Ctrl-C stops it through interrupt, TERM then KILL
            )
        except OSError as exc:
            result = Result(label, shown, None, error=f"cannot run {argv[0]} on the control node: {exc}")
        else:
            try:
                with interrupt.registered(interrupt.new_token(), lambda: interrupt.kill_local_group(proc)):
                    result = self._drain(proc, label, shown, sink)
            except KeyboardInterrupt:
                interrupt.kill_local_group(proc)
                proc.wait()
                self.ops_log.record(label, shown, None, time.monotonic() - start,
                                    note="interrupted (Ctrl-C): stopped")
                raise
        result.seconds = time.monotonic() - start
        self.ops_log.record(label, shown, result.exit_code, result.seconds, stderr=result.stderr,
                            note=f"error: {result.error}" if result.error else "")
        return result

    @staticmethod
    def _drain(proc: subprocess.Popen[str], label: str, shown: str, sink: Sink | None) -> Result:
        """Read a local process to its end: stdout to `sink` (or kept), stderr kept."""
        err_lines: list[str] = []
        drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True)
        drain.start()
        out_parts: list[str] = []
        assert isinstance(proc.stdout, io.TextIOWrapper)
        # read1: what the pipe holds now. A text read(4096) waits for 4096 characters, about
        # a minute of rsync's progress lines, so the bars saw hop 1 a minute late.
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        raw = proc.stdout.buffer
        while data := raw.read1(65536):
            chunk = decode(data)
            if sink is not None:
                sink.write(chunk)
            else:
                out_parts.append(chunk)
        proc.wait()
        drain.join()
        return Result(label, shown, proc.returncode, "".join(out_parts), "".join(err_lines))

    def close(self) -> None:
        for node in list(self._connections):
            self._drop(self.settings.node(node))

    def __enter__(self) -> Cluster:
        self._guard = interrupt.guard()
        self._guard.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        interrupt.wait_stopped()  # the stops use these connections: let them finish first
        self.close()
        self._guard.__exit__(None, None, None)

