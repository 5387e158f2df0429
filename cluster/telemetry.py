"""Node telemetry: one long-running sampler per node, streamed over the existing SSH connection.

Each node runs a single remote shell (`sampler_command`) that starts `nvidia-smi --query-gpu=...
-lms N` in the background and, about once a second, reads a meminfo file and /proc/loadavg. Every
line it prints is tagged with its source: `hello` (clock, pid, process group), `gpu` (an
nvidia-smi row, timed by nvidia-smi's own row timestamp), `gpu-exit` (nvidia-smi ended), `mem`,
`load`. `SamplerParser` turns those lines into samples: plain dicts of builtins, where a field
the GPU does not report (`[N/A]`, `Not Supported`: GB10's memory and power-limit fields) is
missing, never 0. `TelemetryRecorder` runs one sampler per node in a thread, keeps the samples
in memory, records a sampler's death (node, time, why) while the others go on, and `stop` kills
every remote process group and checks that nothing is left. The harness (bench/) gets
`TelemetryRecorder.data()`: plain data, so bench never imports cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import Node
from .nvsmi import parse_gpu_row
from .remote import Cluster
from .shell import q

# What a point summary needs; `timestamp` must stay first (it times the row).
GPU_FIELDS: tuple[str, ...] = (
    "timestamp", "index", "power.draw", "enforced.power.limit", "clocks.sm", "clocks.max.sm",
    "temperature.gpu", "utilization.gpu", "memory.used", "memory.total",
    "clocks_event_reasons.active", "pstate",
)
MEMINFO_KEYS = ("MemAvailable", "MemFree", "Cached", "SwapTotal", "SwapFree")


@dataclass(frozen=True)
class TelemetryOptions:
    """How the samplers run; the integration maps a `telemetry:` config block onto this."""

    gpu_fields: tuple[str, ...] = GPU_FIELDS
    interval_ms: int = 500            # nvidia-smi -lms: 2 Hz
    meminfo_path: str = "/proc/meminfo"
    loadavg_path: str = "/proc/loadavg"
    nvidia_smi: str = "nvidia-smi"
    start_timeout_s: float = 10.0     # a node that has not said hello by then is recorded lost
    stop_timeout_s: float = 2.0


def sampler_command(options: TelemetryOptions = TelemetryOptions(), *, once: bool = False) -> str:
    """The one remote shell line a node runs for the whole sweep (POSIX sh, every value quoted);
    `once`: one row of each source, then exit (for `inv status`, see `read_once`).

    sshd starts each session's command in a new session (setsid), so the shell is its process
    group's leader: `stop_command(pgid)` ends nvidia-smi, the tag loop and the shell at once.
    """
    if not options.gpu_fields or options.gpu_fields[0] != "timestamp":
        raise ValueError("telemetry gpu_fields must start with 'timestamp' (it times each row)")
    query = q("--query-gpu=" + ",".join(options.gpu_fields))
    keys = "|".join(MEMINFO_KEYS)
    loop = "" if once else f" -lms {int(options.interval_ms)}"
    host = f"""  m=''
  while IFS=': ' read -r k v _; do case $k in {keys}) m="$m $k=$v" ;; esac; done < {q(options.meminfo_path)}
  read -r l1 l5 l15 procs _ < {q(options.loadavg_path)}
  t=$(date +%s.%N)
  printf 'mem %s%s\\nload %s %s %s %s %s\\n' "$t" "$m" "$t" "$l1" "$l5" "$l15" "$procs"
"""
    body = f"{host}wait" if once else f"while :; do\n{host}  sleep 1\ndone"
    script = f"""exec 2>&1
