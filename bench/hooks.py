"""What the sweep calls at point boundaries, so the caller can attach what bench cannot see
(node telemetry, container logs) while bench stays SSH-free: the caller hands plain data in.

`SweepHooks` does nothing; `TelemetryHooks` takes the node series as data (a callable returning
`{"nodes": {node: [sample]}, "events": [...]}`, e.g. cluster's `TelemetryRecorder.data`), puts a
summary in each point (`point["telemetry"]`), writes `telemetry.csv` beside results.json, and on
a stall calls `save_logs(folder)` (the caller saves the containers' log tails there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import telemetry
from bench.shapes import PointSummary, RequestRow

TELEMETRY_FILE = "telemetry.csv"


class SweepHooks:
    """No-op hooks; subclass and override what you need. Times are control-clock epoch s.
    `regather`, when set, returns the cluster facts again after the last point (the card's
    post-check compares them with those gathered before the first)."""

    regather: Callable[[], dict[str, Any] | None] | None = None

    def point_start(self, c: int) -> None:
        return None

    def point_end(self, c: int, point: PointSummary, rows: list[RequestRow], start: float,
                  end: float, folder: Path) -> None:
        return None

    def stalled(self, c: int, error: str, folder: Path) -> list[Path]:
        return []


class TelemetryHooks(SweepHooks):
    """Per-point node telemetry from data the caller collects (see module docstring)."""

    def __init__(self, data: Callable[[], dict[str, Any]],
                 mark: Callable[[str], float] | None = None,
                 save_logs: Callable[[Path], list[Path]] | None = None,
                 rules: telemetry.FlagRules | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.data, self.mark, self.save_logs = data, mark, save_logs
        self.rules, self.clock = rules or telemetry.FlagRules(), clock
        self._earlier: dict[str, list[dict[str, Any]]] | None = None  # a resumed run's samples

    def point_start(self, c: int) -> None:
        if self.mark:
            self.mark(f"C={c} start")

    def point_end(self, c: int, point: PointSummary, rows: list[RequestRow], start: float,
                  end: float, folder: Path) -> None:
        if self.mark:
            self.mark(f"C={c} end")
        got = self.data()
        tokens = sum(int(r.get("output_tokens") or 0) for r in rows)
        summary = telemetry.summarize_point(got["nodes"], start, end, tokens,
                                            got.get("events", ()), self.rules)
        summary["start"], summary["end"] = start, end  # control-clock epoch s (timeline boundaries)
        summary["events"] = [e for e in got.get("events", ())
                             if e.get("event") not in ("hello", "note", "stopped")
                             and start <= e["t"] <= end]
        point["telemetry"] = summary
        self._write_csv(folder / TELEMETRY_FILE, got["nodes"])

    def _write_csv(self, path: Path, nodes: dict[str, list[dict[str, Any]]]) -> None:
        """Rewrite telemetry.csv with this run's samples after those of the run it resumes, so
        the points measured before an interrupt keep their series."""
        if self._earlier is None:
            self._earlier = telemetry.read_telemetry_csv(path) if path.exists() else {}
        merged = {n: [*self._earlier.get(n, []), *nodes.get(n, [])]
                  for n in {*self._earlier, *nodes}}
        telemetry.write_telemetry_csv(path, merged)

    def stalled(self, c: int, error: str, folder: Path) -> list[Path]:
        return self.save_logs(folder) if self.save_logs else []
