"""Which model the cluster is serving, asked of the head's vLLM API and the launch record.

Single tenancy hangs on this answer: launch stops whatever serves, and clear-weights refuses to
delete the weights of the model in use.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from . import health
from .config import Settings
from .remote import Cluster, Result
from .shell import q, remote_path

STATE_FILE = "~/.gx10-ops/serving.json"  # on the head; written by launch, removed by stop


def api_url(settings: Settings, path: str = "") -> str:
    return f"http://{settings.head.mgmt}:{settings.api_port}{path}"


def served_by_api(settings: Settings) -> str | None:
    """The configured model whose served name /v1/models lists, if the API answers."""
    ids = health.served_ids(health.get_json(settings.head.mgmt, settings.api_port, "/v1/models"))
    for spec in settings.models.values():
        if spec.served_name in ids or spec.hf_id in ids:
            return spec.name
    return None


def recorded_launch(cluster: Cluster) -> dict[str, object] | None:
    """The head's launch record, if launch left one (a model still loading has no API yet)."""
    r = cluster.run(cluster.head, f'cat {STATE_FILE.replace("~", "$HOME", 1)} 2>/dev/null || true', timeout=30)
    try:
        doc = json.loads(r.stdout) if r.ok and r.stdout.strip() else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def current_model(cluster: Cluster) -> str | None:
    """The model being served or loading: the API's answer first, else the launch record."""
    name = served_by_api(cluster.settings)
    if name:
        return name
    record = recorded_launch(cluster)
    model = record.get("model") if record else None
    return str(model) if model else None


def write_record(cluster: Cluster, record: dict[str, Any]) -> Result:
    """Write the launch record on the head (what was launched, when; when it became ready)."""
    folder = remote_path(STATE_FILE.rsplit("/", 1)[0])
    r = cluster.run(cluster.head, f"mkdir -p {folder} && printf '%s\\n' {q(json.dumps(record))} > "
                    f"{remote_path(STATE_FILE)}", mutating=True, timeout=30)
    return cluster.check("writing the launch record", {cluster.head.name: r})[cluster.head.name]


def remove_record(cluster: Cluster) -> Result:
    r = cluster.run(cluster.head, f"rm -f {remote_path(STATE_FILE)}", mutating=True, timeout=30)
    return cluster.check("removing the launch record", {cluster.head.name: r})[cluster.head.name]


@dataclass
class Summary:
    """What `inv status` says about serving: the model, its health, vLLM version and uptime."""

    model: str | None
    how: str  # "API", "launch record" or ""
    health: health.Probe
    version: str | None
    served: list[str]
    record: dict[str, object] | None

    def lines(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        if not self.model and not self.served and self.health.state != health.READY:
            return [f"serving: nothing (no launch record; /health: {self.health.detail})"]
        name = self.model or "an unconfigured model"
        ids = f" as {', '.join(self.served)}" if self.served else ""
        out = [f"serving: {name}{ids} (known from the {self.how or 'API'})",
               f"health: {self.health.state} ({self.health.detail})",
               f"vLLM: {self.version or 'unknown (no /version answer)'}"]
        rec = self.record or {}
        started, ready = rec.get("started_epoch"), rec.get("ready_epoch")
        load = rec.get("load_seconds")
        if isinstance(ready, int | float):
            loaded = f", loaded in {duration(load)}" if isinstance(load, int | float) else ""
            out.append(f"uptime: {duration(now - ready)} ready (launched {rec.get('started_at')}{loaded})")
        elif isinstance(started, int | float):
            out.append(f"uptime: launched {duration(now - started)} ago ({rec.get('started_at')}), not ready yet")
        else:
            out.append("uptime: unknown (no launch record; see the head container's status above)")
        return out


def duration(seconds: float) -> str:
    """`1m05s`, `2h03m10s`, `3d04h05m`."""
    seconds = max(0, int(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}d{h:02d}h{m:02d}m" if d else f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def summary(cluster: Cluster) -> Summary:
    s = cluster.settings
    host, port = s.head.mgmt, s.api_port
    probe = health.probe(host, port, "/health", timeout=3.0)
    served = health.served_ids(health.get_json(host, port, "/v1/models")) if probe.listening else []
    version = health.version_of(health.get_json(host, port, "/version")) if probe.listening else None
    record = recorded_launch(cluster)
    by_api = next((m.name for m in s.models.values() if m.served_name in served or m.hf_id in served), None)
    if by_api:  # a record of another model is stale: its times would be wrong
        return Summary(by_api, "API", probe, version, served, record if record and record.get("model") == by_api else None)
    model = record.get("model") if record else None
    return Summary(str(model) if model else None, "launch record" if model else "", probe, version, served, record)
