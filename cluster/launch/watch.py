"""Watching a model load until it serves or fails (10-13 min on the real cluster).

Containers are `--rm`: their logs vanish with them, so each node's log is streamed into memory
from the moment its container appears; a `docker ps` sweep catches what a stream can miss, and
the head's `/health` is polled. A container that exits, a launcher that fails, an API server that
dies while the containers stay up, or the deadline ends the wait at once, each as its own error
type, with every node's last log lines saved under `results/launch-logs/<model>-<time>/`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import health, serving
from ..config import ModelSpec
from ..containers import LogFollower, survey
from ..remote import Cluster, Result
from ..shell import COMPACT_UTC, utc_stamp
from .errors import ContainerExited, EngineDied, HealthTimeout, LauncherFailed, LaunchError, LaunchInterrupted, WrongModel

LAUNCHER_TIMEOUT_S = 900.0  # run-recipe -d returns once the containers and Ray are up
HEALTH_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 1.0
GENERATE_TIMEOUT_S = 30.0  # one 1-token completion once /health is 200
SWEEP_EVERY_S = 3.0
DOWN_GRACE_S = 2.0  # refused this long after a server held the port: the engine is gone
PROGRESS_EVERY_S = 30.0
LAUNCHER_GRACE_S = 3.0  # a container gone while the launcher runs: its exit and reason come this soon
AFTERMATH_S = 0.5  # after a failure, let the other nodes' reaction reach the saved logs
EXPLAIN_LINES = 12
LAUNCHER_ERROR = re.compile(r"^(?:\[\w.-]+\] )?(?:Error:|EOFError)")
ERROR_LINE = re.compile(r"error|exception|traceback|killed|out of memory|fatal|died|failed", re.I)


@dataclass
class Outcome:
    model: str
    waited: bool
    load_seconds: float | None = None
    version: str | None = None
    served: list[str] = field(default_factory=list)
    ready_at: float | None = None  # time.monotonic() when /health was seen at 200


def launcher_error(lines: list[str]) -> str | None:
    """The launcher's own reason: its scripts say `Error: ...` (launch-cluster.sh, run-recipe.py,
    autodiscover.sh), a bare `input()` ends in `EOFError`. The first one is the cause; what
    follows is its consequence (usage text, "Cluster launch aborted")."""
    for line in lines:
        text = line.strip()
        if LAUNCHER_ERROR.match(text):
            return text
    return None


def explain(lines: list[str], n: int = EXPLAIN_LINES) -> list[str]:
    """The lines that say why: the last error-looking ones and the very last few, in order."""
    lines = [line for line in lines if line.strip()]
    errors = [i for i, line in enumerate(lines) if ERROR_LINE.search(line)][-(n - 4):]
    picked = sorted(set(errors) | set(range(max(0, len(lines) - 4), len(lines))))
    return [lines[i] for i in picked]


class Watch:
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
        listening_seen = generate_noted = False
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
                    # ready = /health 200 AND one tiny completion returns a token (a 404: wrong model, told by _ready)
                    gen = health.first_token(head.mgmt, s.api_port, spec.served_name, GENERATE_TIMEOUT_S)
                    if gen.ok or gen.status == 404:
                        return self._ready(time.monotonic())
                    if not generate_noted:
                        generate_noted = True
                        self.cluster.say(f"{head.name}:{s.api_port}/health = 200 but no token yet ({gen.detail}): waiting")
                    last = health.Probe(health.LOADING, 200, f"/health 200, {gen.detail}")
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
            lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
            why = r.error or f"exit {r.exit_code}"
            real = launcher_error(lines)
            head = f"the launcher failed on {self.cluster.head.name}: {real}" if real else \
                f"the launcher failed on {self.cluster.head.name} ({why})"
            self._fail(LauncherFailed, self.cluster.head.name,
                       f"{head}\n  ({why}) command: {r.command}\n" + "\n".join(f"  | {line}" for line in lines[-5:]))

    def _launcher_first(self) -> None:
        """A container gone while the launcher still runs may be the launcher's own cleanup (a
        failed mod, an image check): it exits right after, and its reason is the cause."""
        if self.launcher_done.wait(LAUNCHER_GRACE_S):
            self._check_launcher()

    def _check_containers(self) -> None:
        name = self.s.container_name
        for node, f in self.followers.items():
            if f.ended.is_set():
                self._launcher_first()
                self._fail(ContainerExited, node, f"the {name} container on {node} exited while {self.spec.name} "
                           f"was loading ({serving.duration((f.ended_at or time.monotonic()) - self.start)} after the start)",
                           detected_at=f.ended_at)
        for node, when in self.gone.items():
            self._launcher_first()
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
        self.record.update(ready_at=utc_stamp(), ready_epoch=time.time(),
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
        stamp = utc_stamp(COMPACT_UTC)
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
