"""Node telemetry per benchmark point: energy, joules per token, and throttled/swapped/lost flags.

Pure and SSH-free: it takes the plain data the cluster side hands over (cluster/telemetry.py,
`TelemetryRecorder.data()`): `series` = {node: [sample dict, ...]} where a sample has `source`
("gpu", "mem", "load"), `t` (epoch seconds, the control's clock) and its readings (`power_w`,
`sm_clock_mhz`, `sm_clock_max_mhz`, `temp_c`, `util_pct`, `throttle_reasons`,
`enforced_power_limit_w`, `swap_total_kib`, `swap_free_kib`, ...; a reading the GPU could not
give is missing), and `events` = [{node, event, t, ...}] where `gpu-exit`, `sampler-exit` and
`start-failed` mean that node's sampler died.

Public: `summarize_point`, `integrate_power`, `FlagRules`, `write_telemetry_csv`,
`read_telemetry_csv`, `TELEMETRY_FILE`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TELEMETRY_FILE = "telemetry.csv"
LOST_EVENTS = frozenset({"gpu-exit", "sampler-exit", "start-failed"})
Sample = Mapping[str, Any]


@dataclass(frozen=True)
class FlagRules:
    """When a point counts as throttled, swapped or missing a node."""

    clock_fraction: float = 0.5       # a busy SM clock below this share of the node's peak (GB10
    #                                   runs ~80 % of clocks.max.sm healthy, 16-29 % when stuck)
    busy_util_pct: float = 50.0       # the clock is judged only on samples at least this busy
    power_cap_fraction: float = 0.98  # power at or above this share of the enforced limit
    ignored_reasons: tuple[str, ...] = ("gpu_idle",)
    swap_growth_kib: int = 1024       # swap used growing by more than this within the point
    gap_s: float = 5.0                # no GPU sample for longer than this = node lost
    edge_s: float = 1.0               # a series may start/end this far inside the window


def _gpu(samples: Iterable[Sample]) -> list[Sample]:
    return sorted((s for s in samples if s.get("source") == "gpu"), key=lambda s: s["t"])


def integrate_power(points: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Joules over [start, end] from (t, watts) readings: the trapezoid rule, with the power at
    each edge interpolated between the readings around it (held flat past the first/last)."""
    pts = sorted(points)
    if not pts or end <= start:
        return 0.0
    ts = np.array([p[0] for p in pts], dtype=float)
    ws = np.array([p[1] for p in pts], dtype=float)
    inside = (ts > start) & (ts < end)
    grid = np.concatenate(([start], ts[inside], [end]))
    power = np.interp(grid, ts, ws)
    return float(np.sum((power[1:] + power[:-1]) * np.diff(grid)) / 2.0)


def _node_energy(gpu: Sequence[Sample], start: float, end: float) -> float:
    """Sum over the node's GPUs (one on GB10) of each GPU's integrated power."""
    by_gpu: dict[Any, list[tuple[float, float]]] = {}
    for s in gpu:
        if s.get("power_w") is not None:
            by_gpu.setdefault(s.get("gpu", 0), []).append((s["t"], float(s["power_w"])))
    return sum(integrate_power(pts, start, end) for pts in by_gpu.values())


def _covers(gpu: Sequence[Sample], start: float, end: float, rules: FlagRules) -> bool:
    times = [s["t"] for s in gpu if s.get("power_w") is not None]
    return bool(times) and times[0] <= start + rules.edge_s and times[-1] >= end - rules.edge_s


def _throttle_why(s: Sample, peak: float | None, rules: FlagRules) -> list[str]:
    why = [r for r in s.get("throttle_reasons", ()) if r not in rules.ignored_reasons]
    limit = s.get("enforced_power_limit_w") or s.get("power_limit_w")
    power = s.get("power_w")
    if power is not None and limit and power >= rules.power_cap_fraction * limit:
        why.append("power_cap")
    clock, util = s.get("sm_clock_mhz"), s.get("util_pct")
    if util is not None:
        busy = util >= rules.busy_util_pct
    else:
        busy = "throttle_reasons" in s and "gpu_idle" not in s["throttle_reasons"]
    if busy and clock is not None and peak and clock < rules.clock_fraction * peak:
        why.append(f"sm_clock<{rules.clock_fraction:.0%} of {peak:.0f} MHz")
    return why


