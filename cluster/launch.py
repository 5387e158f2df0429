"""Launch one model on the cluster through the launcher, and watch it until it serves or fails.

Single tenancy: before starting a model, every serving container on every node is removed (the
seed's `docker rm -f`), whichever model it was, so two models never hold the cluster at once.
The launch is refused, before anything changes, when the model's image is not on every node with
one ID or its weights are not staged; the message carries the command that fixes it.

While the model loads (10-13 min on the real cluster) every node is watched: each node's
container log is streamed into memory from the moment the container appears (containers are
`--rm`: their logs vanish with them), a `docker ps` sweep runs every few seconds, and the head's
`/health` is polled. A container that exits, a launcher that fails, an API server that dies while
the containers stay up, or the deadline ends the wait at once, each as its own error type, with
every node's last log lines saved under `results/launch-logs/<model>-<time>/`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import health, serving
from .config import ModelSpec, Node, Settings
from .containers import Found, LogFollower, Survey, guess_models, remove, survey
from .facts import GIB, NodeFacts, gather
from .remote import Cluster, RemoteError, Result, q, remote_path
from .weights import diff_listing, local_listing, model_dir, remote_listings, source_dir

LAUNCHER_TIMEOUT_S = 900.0  # run-recipe -d returns once the containers and Ray are up
HEALTH_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 1.0
SWEEP_EVERY_S = 3.0
DOWN_GRACE_S = 2.0  # refused this long after a server held the port: the engine is gone
PROGRESS_EVERY_S = 30.0
AFTERMATH_S = 0.5  # after a failure, let the other nodes' reaction reach the saved logs
PORT_FREE_TIMEOUT_S = 30.0
EXPLAIN_LINES = 12
ERROR_LINE = re.compile(r"error|exception|traceback|killed|out of memory|fatal|died|failed", re.I)


# -- errors ---------------------------------------------------------------------------------
class LaunchError(Exception):
    """The launch did not end with the model serving; the message says where, why and what next."""

    exit_code = 1

    def __init__(self, message: str, saved: Path | None = None, detected_at: float | None = None):
        super().__init__(message)
        self.saved = saved
        self.detected_at = detected_at  # time.monotonic() when the watcher noticed


class LaunchRefused(LaunchError):
    """A precondition is not met; nothing was started."""


class LauncherFailed(LaunchError):
    """The launcher command itself failed."""


class ContainerExited(LaunchError):
    """A node's container exited (or vanished) while the model loaded."""


class EngineDied(LaunchError):
    """The API server went away while the containers stayed up (spark-vllm-docker issue #257)."""


class HealthTimeout(LaunchError):
    """/health did not answer 200 before the deadline."""


class WrongModel(LaunchError):
    """The API answers, but does not serve the model that was launched."""


class LaunchInterrupted(LaunchError):
    """Ctrl-C while waiting: the cluster is left as it is."""

    exit_code = 130


# -- preflight ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One preflight result. `blocking` failures refuse a launch; others are warnings."""

    check: str
    node: str
    ok: bool
    detail: str
    fix: str = ""
    blocking: bool = True


def image_findings(settings: Settings, spec: ModelSpec, facts: dict[str, NodeFacts]) -> list[Finding]:
    """The model's image on every reachable node, with one ID."""
    image = settings.image(spec.image)
    ids = {n: f.image_id(image.tag) for n, f in facts.items() if f.reachable}
    head = settings.head.name
    if head in ids and ids[head] is None:
        return [Finding("image", head, False, f"{image.tag} is not on {head}",
                        f"inv rebuild --image {image.name}, then inv distribute --image {image.name}")]
    missing = [n for n, i in ids.items() if i is None]
    if missing:
        return [Finding("image", ",".join(missing), False, f"{image.tag} is missing on {', '.join(missing)}",
                        f"inv distribute --image {image.name}")]
    distinct = sorted({i for i in ids.values() if i})
    if len(distinct) > 1:
        shown = ", ".join(f"{n} {i[:12] if i else '-'}" for n, i in ids.items())
        return [Finding("image", "all", False, f"{image.tag} differs between nodes: {shown}",
                        f"inv distribute --image {image.name}")]
    iid = distinct[0][:12] if distinct else "?"
    return [Finding("image", "all", True, f"{image.tag} {iid} on {', '.join(ids)}")]


