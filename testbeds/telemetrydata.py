"""What the telemetry tests share: the recorded nvidia-smi fixtures' field list and where they lie,
the live members of a process group (to prove a stopped sampler left nothing behind), and how a
test sets a simulated node's files and its nvidia-smi stand-in's readings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.shell import q

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "telemetry"
# The recorded command's --query-gpu list (tests/fixtures/telemetry/README).
RECORDED_FIELDS = (
    "timestamp", "index", "name", "power.draw", "power.limit", "enforced.power.limit", "clocks.sm",
    "clocks.max.sm", "clocks.mem", "temperature.gpu", "utilization.gpu", "memory.used",
    "memory.total", "clocks_event_reasons.active", "clocks_event_reasons.sw_power_cap",
    "clocks_event_reasons.hw_slowdown", "clocks_event_reasons.sw_thermal_slowdown", "pstate",
)


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(text[:80])
    return found


def put(sim: Any, node: str, path: str, text: str) -> None:
    """Write `text` to `path` on a simulated node, whole (a reader never sees half of it)."""
    sim.node_run(node, f"cat > {q(path)}.tmp && mv {q(path)}.tmp {q(path)}", check=True, input=text)


def scenario(sim: Any, node: str, **data: Any) -> None:
    """The readings the node's nvidia-smi stand-in answers with from now on."""
    put(sim, node, "/root/.nvidia-smi-standin.json", json.dumps(data))