def _spans(node: str, marked: Sequence[tuple[float, list[str]]]) -> list[dict[str, Any]]:
    """Merge consecutive flagged samples into spans naming the node and the reasons."""
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for t, why in marked:
        if not why:
            current = None
            continue
        if current is None:
            current = {"node": node, "since": t, "until": t, "why": [], "samples": 0}
            spans.append(current)
        current["until"] = t
        current["samples"] += 1
        current["why"] = sorted(set(current["why"]) | set(why))
    return spans


def _throttled(node: str, gpu: Sequence[Sample], window: Sequence[Sample],
               rules: FlagRules) -> list[dict[str, Any]]:
    seen = [s["sm_clock_mhz"] for s in gpu if s.get("sm_clock_mhz") is not None]
    highest = max(seen) if seen else None
    spans = []
    for index in sorted({s.get("gpu", 0) for s in window}):  # per GPU: one on GB10
        spans += _spans(node, [(s["t"], _throttle_why(s, s.get("sm_clock_max_mhz") or highest, rules))
                               for s in window if s.get("gpu", 0) == index])
    return spans


def _swapped(node: str, samples: Sequence[Sample], start: float, end: float,
             rules: FlagRules) -> list[dict[str, Any]]:
    mem = sorted((s for s in samples if s.get("source") == "mem" and "swap_free_kib" in s
                  and "swap_total_kib" in s), key=lambda s: s["t"])
    before = [s for s in mem if s["t"] <= start]
    inside = [s for s in mem if start < s["t"] <= end]
    if not inside:
        return []
    base = before[-1] if before else inside[0]

    def used(s: Sample) -> int:
        return int(s["swap_total_kib"]) - int(s["swap_free_kib"])

    grown = [s for s in inside if used(s) - used(base) > rules.swap_growth_kib]
    if not grown:
        return []
    return [{"node": node, "since": grown[0]["t"], "until": inside[-1]["t"],
             "why": [f"swap used grew {max(used(s) for s in inside) - used(base)} KiB"]}]


def _lost(node: str, gpu: Sequence[Sample], events: Iterable[Sample], start: float, end: float,
          rules: FlagRules) -> list[dict[str, Any]]:
    lost: list[dict[str, Any]] = []
    for e in events:
        if e.get("node") == node and e.get("event") in LOST_EVENTS and e["t"] <= end:
            why = f"{e['event']}" + (f": {e['why']}" if e.get("why") else "")
            lost.append({"node": node, "since": max(e["t"], start), "until": end, "why": [why]})
    times = [s["t"] for s in gpu]
    if not any(start <= t <= end for t in times) and not lost:
        return [{"node": node, "since": start, "until": end, "why": ["no GPU samples"]}]
    for a, b in zip(times, times[1:], strict=False):
        lo, hi = max(a, start), min(b, end)
        if b - a > rules.gap_s and lo < hi:
            lost.append({"node": node, "since": lo, "until": hi, "why": [f"no GPU sample for {b - a:.1f} s"]})
    if times and times[0] - start > rules.gap_s:
        lost.append({"node": node, "since": start, "until": min(times[0], end),
                     "why": [f"first GPU sample {times[0] - start:.1f} s into the point"]})
    if times and end - times[-1] > rules.gap_s:
        lost.append({"node": node, "since": max(times[-1], start), "until": end,
                     "why": [f"last GPU sample {end - times[-1]:.1f} s before the end"]})
    return lost


def _stat(values: Sequence[float], how: str) -> float | None:
    if not values:
        return None
    return float({"min": min, "max": max}[how](values)) if how != "mean" else float(np.mean(values))


def _cluster_max_power(gpus: Mapping[str, Sequence[Sample]], start: float, end: float) -> float | None:
    """Highest sum over nodes of each node's interpolated power, at every reading's time."""
    curves = {n: [(s["t"], float(s["power_w"])) for s in g if s.get("power_w") is not None]
              for n, g in gpus.items()}
    curves = {n: c for n, c in curves.items() if c}
    times = sorted({t for c in curves.values() for t, _ in c if start <= t <= end})
    if not times:
        return None
    total = sum(np.interp(times, [t for t, _ in c], [w for _, w in c]) for c in curves.values())
    return float(np.max(total))