def weights_findings(cluster: Cluster, spec: ModelSpec, nodes: Iterable[Node]) -> list[Finding]:
    """The model's files on each node against the control's copy (else the head's)."""
    nodes = list(nodes)
    path = model_dir(cluster.settings.model_root, spec)
    listings = remote_listings(cluster, spec, nodes)
    src = source_dir(cluster, spec)
    head = cluster.head.name
    if src.is_dir():
        source, where = local_listing(src), f"the control's copy ({src})"
    else:
        source, where = (listings.get(head) or remote_listings(cluster, spec, [cluster.head])[head] or {}), head
    fix = f"inv stage --model {spec.name}"
    if not source:
        return [Finding("weights", head, False, f"no copy of {spec.hf_id} on the control ({src}) nor on {head}",
                        f"put the model at {src} on the control, then {fix}")]
    out = []
    for n in nodes:
        bad = diff_listing(source, listings[n.name])
        if listings[n.name] is None:
            out.append(Finding("weights", n.name, False, f"{spec.name} is not staged ({path} does not exist)", fix))
        elif bad:
            out.append(Finding("weights", n.name, False,
                               f"{len(bad)} of {len(source)} files of {spec.name} missing or of another size "
                               f"than {where} (e.g. {bad[0]})", fix))
        else:
            size = sum(source.values()) / GIB
            out.append(Finding("weights", n.name, True, f"{spec.name}: {len(source)} files, {size:.2f} GiB, as {where}"))
    return out


def listening_ports(cluster: Cluster) -> dict[int, str]:
    """TCP ports listening on the head -> the process holding each (`ss -ltnp`)."""
    r = cluster.run(cluster.head, "ss -Hltnp", timeout=30)
    cluster.check(f"listing listening ports on {cluster.head.name}", {cluster.head.name: r})
    ports: dict[int, str] = {}
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        port = cols[3].rsplit(":", 1)[-1]
        if port.isdigit():
            proc = " ".join(cols[5:])
            m = re.search(r'\(\("([^"]+)",pid=(\d+)', proc)
            ports[int(port)] = f"{m.group(1)} (pid {m.group(2)})" if m else (proc or "a process")
    return ports


def port_findings(cluster: Cluster, ports: dict[int, tuple[str, str | None]], serving: Current) -> list[Finding]:
    """`ports` (port -> what it is for, and the model it belongs to, None: any) free on the head.
    Held by the model that serves, it is a warning (a launch stops it first); held otherwise it
    is a failure: something else would collide with the launch (the two master ports are
    distinct so that two models never share one)."""
    held = listening_ports(cluster)
    head = cluster.head.name
    up = any(f.running for f in serving.containers)
    out = []
    for port, (what, model) in ports.items():
        if port not in held:
            out.append(Finding(what, head, True, f"port {port} is free"))
        elif up and (model is None or model == serving.model):
            out.append(Finding(what, head, False, f"port {port} is held by {held[port]} (the serving model)",
                               "inv launch stops the serving model first; or inv stop", blocking=False))
        else:
            whose = f" while {serving.model} serves" if up and serving.model else ", with no serving container" \
                if not up else " by something other than the serving model"
            out.append(Finding(what, head, False, f"port {port} is held by {held[port]}{whose}",
                               f"stop that process on {head} (inv stop if it is a serving container), "
                               "or change the port in the config"))
    return out


def container_findings(sv: Survey) -> list[Finding]:
    out = []
    for node, found in sv.found.items():
        for f in found:
            state = "running" if f.running else "stopped, still holding the name"
            out.append(Finding("container", node, False, f"{f.name} ({f.image}, {f.status}): {state}",
                               "inv launch removes it first; inv stop removes it now", blocking=False))
    if not sv.all:
        out.append(Finding("container", "all", True, "no serving container on any node"))
    return out


