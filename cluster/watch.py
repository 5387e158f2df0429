"""`inv watch`: a live terminal view (rich) of every node's readings, the server's gauges and a
running sweep's progress, refreshed about once a second; plain text over SSH works (rich draws
with ANSI codes only). Its own samplers run for as long as the view (cluster/telemetry.py), so
it shows what a sweep's samplers see; Ctrl-C ends it and stops them."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .nodeview import NODE_COLUMNS, node_row, scrape_gauges, sweep_progress
from .remote import Cluster
from .sweeptelemetry import options
from .telemetry import TelemetryRecorder


def frame(cluster: Cluster, rec: TelemetryRecorder) -> Group:
    s = cluster.settings
    latest = rec.latest()
    table = Table(title=f"gx10 nodes ({time.strftime('%H:%M:%S')})", title_justify="left")
    for col in NODE_COLUMNS:
        table.add_column(col, justify="left" if col in ("node", "throttle") else "right")
    lost = {e["node"]: e for e in rec.data()["events"] if e["event"] in ("gpu-exit", "sampler-exit", "start-failed")}
    for n in cluster.nodes:
        row = node_row(n.name, latest.get(n.name, {}))
        style = "red" if n.name in lost or row[5] not in ("none", "-") else ""
        table.add_row(*row, style=style)
    lines = [Text(scrape_gauges(cluster.head.mgmt, s.api_port).text())]
    for name, e in lost.items():
        lines.append(Text(f"{name}: sampler {e['event']} ({e.get('why') or e.get('exit_code')})", style="red"))
    progress = sweep_progress(s.results_dir)
    lines.append(Text(progress or "sweep: none running"))
    lines.append(Text("Ctrl-C to quit", style="dim"))
    return Group(table, *lines)


def watch(cluster: Cluster, refresh_s: float = 1.0, seconds: float | None = None,
          console: Console | None = None) -> None:
    """Run the live view until Ctrl-C (or `seconds`); samplers are stopped on the way out."""
    console = console or Console()
    rec = TelemetryRecorder(cluster, options(cluster.settings))
    rec.start()
    end = None if seconds is None else time.monotonic() + seconds
    try:
        with Live(frame(cluster, rec), console=console, refresh_per_second=4, screen=False) as live:
            while end is None or time.monotonic() < end:
                time.sleep(refresh_s)
                live.update(frame(cluster, rec))
    except KeyboardInterrupt:
        pass
    finally:
        rec.stop()