read -r _ _ _ _ pgid _ < /proc/$$/stat
printf 'hello %s %s %s %s %s\\n' "$(date +%s.%N)" "$(date +%z)" "$$" "$pgid" "$(nproc 2>/dev/null || echo 0)"
{{ {q(options.nvidia_smi)} {query} --format=csv,noheader,nounits{loop}
  echo "@exit $?"; }} 2>&1 | while IFS= read -r l; do
  case $l in "@exit "*) printf 'gpu-exit %s %s\\n' "$(date +%s.%N)" "${{l#@exit }}" ;;
  *) printf 'gpu %s\\n' "$l" ;; esac; done &
{body}"""
    return f"exec sh -c {q(script)}"


def read_once(cluster: Cluster, options: TelemetryOptions = TelemetryOptions(),
              nodes: Iterable[Node] | None = None) -> dict[str, list[dict[str, Any]]]:
    """One reading of every source per node, in parallel: {node: [samples and events]}; an
    unreachable node gets one `start-failed` event naming why."""
    results = cluster.run_all(sampler_command(options, once=True), nodes)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, r in results.items():
        if not r.ok:
            out[name] = [{"node": name, "event": "start-failed", "t": time.time(), "why": r.why()}]
            continue
        parser = SamplerParser(name, options.gpu_fields, align_clock=False)
        out[name] = [item for line in r.stdout.splitlines() if (item := parser.feed(line))]
    return out


def stop_command(pgid: int) -> str:
    """Kill a sampler's process group (TERM, then KILL after ~1 s) and print `gone` or `left`.

    "Left" counts live members only (read from /proc): a killed child whose new parent has not
    reaped it yet is a zombie, not a process left on the node.
    """
    g = int(pgid)
    if g <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    alive = (
        "alive() { for f in /proc/[0-9]*/stat; do read -r s 2>/dev/null < \"$f\" || continue; "
        f"set -- ${{s##*) }}; [ \"$3\" = {g} ] && [ \"$1\" != Z ] && return 0; done; return 1; }}; "
    )
    # `kill -s SIG -- -N` is the POSIX form; dash refuses `kill -0 -- -N`.
    return (
        f"{alive}kill -s TERM -- -{g} 2>/dev/null; i=0; while alive && [ $i -lt 10 ]; do "
        f"sleep 0.1; i=$((i+1)); done; if alive; then kill -s KILL -- -{g} 2>/dev/null; "
        "sleep 0.2; fi; if alive; then echo left; else echo gone; fi"
    )


class SamplerParser:
    """Turns one node's tagged sampler lines into samples and events (stateful: the node's UTC
    offset comes from its `hello` line; `clock_offset_s` maps node time onto the control's)."""

    def __init__(self, node: str, fields: Sequence[str] = GPU_FIELDS,
                 clock: Callable[[], float] = time.time, align_clock: bool = True) -> None:
        self.node, self.fields, self.clock = node, tuple(fields), clock
        self.align_clock = align_clock  # False for lines parsed after the fact (read_once)
        self.utc_offset_s = 0.0
        self.clock_offset_s = 0.0   # node clock minus control clock, measured at hello
        self.pid: int | None = None
        self.pgid: int | None = None
        self.nproc: int | None = None

    def feed(self, line: str) -> dict[str, Any] | None:
        """A sample dict (`source` gpu/mem/load) or an event dict (`event`: hello, gpu-exit,
        note), with `node` and `t` (control-clock epoch seconds); None for a blank line."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return None
        tag, _, rest = text.partition(" ")
        try:
            if tag == "gpu":
                sample = parse_gpu_row(rest, self.fields, self.utc_offset_s)
                sample["t"] -= self.clock_offset_s
                return {"node": self.node, **sample}
            if tag in ("mem", "load"):
                return self._host(tag, rest)
            if tag == "hello":
                return self._hello(rest)
            if tag == "gpu-exit":
                stamp, _, code = rest.partition(" ")
                return {"node": self.node, "event": "gpu-exit", "t": float(stamp) - self.clock_offset_s,
                        "exit_code": int(code) if code.strip().lstrip("-").isdigit() else None}
        except ValueError as exc:
            return self._note(f"{tag}: {exc}")
        return self._note(text)

    def _note(self, text: str) -> dict[str, Any]:
        return {"node": self.node, "event": "note", "t": self.clock(), "text": text[:500]}

    def _hello(self, rest: str) -> dict[str, Any]:
        stamp, zone, pid, pgid, nproc = rest.split()
        sign = -1 if zone.startswith("-") else 1
        self.utc_offset_s = sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
        self.clock_offset_s = float(stamp) - self.clock() if self.align_clock else 0.0
        self.pid, self.pgid, self.nproc = int(pid), int(pgid), int(nproc)
        return {"node": self.node, "event": "hello", "t": float(stamp) - self.clock_offset_s,
                "pid": self.pid, "pgid": self.pgid, "nproc": self.nproc,
                "clock_offset_s": self.clock_offset_s}

    def _host(self, tag: str, rest: str) -> dict[str, Any]:
        stamp, *values = rest.split()
        sample: dict[str, Any] = {"node": self.node, "source": tag,
                                  "t": float(stamp) - self.clock_offset_s}
        if tag == "mem":
            for item in values:
                key, _, kib = item.partition("=")
                if key in MEMINFO_KEYS and kib.isdigit():
                    sample[_snake(key) + "_kib"] = int(kib)
        else:
            sample["load1"], sample["load5"], sample["load15"] = (float(v) for v in values[:3])
            if self.nproc:
                sample["nproc"] = self.nproc
        return sample


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


class _LineSink:
    """Receives a channel's stdout chunks (Invoke's out_stream) and feeds whole lines."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line, self.buf = on_line, ""

    def write(self, data: str, /) -> int:
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.on_line(line)
        return len(data)

    def flush(self) -> None:
        return None