def preflight(cluster: Cluster, spec: ModelSpec | None, facts: dict[str, NodeFacts]) -> list[Finding]:
    """Everything `inv launch` checks before it starts, for `inv doctor --model`."""
    s = cluster.settings
    reachable = [f.node for f in facts.values() if f.reachable]
    sv = survey(cluster, reachable)
    findings = container_findings(sv)
    if spec is not None:
        findings = image_findings(s, spec, facts) + weights_findings(cluster, spec, reachable) + findings
    ports: dict[int, tuple[str, str | None]] = {s.api_port: ("API port", None)}
    for m in ([spec] if spec else list(s.models.values())):
        ports[m.master_port] = (f"{m.name} master port", m.name)
    if facts[s.head.name].reachable:
        findings += port_findings(cluster, ports, identify(cluster, sv))
    return findings


# -- what is serving, and stopping it ---------------------------------------------------------
@dataclass
class Current:
    containers: list[Found]
    model: str | None
    how: str  # how the model was told: "its API", "the launch record", "its image", ""

    def describe(self) -> str:
        model = f"{self.model} (by {self.how})" if self.model else "an unknown model"
        where = ", ".join(f"{f.name} on {f.node}" for f in self.containers)
        return f"{model}: {where}"


def identify(cluster: Cluster, sv: Survey) -> Current:
    s = cluster.settings
    by_api = serving.served_by_api(s)
    if by_api:
        return Current(sv.all, by_api, "its API")
    record = serving.recorded_launch(cluster)
    if record and record.get("model"):
        return Current(sv.all, str(record["model"]), "the launch record")
    guessed = guess_models(s, sv.all)
    if len(guessed) == 1:
        return Current(sv.all, guessed[0], "its image")
    return Current(sv.all, None, "")


def require_survey(sv: Survey, what: str) -> None:
    if sv.failed:
        raise RemoteError(what, sv.failed)


def stop(cluster: Cluster, nodes: tuple[Node, ...]) -> Current:
    """Remove the serving containers on `nodes` (all: also the launch record)."""
    sv = survey(cluster, nodes)
    cur = identify(cluster, sv)
    if cur.containers:
        cluster.say(f"stopping {cur.describe()}")
        remove(cluster, cur.containers)
    else:
        cluster.say(f"no serving container on {', '.join(n.name for n in nodes)}")
    if len(nodes) == len(cluster.nodes):
        serving.remove_record(cluster)
    elif cur.containers:
        cluster.say("the launch record stays: the model is no longer complete; `inv stop` stops the rest")
    require_survey(sv, "listing containers")
    return cur


