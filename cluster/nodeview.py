"""What `inv status` and `inv watch` show of the nodes and the server while something runs: each
node's newest telemetry (power, SM clock, temperature, utilization, memory, load), the server's
gauges (requests running / waiting, KV cache %) from the head's /metrics, and a running sweep's
progress read from the newest `bench.log` under the results folder (the sweep logs each point's
start and end there)."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GAUGES = {"running": ("vllm:num_requests_running",), "waiting": ("vllm:num_requests_waiting",),
          "kv_cache_pct": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")}
NODE_COLUMNS = ("node", "power W", "SM MHz", "temp \u00b0C", "util %", "throttle", "MemAvailable GiB",
                "swap used GiB", "load 1m", "age s")


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def node_row(node: str, latest: Mapping[str, Mapping[str, Any]], now: float | None = None) -> list[str]:
    """One node's newest readings as table cells; '-' for what is absent (GB10's [N/A] fields)."""
    gpu, mem, load = (latest.get(k, {}) for k in ("gpu", "mem", "load"))
    if not gpu and not mem:
        return [node, *["-"] * (len(NODE_COLUMNS) - 2), "no sample"]
    reasons = [r for r in gpu.get("throttle_reasons", []) if r != "gpu_idle"]
    swap = None
    if "swap_total_kib" in mem and "swap_free_kib" in mem:
        swap = (mem["swap_total_kib"] - mem["swap_free_kib"]) / 1048576
    newest = max((s.get("t", 0.0) for s in (gpu, mem, load) if s), default=0.0)
    age = (now if now is not None else time.time()) - newest
    return [node, _num(gpu.get("power_w"), "{:.1f}"), _num(gpu.get("sm_clock_mhz")), _num(gpu.get("temp_c")),
            _num(gpu.get("util_pct")), ",".join(reasons) or ("-" if not gpu else "none"),
            _num(mem["mem_available_kib"] / 1048576 if "mem_available_kib" in mem else None, "{:.1f}"),
            _num(swap, "{:.2f}"), _num(load.get("load1"), "{:.2f}"), f"{age:.1f}"]


def latest_of(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """read_once's list (samples and events) -> newest sample per source."""
    out: dict[str, dict[str, Any]] = {}
    for s in items:
        if "source" in s:
            out[s["source"]] = s
    return out


@dataclass
class Gauges:
    running: float | None = None
    waiting: float | None = None
    kv_cache_pct: float | None = None
    error: str = ""

    def text(self) -> str:
        if self.error:
            return f"server: {self.error}"
        kv = "-" if self.kv_cache_pct is None else f"{self.kv_cache_pct:.1f} %"
        return f"server: running {_num(self.running)}, waiting {_num(self.waiting)}, KV cache {kv}"


def parse_gauges(text: str) -> Gauges:
    """vLLM's /metrics (Prometheus text) -> the three gauges, summed over label sets."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[{\s]", line, maxsplit=1)[0]
        for key, names in GAUGES.items():
            if name in names:
                try:
                    found[key] = found.get(key, 0.0) + float(line.rsplit(None, 1)[-1])
                except ValueError:
                    pass
    kv = found.get("kv_cache_pct")
    return Gauges(found.get("running"), found.get("waiting"), None if kv is None else kv * 100)


def scrape_gauges(host: str, port: int, timeout: float = 1.0) -> Gauges:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        if resp.status != 200:
            return Gauges(error=f"/metrics answered HTTP {resp.status}")
        return parse_gauges(body)
    except (OSError, http.client.HTTPException) as e:
        return Gauges(error=f"{host}:{port} not answering ({type(e).__name__})")
    finally:
        conn.close()


POINT_START = re.compile(r"^(\S+ \S+) INFO point C=(\d+): (\d+) warm-up \+ (\d+) measured requests")
POINT_DONE = re.compile(r"^(\S+ \S+) INFO point C=(\d+) done: (\d+) ok, (\d+) failed .*?, ([\d.]+) output tok/s")
SWEEP_START = re.compile(r"^\S+ \S+ INFO sweep (\S+) .* points=\[([\d, ]*)\]")


def sweep_progress(results_dir: Path, max_age_s: float = 3600.0) -> str:
    """One line on the newest sweep (its bench.log changed within `max_age_s`), or ''."""
    logs = sorted(Path(results_dir).glob("*/bench.log"), key=lambda p: p.stat().st_mtime)
    if not logs or time.time() - logs[-1].stat().st_mtime > max_age_s:
        return ""
    label, running = logs[-1].parent.name, None
    todo: list[int] = []
    done: list[str] = []
    for line in logs[-1].read_text(errors="replace").splitlines():
        if m := SWEEP_START.match(line):
            todo, done, running = [int(x) for x in m.group(2).split(",") if x.strip()], [], None
        elif m := POINT_START.match(line):
            running = f"C={m.group(2)} ({int(m.group(3)) + int(m.group(4))} requests)"
        elif m := POINT_DONE.match(line):
            done.append(f"C={m.group(2)} {float(m.group(5)):.0f} tok/s")
            running = None
        elif "engine stalled" in line:
            running = "STALLED: " + line.split("ERROR ", 1)[-1][:100]
    total = len(todo) or len(done)
    state = f"running {running}" if running else ("finished" if total and len(done) >= total else "idle")
    return f"sweep {label}: {len(done)}/{total} points done ({', '.join(done) or 'none yet'}); {state}"


def render_readings(cluster: Any, nodes: list[Any]) -> str:
    """`inv status`: one reading per node now (power, clock, temperature, ...), as a text table."""
    from tabulate import tabulate

    from .sweeptelemetry import options
    from .telemetry import read_once

    got = read_once(cluster, options(cluster.settings), nodes) if nodes else {}
    rows = []
    for n in nodes:
        items = got.get(n.name, [])
        failed = [e for e in items if e.get("event") == "start-failed"]
        rows.append([n.name, f"cannot read: {failed[0]['why']}"] if failed else node_row(n.name, latest_of(items))[:-1])
    return tabulate(rows, headers=list(NODE_COLUMNS[:-1]), tablefmt="simple")
