"""Results on disk: `results/<label>/results.json`, `requests.jsonl`, `bench.log`.

results.json is the document `run_sweep` returns: `schema_version`, `label`, `model` (served
name), `base_url`, `server_version`, `started_at`, `updated_at`, `settings`, `points` (a list
sorted by concurrency). It is rewritten atomically (temp file + rename) after every point, so a
crash or Ctrl-C loses at most the point in flight. requests.jsonl gets a point's request lines
just before results.json records the point; lines of points results.json does not list are
dropped on resume, so the two files always agree.

Public: `load_results(path_or_dir)`, `points_frame(doc)`, `ResultsError`, `SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pandas as pd

from bench.errors import BenchError
from bench.shapes import RequestRow, ResultsDoc

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
REQUESTS_FILE = "requests.jsonl"
LOG_FILE = "bench.log"

DIST_COLUMNS = {
    "ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "icl": "icl_ms", "e2el": "e2el_ms",
}


class ResultsError(BenchError):
    """A results file is missing, unreadable or not a results document we understand."""


def write_json_atomic(path: Path, doc: ResultsDoc) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_lines(path: Path, rows: Iterable[RequestRow]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def prune_requests(path: Path, keep: set[Any], field: str = "concurrency") -> None:
    """Drop request lines of points results.json does not hold (a point cut off mid-write);
    a point is named by its `field` (concurrency, or request_rate for open-loop runs)."""
    if not path.exists():
        return
    kept = []
    with path.open() as f:
        for line in f:
            try:
                if json.loads(line).get(field) in keep:
                    kept.append(line)
            except ValueError:
                continue
    fd, tmp = tempfile.mkstemp(prefix=".requests-", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def load_results(path_or_dir: str | Path) -> ResultsDoc:
    """Load results.json (or `<dir>/results.json`); raise ResultsError saying what is wrong."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise ResultsError(f"no results file at {path}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ResultsError(f"{path} is not a bench results document (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema_version {doc['schema_version']}, "
                           f"this harness reads {SCHEMA_VERSION}")
    if not isinstance(doc.get("points"), list):
        raise ResultsError(f"{path} has no points list")
    return cast(ResultsDoc, doc)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def node_flags(point: Any) -> str | None:
    """The point's node flags as text, node named: "throttled w2; node lost w3" (None: none)."""
    flags = (point.get("telemetry") or {}).get("flags") or {}
    parts = [f"{kind.replace('_', ' ')} {', '.join(sorted({f['node'] for f in spans}))}"
             for kind, spans in flags.items() if spans]
    return "; ".join(parts) or None


def _rate_and_reasoning(p: Any) -> dict[str, Any]:
    """Open-loop (bench/openloop.py) and reasoning (bench/reasoning.py) columns; NaN elsewhere."""
    return {
        "request_rate": p.get("request_rate"),
        "achieved_rate": p.get("achieved_rate"),
        "send_lateness_p50_ms": _get(p, "send_lateness_ms", "p50"),
        "send_lateness_p99_ms": _get(p, "send_lateness_ms", "p99"),
        "send_lateness_max_ms": _get(p, "send_lateness_ms", "max"),
        "send_late": p.get("send_late"),
        "meets_slo": p.get("meets_slo"),
        "ttfr_p50_ms": _get(p, "reasoning", "ttfr_ms", "p50"),
        "ttfa_p50_ms": _get(p, "reasoning", "ttfa_ms", "p50"),
        "reasoning_tokens_mean": _get(p, "reasoning", "reasoning_tokens", "mean"),
        "answer_tokens_mean": _get(p, "reasoning", "answer_tokens", "mean"),
    }


def points_frame(doc: ResultsDoc) -> pd.DataFrame:
    """One row per concurrency point, flat columns (`ttft_p50_ms`, `output_tok_s`, ...)."""
    rows = []
    for p in sorted(doc.get("points", []),
                    key=lambda p: (p.get("request_rate") or 0.0, p["concurrency"])):
        row: dict[str, Any] = {
            "concurrency": p["concurrency"],
            "completed": p.get("completed"),
            "failed": p.get("failed"),
            "error_rate": p.get("error_rate"),
            "duration_s": p.get("duration_s"),
            "request_s": p.get("request_s"),
            "output_tok_s": p.get("output_tok_s"),
            "total_tok_s": p.get("total_tok_s"),
            "goodput": p.get("goodput"),
            "goodput_frac": p.get("goodput_frac"),
            "input_tokens_mean": p.get("input_tokens_mean"),
            "acceptance_rate": _get(p, "server", "acceptance_rate"),
            "acceptance_length": _get(p, "server", "acceptance_length"),
            "tokens_per_chunk_mean": _get(p, "tokens_per_chunk", "mean"),
            "decode_tok_s_p50": _get(p, "decode_tok_s", "p50"),
            "decode_tok_s_mean": _get(p, "decode_tok_s", "mean"),
            "e2e_tok_s_p50": _get(p, "e2e_tok_s", "p50"),
            "running_max": _get(p, "server", "gauges", "num_requests_running", "max"),
            "waiting_max": _get(p, "server", "gauges", "num_requests_waiting", "max"),
            "kv_cache_usage_max": _get(p, "server", "gauges", "kv_cache_usage_perc", "max"),
            "client_cpu_pct": _get(p, "client", "cpu_pct"),
            "client_bound": _get(p, "client", "client_bound"),
            "joules_per_token": _get(p, "telemetry", "joules_per_token"),
            "tokens_per_s_per_watt": _get(p, "telemetry", "tokens_per_s_per_watt"),
            "mean_power_w": _get(p, "telemetry", "mean_power_w"),
            "node_flags": node_flags(p),
        }
        row.update(_rate_and_reasoning(p))
        for short, key in DIST_COLUMNS.items():
            for stat in ("mean", "p50", "p90", "p99"):
                row[f"{short}_{stat}_ms"] = _get(p, key, stat)
        rows.append(row)
    return pd.DataFrame(rows)
