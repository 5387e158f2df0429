"""The cluster's part of `inv bench`: node samplers for the whole sweep, and the container log
tails the stall watchdog saves. Hands bench plain data and callables (bench stays SSH-free).

Config (cluster/defaults.yaml `telemetry:`): `enabled`, `interval_ms`, `meminfo_path`,
`nvidia_smi`, the flag thresholds (`clock_fraction`, `busy_util_pct`, `power_cap_fraction`,
`swap_growth_kib`, `gap_s`: bench.telemetry.FlagRules), `stall_s` (the watchdog; 0: off) and
`log_tail_lines`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings
from .containers import logs_command
from .remote import Cluster
from .telemetry import TelemetryOptions, TelemetryRecorder

RULE_KEYS = ("clock_fraction", "busy_util_pct", "power_cap_fraction", "swap_growth_kib", "gap_s")
LOGS_DIR = "logs"


def _number(block: Mapping[str, Any], key: str, default: float) -> float:
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"telemetry.{key} = {value!r}: must be a number >= 0 (see cluster/defaults.yaml)")
    return float(value)


def options(settings: Settings) -> TelemetryOptions:
    """The sampler options from the `telemetry:` block."""
    t = settings.telemetry
    interval = int(_number(t, "interval_ms", 500))
    if interval < 100:
        raise ConfigError(f"telemetry.interval_ms = {interval}: at least 100 (nvidia-smi -lms)")
    return TelemetryOptions(interval_ms=interval, meminfo_path=str(t.get("meminfo_path", "/proc/meminfo")),
                            nvidia_smi=str(t.get("nvidia_smi", "nvidia-smi")))


def rules(settings: Settings) -> dict[str, Any]:
    """FlagRules keyword arguments from the `telemetry:` block (only the keys it sets)."""
    return {k: _number(settings.telemetry, k, 0) for k in RULE_KEYS if k in settings.telemetry}


def stall_s(settings: Settings) -> float | None:
    value = _number(settings.telemetry, "stall_s", 120)
    return value or None


def save_log_tails(cluster: Cluster, folder: Path, lines: int = 200) -> list[Path]:
    """Write the last `lines` of every node's serving container log to folder/logs/<node>.log
    (what the log could not be read, the reason instead); return the files written."""
    s = cluster.settings
    out = folder / LOGS_DIR
    out.mkdir(parents=True, exist_ok=True)
    results = cluster.run_all(logs_command(s.docker, s.container_name, lines), timeout=60)
    written = []
    for node in cluster.nodes:
        r = results[node.name]
        path = out / f"{node.name}.log"
        body = r.stdout if r.ok else f"# could not read {s.container_name}'s log on {node.name}: {r.why()}\n{r.stdout}"
        path.write_text(body)
        written.append(path)
    return written


@dataclass
class SweepTelemetry:
    """What `inv bench` hands bench's TelemetryHooks."""

    recorder: TelemetryRecorder | None
    rules: dict[str, Any] = field(default_factory=dict)
    stall_s: float | None = 120.0
    log_lines: int = 200
    cluster: Cluster | None = None

    def data(self) -> dict[str, Any]:
        return self.recorder.data() if self.recorder else {"nodes": {}, "events": []}

    def mark(self, label: str) -> float:
        return self.recorder.mark(label) if self.recorder else 0.0

    def save_logs(self, folder: Path) -> list[Path]:
        return save_log_tails(self.cluster, folder, self.log_lines) if self.cluster else []


@contextmanager
def recording(cluster: Cluster) -> Iterator[SweepTelemetry]:
    """Run every node's sampler for the duration of the block (none when `telemetry.enabled` is
    false); the samplers are stopped and checked gone on the way out."""
    s = cluster.settings
    lines = int(_number(s.telemetry, "log_tail_lines", 200))
    if not s.telemetry.get("enabled", True):
        yield SweepTelemetry(None, rules(s), stall_s(s), lines, cluster)
        return
    rec = TelemetryRecorder(cluster, options(s))
    rec.start()
    try:
        yield SweepTelemetry(rec, rules(s), stall_s(s), lines, cluster)
    finally:
        outcome = rec.stop()
        left = {n: o for n, o in outcome.items() if o != "gone"}
        if left:
            cluster.say("telemetry: samplers not confirmed stopped: "
                        + "; ".join(f"{n}: {o}" for n, o in left.items()))
