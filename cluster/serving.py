"""Which model the cluster is serving, asked of the head's vLLM API and the launch record.

Single tenancy hangs on this answer: launch stops whatever serves, and clear-weights refuses to
delete the weights of the model in use.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .config import Settings
from .remote import Cluster

STATE_FILE = "~/.gx10-ops/serving.json"  # on the head; written by launch, removed by stop


def api_url(settings: Settings, path: str = "") -> str:
    return f"http://{settings.head.mgmt}:{settings.api_port}{path}"


def http_json(url: str, timeout: float = 3.0) -> object | None:
    """GET a JSON document; None when nothing answers (the usual case when nothing is served)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own head node
            return json.loads(resp.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def served_by_api(settings: Settings) -> str | None:
    """The configured model whose served name /v1/models lists, if the API answers."""
    doc = http_json(api_url(settings, "/v1/models"))
    if not isinstance(doc, dict):
        return None
    ids = {str(m.get("id")) for m in doc.get("data", []) if isinstance(m, dict)}
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