def wait_ports_free(cluster: Cluster, ports: dict[int, str], timeout_s: float = PORT_FREE_TIMEOUT_S) -> None:
    """After a stop the API server may take a moment to let go of its port."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = {p: w for p, w in listening_ports(cluster).items() if p in ports}
        if not held:
            return
        if time.monotonic() > deadline:
            shown = "; ".join(f"{ports[p]} {p} held by {w}" for p, w in held.items())
            raise LaunchRefused(f"cannot launch: on {cluster.head.name}, {shown}, with no serving container left. "
                                f"Stop that process on {cluster.head.name} (or change the port in the config)")
        time.sleep(0.5)


# -- launching --------------------------------------------------------------------------------
def default_timeout_min(spec: ModelSpec) -> float:
    return round(spec.load_minutes[1] * 1.5, 1)


def launcher_command(settings: Settings, spec: ModelSpec) -> str:
    """The model's relaunch wrapper when configured (the seed's one-shot, with the site's own
    flags), else `run-recipe.sh RECIPE -d` with the config's nodes, names and ports. stdin is
    /dev/null: `run-recipe.sh` asks `Build now? [y/N]` when an image is missing."""
    repo = remote_path(settings.launcher_repo)
    if spec.relaunch:
        rel = spec.relaunch
        run = remote_path(rel) if rel.startswith(("/", "~")) else f"./{q(rel)}"
    else:
        assert spec.recipe is not None  # the config requires recipe or relaunch
        nodes = ",".join(n.fabric for n in settings.nodes)
        run = (f"./run-recipe.sh {q(spec.recipe)} -d -n {q(nodes)} --name {q(settings.container_name)} "
               f"--master-port {spec.master_port} --port {settings.api_port}")
    return f"cd {repo} && {run} < /dev/null"


@dataclass
class Outcome:
    model: str
    waited: bool
    load_seconds: float | None = None
    version: str | None = None
    served: list[str] = field(default_factory=list)
    ready_at: float | None = None  # time.monotonic() when /health was seen at 200


def explain(lines: list[str], n: int = EXPLAIN_LINES) -> list[str]:
    """The lines that say why: the last error-looking ones and the very last few, in order."""
    lines = [line for line in lines if line.strip()]
    errors = [i for i, line in enumerate(lines) if ERROR_LINE.search(line)][-(n - 4):]
    picked = sorted(set(errors) | set(range(max(0, len(lines) - 4), len(lines))))
    return [lines[i] for i in picked]


def launch(cluster: Cluster, spec: ModelSpec, *, timeout_s: float, wait: bool = True) -> Outcome:
    """Refuse, stop what serves, record, start through the launcher, and (with `wait`) watch."""
    s, head = cluster.settings, cluster.head
    facts = gather(cluster)
    down = {n: f.error for n, f in facts.items() if not f.reachable}
    if down:
        raise LaunchRefused("cannot launch, node(s) unreachable:\n" + "\n".join(f"  {n}: {e}" for n, e in down.items()))
    refused = [f for f in image_findings(s, spec, facts) + weights_findings(cluster, spec, cluster.nodes) if not f.ok]
    if refused:
        lines = [f"cannot launch {spec.name}; nothing was changed:"]
        for f in refused:
            lines.append(f"  {f.node}: {f.detail}\n    fix: {f.fix}")
        raise LaunchRefused("\n".join(lines))
    sv = survey(cluster)
    require_survey(sv, "listing containers")
    if sv.all:
        cur = identify(cluster, sv)
        cluster.say(f"single tenancy: stopping {cur.describe()}")
        remove(cluster, cur.containers)
    ports = {s.api_port: "API port", spec.master_port: "master port"}
    if not cluster.dry_run:
        wait_ports_free(cluster, ports)
    image = s.image(spec.image)
    record: dict[str, Any] = {
        "model": spec.name, "hf_id": spec.hf_id, "served_name": spec.served_name, "image": image.tag,
        "image_id": facts[head.name].image_id(image.tag), "master_port": spec.master_port,
        "container": s.container_name, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started_epoch": time.time(),
    }
    serving.write_record(cluster, record)
    command = launcher_command(s, spec)
    if cluster.dry_run:
        cluster.run(head, command, mutating=True)
        cluster.say(f"[dry-run] then wait for http://{head.mgmt}:{s.api_port}/health = 200 "
                    f"(up to {timeout_s / 60:g} min), watching every node's {s.container_name}")
        return Outcome(spec.name, waited=False)
    cluster.ops_log.event(f"launch {spec.name}: {command}")
    return _Watch(cluster, spec, command, timeout_s, record).run(wait)


class _Watch:
    """The launcher in a thread, a log follower per node, a `docker ps` sweep, and /health."""

    def __init__(self, cluster: Cluster, spec: ModelSpec, command: str, timeout_s: float, record: dict[str, Any]):
        self.cluster, self.spec, self.command, self.record = cluster, spec, command, record
        self.s = cluster.settings
        self.timeout_s = timeout_s
        self.followers = {n.name: LogFollower(cluster, n) for n in cluster.nodes}
        self.launcher: Result | None = None
        self.launcher_done = threading.Event()
        self.gone: dict[str, float] = {}  # node -> when the sweep found its container missing
        self._stop = threading.Event()
        self.start = time.monotonic()

    # -- threads ------------------------------------------------------------------------
    def _run_launcher(self) -> None:
        try:
            self.launcher = self.cluster.run(self.cluster.head, self.command, mutating=True, stream=True,
                                             timeout=LAUNCHER_TIMEOUT_S)
        finally:
            self.launcher_done.set()

    def _sweep(self) -> None:
        """Every few seconds after the launcher returned: each node must run the container.
        Catches what a log stream can miss (a container gone before its follower attached)."""
        name = self.s.container_name
        while not self._stop.wait(SWEEP_EVERY_S):
            if not (self.launcher and self.launcher.ok):
                continue
            sv = survey(self.cluster)
            for node, found in sv.found.items():
                if not any(f.name == name and f.running for f in found):
                    self.gone.setdefault(node, time.monotonic())

    # -- the wait -------------------------------------------------------------------------
    def run(self, wait: bool) -> Outcome:
        for f in self.followers.values():
            f.start()
        threading.Thread(target=self._run_launcher, name="launcher", daemon=True).start()
        threading.Thread(target=self._sweep, name="sweep", daemon=True).start()
        try:
            return self._loop(wait)
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self._stop.set()
            for f in self.followers.values():
                f.stop()

    def _loop(self, wait: bool) -> Outcome:
        spec, s, head = self.spec, self.s, self.cluster.head
        deadline = self.start + self.timeout_s
        lo, hi = spec.load_minutes
        listening_seen = False
        down_since: float | None = None
        last_progress = 0.0
        last = health.Probe(health.DOWN, None, "not asked yet")
        while True:
            tick = time.monotonic()
            self._check_containers()
            self._check_launcher()
            if not wait and self.launcher_done.is_set():
                self.cluster.say(f"{spec.name} is starting (expected {lo:g}-{hi:g} min to load); "
                                 f"watch it with `inv status` and `inv logs --follow`, stop it with `inv stop`")
                return Outcome(spec.name, waited=False)
            if wait:
                last = health.probe(head.mgmt, s.api_port, "/health", HEALTH_TIMEOUT_S)
                if last.state == health.READY:
                    return self._ready(time.monotonic())
                if last.listening and not listening_seen:
                    listening_seen = True
                    self.cluster.say(f"{head.name}:{s.api_port} is listening ({last.detail}): loading")
                if last.state == health.DOWN and listening_seen and self.launcher_done.is_set():
                    down_since = down_since or tick
                    if tick - down_since >= DOWN_GRACE_S:
                        self._fail(EngineDied, head.name,
                                   f"the API server on {head.name} stopped listening on port {s.api_port} "
                                   f"({last.detail}) while the containers are still up: the engine died "
                                   "(spark-vllm-docker issue #257)")
                else:
                    down_since = None
                if tick > deadline:
                    self._fail(HealthTimeout, head.name,
                               f"{spec.name} did not become healthy within {self.timeout_s / 60:g} min "
                               f"(expected {lo:g}-{hi:g} min); last /health: {last.detail}", timeout=True)
                if tick - last_progress >= PROGRESS_EVERY_S:
                    last_progress = tick
                    self.cluster.say(f"{spec.name}: {serving.duration(tick - self.start)} elapsed "
                                     f"(expected {lo:g}-{hi:g} min, timeout {self.timeout_s / 60:g} min); "
                                     f"/health: {last.detail}")
            time.sleep(max(0.0, HEALTH_EVERY_S - (time.monotonic() - tick)))

    def _check_launcher(self) -> None:
        if not self.launcher_done.is_set():
            if time.monotonic() - self.start > self.timeout_s:
                self._fail(HealthTimeout, self.cluster.head.name,
                           f"the launcher was still running after {self.timeout_s / 60:g} min", timeout=True)
            return
        r = self.launcher
        if r is not None and not r.ok:
            tail = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()][-5:]
            why = r.error or f"exit {r.exit_code}"
            self._fail(LauncherFailed, self.cluster.head.name,
                       f"the launcher failed on {self.cluster.head.name} ({why})\n  command: {r.command}\n"
                       + "\n".join(f"  | {line}" for line in tail))

    def _check_containers(self) -> None:
        name = self.s.container_name
        for node, f in self.followers.items():
            if f.ended.is_set():
                self._fail(ContainerExited, node, f"the {name} container on {node} exited while {self.spec.name} "
                           f"was loading ({serving.duration((f.ended_at or time.monotonic()) - self.start)} after the start)",
                           detected_at=f.ended_at)
        for node, when in self.gone.items():
            self._fail(ContainerExited, node, f"the {name} container on {node} is not running "
                       f"({serving.duration(when - self.start)} after the start; the launcher had started it)",
                       detected_at=when)

    def _ready(self, ready_at: float) -> Outcome:
        spec, s, head = self.spec, self.s, self.cluster.head
        loaded = ready_at - self.start
        ids = health.served_ids(health.get_json(head.mgmt, s.api_port, "/v1/models"))
        if spec.served_name not in ids:
            self._fail(WrongModel, head.name, f"{head.name}:{s.api_port} is healthy but serves {ids or 'no model'}, "
                       f"not {spec.served_name}")
        version = health.version_of(health.get_json(head.mgmt, s.api_port, "/version"))
        lo, hi = spec.load_minutes
        self.record.update(ready_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), ready_epoch=time.time(),
                           load_seconds=round(loaded, 1), vllm_version=version)
        serving.write_record(self.cluster, self.record)
        self.cluster.ops_log.event(f"launch {spec.name}: healthy after {loaded:.1f} s")
        self.cluster.say(f"{spec.name} is serving {spec.served_name} at http://{head.mgmt}:{s.api_port}/v1 "
                         f"(vLLM {version or 'version unknown'}): loaded in {serving.duration(loaded)} "
                         f"(expected {lo:g}-{hi:g} min)")
        return Outcome(spec.name, waited=True, load_seconds=loaded, version=version, served=ids, ready_at=ready_at)

    # -- failures -------------------------------------------------------------------------
    def _fail(self, kind: type[LaunchError], node: str, what: str, *, detected_at: float | None = None,
              timeout: bool = False) -> None:
        detected_at = detected_at or time.monotonic()
        time.sleep(AFTERMATH_S)
        saved = self._save(what)
        lines = [f"launch of {self.spec.name} failed: {what}"]
        lines += self._explanations(node, own=kind is not LauncherFailed)
        lines.append(f"every node's last log lines are saved in {saved}/")
        if timeout:
            lines.append("the containers were left running: it may still be loading (`inv status`, "
                         "`inv logs --follow`); stop it with `inv stop`")
        else:
            lines.append("what is left running stays for inspection (`inv logs --node NODE`); "
                         "`inv stop` removes it")
        raise kind("\n".join(lines), saved=saved, detected_at=detected_at)

    def _explanations(self, node: str, own: bool) -> list[str]:
        """The failed node's last lines (`own`), then the error lines other nodes logged."""
        out = []
        first = self.followers[node].snapshot() if own else []
        if first:
            out.append(f"last lines of {node}'s {self.s.container_name} log:")
            out += [f"  | {line}" for line in explain(first)]
        elif own:
            out.append(f"{node}'s container log could not be read before it was gone")
        for other, f in self.followers.items():
            errors = [line for line in f.snapshot() if ERROR_LINE.search(line)] if other != node or not own else []
            if errors:
                out.append(f"error lines on {other}:")
                out += [f"  | {line}" for line in errors[-5:]]
        return out

    def _save(self, what: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        d = self.s.results_dir / "launch-logs" / f"{self.spec.name}-{stamp}"
        d.mkdir(parents=True, exist_ok=True)
        for node, f in self.followers.items():
            lines = f.snapshot()
            (d / f"{node}.log").write_text("".join(line + "\n" for line in lines))
        r = self.launcher
        (d / "launcher.log").write_text(f"$ {self.command}\n" + ((r.stdout + r.stderr) if r else "(still running)\n"))
        (d / "launch.json").write_text(json.dumps({**self.record, "failure": what}, indent=2) + "\n")
        return d

    def _interrupted(self) -> LaunchInterrupted:
        spec, elapsed = self.spec, serving.duration(time.monotonic() - self.start)
        if not self.launcher_done.is_set():
            state = "the launcher was still starting the containers (it goes on without us)"
        else:
            state = f"{spec.name} goes on loading"
        return LaunchInterrupted(
            f"interrupted after {elapsed}: the cluster was left as it is; {state}. "
            f"Follow it with `inv status` and `inv logs --follow`; stop it with `inv stop`")