def summarize_point(series: Mapping[str, Sequence[Sample]], start: float, end: float,
                    output_tokens: int, events: Iterable[Sample] = (),
                    rules: FlagRules = FlagRules()) -> dict[str, Any]:
    """One point's telemetry summary for results.json (plain data).

    `energy_j` (cluster, J) is None unless every node's GPU series covers the window (a node
    lost mid-point would make it too small); per-node figures are kept either way.
    """
    events = list(events)
    window_s = end - start
    nodes: dict[str, dict[str, Any]] = {}
    flags: dict[str, list[dict[str, Any]]] = {"throttled": [], "swapped": [], "node_lost": []}
    gpus = {}
    for node, samples in series.items():
        gpu = _gpu(samples)
        gpus[node] = gpu
        win = [s for s in gpu if start <= s["t"] <= end]
        covered = _covers(gpu, start, end, rules)
        energy = _node_energy(gpu, start, end)
        powers = [float(s["power_w"]) for s in win if s.get("power_w") is not None]
        clocks = [float(s["sm_clock_mhz"]) for s in win if s.get("sm_clock_mhz") is not None]
        temps = [float(s["temp_c"]) for s in win if s.get("temp_c") is not None]
        nodes[node] = {
            "samples": len(win),
            "covered": covered,
            "energy_j": energy if covered else None,
            "energy_covered_j": energy,
            "mean_power_w": energy / window_s if covered and window_s > 0 else None,
            "max_power_w": _stat(powers, "max"),
            "min_sm_clock_mhz": _stat(clocks, "min"),
            "mean_sm_clock_mhz": _stat(clocks, "mean"),
            "max_temp_c": _stat(temps, "max"),
        }
        flags["throttled"] += _throttled(node, gpu, win, rules)
        flags["swapped"] += _swapped(node, samples, start, end, rules)
        flags["node_lost"] += _lost(node, gpu, events, start, end, rules)
    complete = bool(nodes) and all(n["covered"] for n in nodes.values())
    energy_j = sum(n["energy_j"] for n in nodes.values()) if complete else None
    return {
        "window_s": window_s,
        "output_tokens": output_tokens,
        "energy_j": energy_j,
        "joules_per_token": energy_j / output_tokens if energy_j is not None and output_tokens else None,
        "tokens_per_s_per_watt": output_tokens / energy_j if energy_j else None,
        "mean_power_w": energy_j / window_s if energy_j is not None and window_s > 0 else None,
        "max_power_w": _cluster_max_power(gpus, start, end),
        "nodes": nodes,
        "flags": flags,
        "flagged_nodes": sorted({f["node"] for spans in flags.values() for f in spans}),
    }


def write_telemetry_csv(path: Path, series: Mapping[str, Sequence[Sample]]) -> Path:
    """One row per sample (node, source, t, then every reading seen; empty = absent), beside
    results.json. Lists (throttle reasons) are joined with '|'."""
    rows = [{"node": node, **s} for node, samples in series.items() for s in samples]
    rows.sort(key=lambda r: (r["t"], r["node"], r.get("source", "")))
    extra = sorted({k for r in rows for k in r} - {"node", "source", "t"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["node", "source", "t", *extra], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "|".join(map(str, v)) if isinstance(v, list | tuple) else
                        (f"{v:.3f}" if k == "t" else v) for k, v in r.items()})
    return path


def _cell(key: str, text: str) -> Any:
    if key == "throttle_reasons":
        return [r for r in text.split("|") if r]
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_telemetry_csv(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The series back from telemetry.csv (absent readings stay missing)."""
    series: dict[str, list[dict[str, Any]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            node = row.pop("node")
            sample = {k: _cell(k, v) for k, v in row.items() if v != ""}
            sample["t"] = float(row["t"])
            if "throttle_mask" in sample:
                sample.setdefault("throttle_reasons", [])
            series.setdefault(node, []).append(sample)
    return series
