"""The serving containers on the nodes: find them, name their model, stop them, follow their logs.

A serving container is one named `cluster.container_name` (the launcher's `vllm_node`) or one
running a configured model's image under another name: single tenancy must see both. The
launcher starts its containers with `--rm`, so a container's log vanishes with it; `LogFollower`
streams `docker logs -f` from the moment the container appears and keeps the last lines in
memory, so they can be saved after the container is gone.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .config import Node, Settings
from .facts import normalize_image
from .remote import Cluster, RemoteError, Result
from .shell import LineSplitter, q


@dataclass(frozen=True)
class Found:
    node: str
    name: str
    image: str
    status: str

    @property
    def running(self) -> bool:
        return self.status.lower().startswith("up")


def model_images(settings: Settings) -> dict[str, list[str]]:
    """Normalized image tag -> the configured models that run on it."""
    out: dict[str, list[str]] = {}
    for m in settings.models.values():
        out.setdefault(normalize_image(settings.image(m.image).tag), []).append(m.name)
    return out


def list_command(docker: str) -> str:
    return f"{q(docker)} ps -a --format '{{{{.Names}}}}\t{{{{.Image}}}}\t{{{{.Status}}}}'"


def parse_list(node: str, stdout: str, settings: Settings) -> list[Found]:
    images = model_images(settings)
    found = []
    for line in stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        name, image, status = cols[0], cols[1], cols[2]
        if name == settings.container_name or normalize_image(image) in images:
            found.append(Found(node, name, image, status))
    return sorted(found, key=lambda f: f.name)


@dataclass
class Survey:
    """Serving containers per node (running or exited), and nodes that could not be asked."""

    found: dict[str, list[Found]] = field(default_factory=dict)
    failed: dict[str, Result] = field(default_factory=dict)

    @property
    def all(self) -> list[Found]:
        return [f for fs in self.found.values() for f in fs]

    def nodes_with(self) -> list[str]:
        return [n for n, fs in self.found.items() if fs]


def survey(cluster: Cluster, nodes: Iterable[Node] | None = None) -> Survey:
    """`docker ps -a` on every node, in parallel, keeping the serving containers."""
    s = cluster.settings
    results = cluster.run_all(list_command(s.docker), list(nodes) if nodes is not None else None, timeout=60)
    out = Survey()
    for name, r in results.items():
        if r.ok:
            out.found[name] = parse_list(name, r.stdout, s)
        else:
            out.failed[name] = r
    return out


def guess_models(settings: Settings, found: Iterable[Found]) -> list[str]:
    """The configured models whose image the containers run (unambiguous images only)."""
    images = model_images(settings)
    names = set()
    for f in found:
        models = images.get(normalize_image(f.image), [])
        if len(models) == 1:
            names.add(models[0])
    return sorted(names)


def remove_command(docker: str, names: Iterable[str]) -> str:
    """The seed's stop: `docker rm -f` (kills and removes; `--rm` containers would vanish anyway).
    One name per call: podman 4.3 given several names, one of them gone, removes none."""
    return " && ".join(f"{q(docker)} rm -f {q(n)}" for n in sorted(set(names)))


def remove(cluster: Cluster, found: Iterable[Found]) -> None:
    """Remove the given containers, every node in parallel; raise RemoteError naming failures."""
    by_node: dict[str, list[str]] = {}
    for f in found:
        by_node.setdefault(f.node, []).append(f.name)
    if not by_node:
        return
    docker = cluster.settings.docker
    results = cluster.run_all(lambda n: remove_command(docker, by_node[n.name]) if n.name in by_node else None,
                              mutating=True, timeout=120)
    cluster.check("removing serving containers", results)


# -- following logs ---------------------------------------------------------------------------
ATTACHED, LIVE, ENDED = "@@gx10-attached", "@@gx10-live", "@@gx10-ended"
ATTACH_HEAD_START_S = 0.5


def follow_command(docker: str, container: str, tail: int) -> str:
    """Wait for the container to run; attach to its output (live, and reliable up to the last
    line, where `logs -f` on a `--rm` container can lose the final lines as the container is
    removed); then print its log so far; then the live output until the container exits. The
    attach starts first so nothing falls between the two: the overlap is removed by the reader.
    An attach that ends while the container still runs is made again. `--sig-proxy=false`: a
    hang-up of this session must never reach the container."""
    d, c = q(docker), q(container)
    running = f'[ "$({d} inspect --type container --format \'{{{{.State.Running}}}}\' {c} 2>/dev/null)" = true ]'
    attach = f'{d} attach --no-stdin --sig-proxy=false {c} >"$t" 2>&1 & a=$!'
    return "\n".join([
        f"until {running}; do sleep 0.5; done",
        "t=$(mktemp)",
        "trap 'rm -f \"$t\"' EXIT",
        attach,
        f"sleep {ATTACH_HEAD_START_S}",
        f"echo {ATTACHED}",
        f"{d} logs --tail {int(tail)} {c} 2>&1",
        f"echo {LIVE}",
        'tail -s 0.2 -n +1 -f --pid="$a" "$t"',
        f"while {running}; do",
        f'  : >"$t"; {attach}; tail -s 0.2 -n +1 -f --pid="$a" "$t"; sleep 0.5',
        "done",
        f"echo {ENDED}",
    ])


class _Overlap:
    """Drops the live lines that repeat the end of the history (attach ran before `logs`).
    Live lines are held while they still match a suffix of the history, and released once
    they cannot be a repeat."""

    def __init__(self, history: list[str]):
        self.history = history
        self.starts = list(range(len(history)))  # where in the history the live lines may begin
        self.held: list[str] = []
        self.done = not history

    def feed(self, line: str) -> list[str]:
        """The lines to keep, now that `line` arrived."""
        if self.done:
            return [line]
        i = len(self.held)
        self.starts = [j for j in self.starts if self.history[j + i] == line]
        self.held.append(line)
        if any(j + i + 1 == len(self.history) for j in self.starts):
            self.done, self.held = True, []  # a complete repeat of the history's end: drop it
            return []
        if not self.starts:
            self.done = True
            out, self.held = self.held, []
            return out
        return []


class LogFollower:
    """Streams one node's container log in a thread over its own SSH channel, with a pty so that
    closing the channel hangs up the remote side. `attached` is set once the container was
    seen, `ended` when its output ended (the container exited). A lost connection is retried
    (the history is read again and replaces the buffer); the last `keep` lines stay in `lines`."""

    def __init__(self, cluster: Cluster, node: Node, *, keep: int = 1000,
                 on_line: Callable[[str, str], None] | None = None,
                 on_end: Callable[[str], None] | None = None):
        self.cluster, self.node = cluster, node
        self.command = follow_command(cluster.settings.docker, cluster.settings.container_name, keep)
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.attached = threading.Event()
        self.ended = threading.Event()
        self.ended_at: float | None = None
        self.on_line, self.on_end = on_line, on_end
        self._history: list[str] | None = None  # while the history is being read
        self._attaches = 0
        self._overlap: _Overlap | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._chan: object | None = None
        self._thread = threading.Thread(target=self._run, name=f"logs-{node.name}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        chan = self._chan
        if chan is not None:
            try:
                chan.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a dead channel may fail to close
                pass
        self._thread.join(timeout=5)

    def snapshot(self) -> list[str]:
        """The lines so far, including live lines still held as a possible repeat."""
        with self._lock:
            held = self._overlap.held if self._overlap else []
            return [*self.lines, *held]

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self._stream()
            except Exception:  # noqa: BLE001 - connection trouble: retried below
                pass
            if self.ended.is_set() or self._stop.is_set():
                break
            self._stop.wait(1.0)
        code = 0 if self.ended.is_set() else None
        self.cluster.ops_log.record(self.node.name, self.command, code, time.monotonic() - start, note="log follower")

    def _stream(self) -> None:
        conn = self.cluster.connection(self.node)
        chan = conn.transport.open_session()
        self._chan = chan
        try:
            chan.get_pty(term="dumb", width=1000)
            chan.settimeout(0.5)
            chan.exec_command(self.command)
            lines = LineSplitter(self._line, carriage_return="")
            while not self._stop.is_set():
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                lines.write(data.decode(errors="replace"))
                if self.ended.is_set():
                    return
        finally:
            self._chan = None
            chan.close()

    def _line(self, line: str) -> None:
        if line == ATTACHED:
            self._history = []
            self._attaches += 1
            self.attached.set()
        elif line == LIVE and self._history is not None:
            with self._lock:
                self.lines.clear()
                self.lines.extend(self._history)
                self._overlap = _Overlap(self._history)
            self._history = None
        elif line == ENDED:
            with self._lock:
                if self._overlap:
                    self.lines.extend(self._overlap.held)
                    self._overlap.held = []
            self.ended_at = time.monotonic()
            self.ended.set()
            if self.on_end:
                self.on_end(self.node.name)
        elif self._history is not None:
            self._history.append(line)
            if self.on_line and self._attaches == 1:  # a reconnect reads the history again
                self.on_line(self.node.name, line)
        elif self._overlap is not None:
            with self._lock:
                kept = self._overlap.feed(line)
                self.lines.extend(kept)
            for k in kept:
                if self.on_line:
                    self.on_line(self.node.name, k)


# -- `inv logs` -------------------------------------------------------------------------------
def logs_command(docker: str, container: str, lines: int) -> str:
    return f"{q(docker)} logs --tail {int(lines)} {q(container)} 2>&1"


def show_logs(cluster: Cluster, nodes: Iterable[Node], lines: int) -> int:
    """Print the last `lines` of each node's container log; return how many nodes had none."""
    s = cluster.settings
    nodes = list(nodes)
    results = cluster.run_all(logs_command(s.docker, s.container_name, lines), nodes, timeout=60)
    missing = 0
    failed = {}
    for n in nodes:
        r = results[n.name]
        if r.exit_code is None:
            failed[n.name] = r
        elif not r.ok:
            missing += 1
            cluster.say(f"== {n.name}: no {s.container_name} container (nothing runs there, or it exited and "
                        "--rm took its log; a failed launch saved it under results/launch-logs/) ==")
        else:
            cluster.say(f"== {n.name}: {s.container_name}, last {lines} lines ==")
            cluster.say(r.stdout.rstrip("\n"))
    if failed:
        raise RemoteError("reading container logs", failed)
    return missing


def follow_logs(cluster: Cluster, nodes: Iterable[Node], lines: int) -> None:
    """Stream the nodes' container logs as `[node] line` until Ctrl-C or every container ended."""
    lock = threading.Lock()
    name = cluster.settings.container_name

    def show(node: str, line: str) -> None:
        with lock:
            cluster.say(f"[{node}] {line}")

    def ended(node: str) -> None:
        show(node, f"-- {name} exited; its log ends here --")

    followers = [LogFollower(cluster, n, keep=lines, on_line=show, on_end=ended).start() for n in nodes]
    try:
        time.sleep(2.0)
        for f in followers:
            if not f.attached.is_set():
                show(f.node.name, f"-- no {name} container yet; waiting for one --")
        while not all(f.ended.is_set() for f in followers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for f in followers:
            f.stop()
