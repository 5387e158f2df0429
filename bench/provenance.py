"""The provenance card of a run: what was served, by what, on what; one block in results.json.

bench/ stays SSH-free: the cluster facts (per node image tag and ID with the versions `inv
verify` recorded, kernel, driver, OS, memory, clocks; launcher checkout; recipe and the command
line read from the head's container; mods; weights) arrive as a plain dict from cluster/ and are
kept as given. What HTTP gives (`/version`, `/v1/models`, `*_info` series of `/metrics`) is
always recorded; against a bare URL every cluster field is listed under `unknown`.

`identity(card)` is what a resume compares: two cards whose identities differ are two runs.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

CLUSTER_FIELDS = ("nodes", "launcher", "recipe", "command_line", "mods", "weights")
_INFO = re.compile(r"^([a-zA-Z_:][\w:]*_info)\{(.*)\}\s+\S+$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_info_metrics(text: str) -> dict[str, dict[str, str]]:
    """The labels of every `*_info` series in a Prometheus text body (vLLM's config info)."""
    out: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        m = _INFO.match(line.strip())
        if m:
            out[m.group(1)] = dict(_LABEL.findall(m.group(2)))
    return out


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, str(exc) or type(exc).__name__


async def http_facts(base_url: str, model: str) -> dict[str, Any]:
    """What the endpoint says about itself; a route that fails is recorded as None."""
    import json
    base = base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(trust_env=False, timeout=timeout) as session:
        st_v, version = await _get(session, base + "/version")
        st_m, models = await _get(session, base + "/v1/models")
        st_x, metrics = await _get(session, base + "/metrics")
    card = None
    if st_m == 200:
        try:
            card = next((m for m in json.loads(models).get("data", [])
                         if isinstance(m, dict) and m.get("id") == model), None)
        except ValueError:
            card = None
    ver = None
    if st_v == 200:
        try:
            ver = json.loads(version).get("version")
        except (ValueError, AttributeError):
            ver = None
    return {
        "version": ver,
        "model": None if card is None else {k: card.get(k) for k in
                                            ("id", "root", "parent", "max_model_len")},
        "metrics_info": parse_info_metrics(metrics) if st_x == 200 else None,
    }


def tool_info() -> dict[str, Any]:
    """The harness's own version and git commit (None outside a checkout)."""
    try:
        version: str | None = importlib.metadata.version("gx10-ops")
    except importlib.metadata.PackageNotFoundError:
        version = None
    repo = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        commit = done.stdout.strip() if done.returncode == 0 else None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "bench"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"name": "gx10-ops bench", "version": version, "commit": commit, "dirty": dirty}


def build_card(http: dict[str, Any], settings: dict[str, Any],
               cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card: HTTP facts, cluster facts as handed over (or `unknown`), settings, tool."""
    given = dict(cluster or {})
    return {
        "http": http,
        **{k: given.get(k) for k in CLUSTER_FIELDS},
        "unknown": [k for k in CLUSTER_FIELDS if given.get(k) is None],
        "source": "cluster" if cluster else "http only (bare URL)",
        "bench_settings": settings,
        "tool": tool_info(),
        **{k: v for k, v in given.items() if k not in CLUSTER_FIELDS},
    }


def identity(card: dict[str, Any]) -> dict[str, Any]:
    """The facts that make two measurements the same run, flat and named for messages."""
    out: dict[str, Any] = {"server version": (card.get("http") or {}).get("version")}
    for node in card.get("nodes") or []:
        out[f"image ID on {node.get('host')}"] = node.get("image_id")
    out["launcher commit"] = (card.get("launcher") or {}).get("commit")
    out["recipe hash"] = (card.get("recipe") or {}).get("sha256")
    out["command line"] = card.get("command_line")
    out["weights digest"] = (card.get("weights") or {}).get("digest")
    out["mods"] = card.get("mods")
    return out


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """'image ID on spark1: sha256:aa -> sha256:bb' for each identity fact that changed."""
    if old is None:
        return []
    a, b = identity(old), identity(new)
    return [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


async def recheck(cfg: Any, card: dict[str, Any], doc: Any, points: list[int],
                  path: Path) -> list[str]:
    """After the last point: gather again; a change is written on the affected points (those
    measured in this call) and under `provenance_changed`. `cfg` is the `SweepConfig`."""
    from bench.results import write_json_atomic
    regather = getattr(cfg.hooks, "regather", None)
    try:
        facts = (await asyncio.to_thread(regather) if regather else None) or cfg.cluster_facts
    except Exception as exc:  # noqa: BLE001 - the points are saved; a failed re-check is recorded, not fatal
        doc["provenance_recheck_error"] = f"{type(exc).__name__}: {exc}"
        write_json_atomic(path, doc)
        return []
    after = build_card(await http_facts(cfg.base_url, cfg.model), card["bench_settings"], facts)
    changed = differences(card, after)
    if changed:
        doc["provenance_changed"] = {"points": points, "changes": changed}
        for p in doc["points"]:
            if p["concurrency"] in points:
                p["provenance_changed"] = changed
        write_json_atomic(path, doc)
    return changed


def image_short(doc: Any) -> str:
    """The caption's image: the head node's image ID prefix (12 hex digits), else 'unknown'."""
    nodes = (doc.get("provenance") or {}).get("nodes") or []
    image_id = str(nodes[0].get("image_id") or "") if nodes else ""
    return image_id.removeprefix("sha256:")[:12] or "unknown"
