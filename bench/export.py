"""Exports beside table.md: `results.csv` (one row per point) and a llama-benchy report
(`llama-benchy.json`, `llama-benchy.md`) so our numbers sit beside the community's.

results.csv: the table's columns (`bench.results.points_frame`) and then every distribution of
the point flattened as `<name>_<stat>` (count, mean, std, min, p50, p90, p95, p99, max), for
`ttft_ms`, `tpot_ms`, `itl_ms`, `icl_ms`, `e2el_ms`, `decode_tok_s`, `e2e_tok_s`,
`tokens_per_chunk`, the open loop's `send_lateness_ms`, the reasoning split (`reasoning_*`) and
the client's health (`client_*`). Floats are written with `repr`, so they read back equal to
results.json's.

llama-benchy (github.com/eugr/llama-benchy, schemas/benchmark_report_schema.json and
src/llama_benchy/results.py): a report has `version`, `timestamp`, `latency_mode`,
`latency_ms`, `model`, `prefix_caching_enabled`, `max_concurrency`, `prompt_source` and
`benchmarks`, one per run with `concurrency`, `context_size`, `prompt_size`, `response_size`,
`is_context_prefill_phase` and metrics as `{mean, std, values}`: `pp_throughput` (prompt tokens
of the batch / (last first token - first start)), `pp_req_throughput` (per request: prompt
tokens / TTFT), `tg_throughput` ((generated - requests) / (last end - first first token)),
`tg_req_throughput` (per request (N - 1) / decode time), `ttfr`, `est_ppt`, `e2e_ttft` (ms).
We map one point to one run, its measured requests as the values. Where we differ, on purpose:
`latency_mode` is "none" and `latency_ms` 0 (we do not subtract an estimated network latency,
so `est_ppt` = `ttfr` = `e2e_ttft` = our TTFT, first generated token, not first byte); peak
throughput is not computed (absent). The markdown is llama-benchy's table, `mean ± std`, tests
named `pp<N> (c<C>)` and `tg<N> (c<C>)`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.results import REQUESTS_FILE, points_frame
from bench.shapes import ResultsDoc

CSV_FILE = "results.csv"
BENCHY_JSON = "llama-benchy.json"
BENCHY_MD = "llama-benchy.md"
STATS = ("count", "mean", "std", "min", "p50", "p90", "p95", "p99", "max")
DISTRIBUTIONS = ("ttft_ms", "tpot_ms", "itl_ms", "icl_ms", "e2el_ms", "decode_tok_s",
                 "e2e_tok_s", "tokens_per_chunk", "send_lateness_ms")


def _is_dist(value: Any) -> bool:
    return isinstance(value, dict) and "count" in value and "p50" in value


def point_distributions(p: Any) -> dict[str, Any]:
    """Every distribution of a point, flattened: {"ttft_ms_p99": ..., "client_loop_lag_ms_p50"...}."""
    out: dict[str, Any] = {}
    named = [(k, p.get(k)) for k in DISTRIBUTIONS]
    named += [(f"reasoning_{k}", v) for k, v in (p.get("reasoning") or {}).items()]
    named += [(f"client_{k}", v) for k, v in (p.get("client") or {}).items()]
    for name, dist in named:
        if _is_dist(dist):
            for stat in STATS:
                out[f"{name}_{stat}"] = dist.get(stat)
    return out


def csv_rows(doc: ResultsDoc) -> list[dict[str, Any]]:
    frame = points_frame(doc).to_dict("records")
    points = sorted(doc.get("points", []),
                    key=lambda p: (p.get("request_rate") or 0.0, p["concurrency"]))
    return [{**row, **point_distributions(p)} for row, p in zip(frame, points, strict=True)]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(doc: ResultsDoc, folder: str | Path) -> Path:
    """results.csv: one row per point; the union of the points' columns, in first-seen order."""
    rows = csv_rows(doc)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = Path(folder) / CSV_FILE
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])
    return path


# -- llama-benchy ----------------------------------------------------------------------------

def _metric(values: Sequence[float]) -> dict[str, Any] | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return {"mean": mean, "std": std, "values": vals}