class TelemetryRecorder:
    """One sampler per node over the cluster's SSH connections, samples kept in memory.

    Use: `rec = TelemetryRecorder(cluster); rec.start(); rec.mark("c=4 start") ...; rec.stop()`;
    `rec.data()` hands the harness plain data. A sampler that dies is an event (`sampler-exit`
    or `gpu-exit`, with node and time); the other nodes keep sampling.
    """

    def __init__(self, cluster: Cluster, options: TelemetryOptions = TelemetryOptions(),
                 nodes: Iterable[Node] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cluster, self.options, self.clock = cluster, options, clock
        self.nodes = tuple(nodes if nodes is not None else cluster.nodes)
        self.command = sampler_command(options)
        self._lock = threading.Lock()
        self._samples: dict[str, list[dict[str, Any]]] = {n.name: [] for n in self.nodes}
        self._events: list[dict[str, Any]] = []
        self._marks: list[dict[str, Any]] = []
        self._parsers = {n.name: SamplerParser(n.name, options.gpu_fields, clock) for n in self.nodes}
        self._hello = {n.name: threading.Event() for n in self.nodes}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start every node's sampler; returns once each said hello (or start_timeout_s)."""
        if self.cluster.dry_run:
            for n in self.nodes:
                self.cluster.say(f"[dry-run] {n.name}: {self.command}")
            return
        for n in self.nodes:
            t = threading.Thread(target=self._run, args=(n,), name=f"telemetry-{n.name}", daemon=True)
            self._threads[n.name] = t
            t.start()
        deadline = time.monotonic() + self.options.start_timeout_s
        waiting = {n.name for n in self.nodes}
        while waiting and time.monotonic() < deadline:
            # a node whose sampler already ended (unreachable) is not waited for
            waiting = {n for n in waiting if not self._hello[n].is_set() and self._threads[n].is_alive()}
            time.sleep(0.02)
        for name in waiting:
            self._event(name, "start-failed", why=f"no hello within {self.options.start_timeout_s:.0f} s")

    def _run(self, node: Node) -> None:
        sink = _LineSink(lambda line: self._on_line(node.name, line))
        result = self.cluster.run(node, self.command, sink=sink)
        if not self._stopping.is_set():
            why = result.error or f"sampler exited {result.exit_code}"
            self._event(node.name, "sampler-exit", why=why, exit_code=result.exit_code)

    def _on_line(self, node: str, line: str) -> None:
        item = self._parsers[node].feed(line)
        if item is None:
            return
        if "event" in item:
            with self._lock:
                self._events.append(item)
            if item["event"] == "hello":
                self._hello[node].set()
            return
        with self._lock:
            self._samples[node].append(item)

    def _event(self, node: str, kind: str, **extra: Any) -> None:
        with self._lock:
            self._events.append({"node": node, "event": kind, "t": self.clock(), **extra})

    def mark(self, label: str, **extra: Any) -> float:
        """Record a point boundary (control-clock time) for timelines; returns its time."""
        t = self.clock()
        with self._lock:
            self._marks.append({"t": t, "label": label, **extra})
        return t

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The newest sample per node and source (for `inv status` / `inv watch`)."""
        with self._lock:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for node, samples in self._samples.items():
                newest: dict[str, dict[str, Any]] = {}
                for s in samples:
                    newest[s["source"]] = s
                out[node] = dict(newest)
            return out

    def data(self) -> dict[str, Any]:
        """Plain data for the harness: {"nodes": {node: [sample, ...]}, "events": [...],
        "marks": [...], "clock_offsets_s": {node: s}}; copies, safe to keep."""
        with self._lock:
            return {
                "nodes": {n: [dict(s) for s in ss] for n, ss in self._samples.items()},
                "events": [dict(e) for e in self._events],
                "marks": [dict(m) for m in self._marks],
                "clock_offsets_s": {n: p.clock_offset_s for n, p in self._parsers.items()},
            }

    def stop(self) -> dict[str, str]:
        """Kill every node's sampler group and check it is gone: {node: 'gone'|'left'|why}."""
        self._stopping.set()
        outcome: dict[str, str] = {}
        targets = {n.name: n for n in self.nodes if self._parsers[n.name].pgid}
        for name in self._hello:
            if name not in targets:
                outcome[name] = "never started"

        def one(name: str) -> None:
            parser = self._parsers[name]
            if parser.pgid != parser.pid or parser.pgid is None:
                outcome[name] = f"not a process-group leader (pid {parser.pid}); not signalled"
                return
            r = self.cluster.run(targets[name], stop_command(parser.pgid),
                                 timeout=self.options.stop_timeout_s + 3)
            outcome[name] = r.stdout.strip() if r.ok else r.why()

        workers = [threading.Thread(target=one, args=(name,), daemon=True) for name in targets]
        for w in workers:
            w.start()
        # One deadline for all nodes: an unreachable node must not hold the others up.
        deadline = time.monotonic() + self.options.stop_timeout_s + 1.0
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        for name in targets:
            outcome.setdefault(name, f"no answer within {self.options.stop_timeout_s + 1.0:.0f} s "
                               "(unreachable?)")
        for name, t in self._threads.items():
            t.join(max(0.0, deadline - time.monotonic()))
            self._event(name, "stopped", outcome=outcome[name])
        return dict(outcome)

    def __enter__(self) -> TelemetryRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