def read_rows(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / REQUESTS_FILE
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _point_rows(p: Any, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured, successful rows of a point (matched by run and concurrency or rate)."""
    def mine(r: dict[str, Any]) -> bool:
        if r.get("warmup") or not r.get("ok") or r.get("run_id") != p.get("run_id"):
            return False
        if p.get("mode") == "rate":
            return bool(r.get("request_rate") == p.get("request_rate"))
        return bool(r.get("concurrency") == p["concurrency"] and "request_rate" not in r)
    return [r for r in rows if mine(r)]


def benchy_run(doc: ResultsDoc, p: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    settings = doc.get("settings") or {}
    ttft = [r["ttft_ms"] for r in rows if r.get("ttft_ms") is not None]
    pp_req = [r["prompt_tokens"] / (r["ttft_ms"] / 1e3) for r in rows
              if r.get("prompt_tokens") and r.get("ttft_ms")]
    tg_req = [r["decode_tok_s"] for r in rows if r.get("decode_tok_s") is not None]
    pp_tp = tg_tp = None
    if rows:
        start = min(r["t_send_s"] for r in rows)
        first = [r["t_first_s"] for r in rows]
        end = max(r["t_last_s"] for r in rows)
        prompt = sum(r.get("prompt_tokens") or 0 for r in rows)
        gen = sum(r.get("output_tokens") or 0 for r in rows)
        if max(first) > start:
            pp_tp = _metric([prompt / (max(first) - start)])
        if end > min(first) and gen > len(rows):
            tg_tp = _metric([(gen - len(rows)) / (end - min(first))])
    return {
        "concurrency": int(p["concurrency"]),
        "context_size": int(settings.get("prefix_len") or 0),
        "prompt_size": int(settings.get("input_len") or 0),
        "response_size": int(settings.get("output_len") or 0),
        "is_context_prefill_phase": False,
        "prompt_id": None,
        "pp_throughput": pp_tp,
        "pp_req_throughput": _metric(pp_req),
        "tg_throughput": tg_tp,
        "tg_req_throughput": _metric(tg_req),
        "peak_throughput": None,
        "peak_req_throughput": None,
        "ttfr": _metric(ttft),
        "est_ppt": _metric(ttft),
        "e2e_ttft": _metric(ttft),
        **({"request_rate": p["request_rate"]} if p.get("mode") == "rate" else {}),
    }


def llama_benchy(doc: ResultsDoc, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The llama-benchy report of a results document and its requests.jsonl rows."""
    points = sorted(doc.get("points", []),
                    key=lambda p: (p.get("request_rate") or 0.0, p["concurrency"]))
    runs = [benchy_run(doc, p, _point_rows(p, rows)) for p in points]
    return {
        "version": "gx10-ops bench (llama-benchy report schema)",
        "timestamp": doc.get("updated_at") or doc.get("started_at")
        or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "latency_mode": "none",
        "latency_ms": 0.0,
        "model": doc.get("model"),
        "prefix_caching_enabled": bool((doc.get("settings") or {}).get("prefix_len")),
        "max_concurrency": max((r["concurrency"] for r in runs), default=0),
        "prompt_source": (doc.get("settings") or {}).get("prompt_source", "words"),
        "dataset_revision": None,
        "benchmarks": runs,
    }


def _pm(metric: dict[str, Any] | None) -> str:
    return "" if metric is None else f"{metric['mean']:.2f} \u00b1 {metric['std']:.2f}"


def llama_benchy_markdown(report: dict[str, Any]) -> str:
    """llama-benchy's table (its concurrency form): a pp row and a tg row per run."""
    header = ["model", "test", "t/s (total)", "t/s (req)", "peak t/s", "peak t/s (req)",
              "ttfr (ms)", "est_ppt (ms)", "e2e_ttft (ms)"]
    lines = ["| " + " | ".join(header) + " |",
             "|:" + "-" * 5 + "|" + "|".join("-" * 5 + ":" for _ in header[1:]) + "|"]
    model = report["model"]
    for run in report["benchmarks"]:
        depth = f" @ d{run['context_size']}" if run["context_size"] else ""
        c = f"c{run['concurrency']}"
        if run.get("request_rate") is not None:  # an open-loop point (not a llama-benchy idea)
            c += f", {run['request_rate']:g} req/s"
        lines.append(f"| {model} | pp{run['prompt_size']}{depth} ({c}) | "
                     f"{_pm(run['pp_throughput'])} | {_pm(run['pp_req_throughput'])} |  |  | "
                     f"{_pm(run['ttfr'])} | {_pm(run['est_ppt'])} | {_pm(run['e2e_ttft'])} |")
        lines.append(f"| {model} | tg{run['response_size']}{depth} ({c}) | "
                     f"{_pm(run['tg_throughput'])} | {_pm(run['tg_req_throughput'])} |  |  |"
                     "  |  |  |")
    return "\n".join(lines) + "\n"


def write_llama_benchy(doc: ResultsDoc, folder: str | Path) -> list[Path]:
    out = Path(folder)
    report = llama_benchy(doc, read_rows(out))
    (out / BENCHY_JSON).write_text(json.dumps(report, indent=1) + "\n")
    (out / BENCHY_MD).write_text(llama_benchy_markdown(report))
    return [out / BENCHY_JSON, out / BENCHY_MD]


def write_exports(doc: ResultsDoc, folder: str | Path) -> list[Path]:
    """results.csv and the llama-benchy pair, into `folder`."""
    return [write_csv(doc, folder), *write_llama_benchy(doc, folder)]
