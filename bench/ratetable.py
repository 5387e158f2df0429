"""The open-loop run's table: one row per request rate (bench/openloop.py), for the CLI and
table.md. A point whose sends ran late (send lateness p99 over the client-bound bound) or whose
client was otherwise bound carries the client-bound mark, as in the closed-loop table.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from bench.results import points_frame
from bench.shapes import ResultsDoc

LATE_MARK = "\u2020"

# (header, points_frame column, decimals)
RATE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Rate (req/s)", "request_rate", 2),
    ("Achieved (req/s)", "achieved_rate", 2),
    ("Goodput (req/s)", "goodput", 2),
    ("Within SLO", "goodput_frac", 3),
    ("TTFT p50 (ms)", "ttft_p50_ms", 1),
    ("TTFT p99 (ms)", "ttft_p99_ms", 1),
    ("TPOT p50 (ms)", "tpot_p50_ms", 2),
    ("E2EL p99 (ms)", "e2el_p99_ms", 1),
    ("Output tok/s", "output_tok_s", 1),
    ("Peak in flight", "concurrency", 0),
    ("Send late p50 (ms)", "send_lateness_p50_ms", 3),
    ("Send late p99 (ms)", "send_lateness_p99_ms", 3),
    ("TTFR p50 (ms)", "ttfr_p50_ms", 1),
    ("TTFA p50 (ms)", "ttfa_p50_ms", 1),
    ("Reasoning tok", "reasoning_tokens_mean", 1),
    ("Answer tok", "answer_tokens_mean", 1),
)
OPTIONAL = ("ttfr_p50_ms", "ttfa_p50_ms", "reasoning_tokens_mean", "answer_tokens_mean")


def _fmt(value: Any, decimals: int) -> str:
    if value is None or value != value:
        return "\u2013"
    return f"{float(value):,.{decimals}f}"


def rate_rows(doc: ResultsDoc) -> tuple[list[str], list[list[str]]]:
    df = points_frame(doc)
    cols = [c for c in RATE_COLUMNS
            if c[1] not in OPTIONAL or (c[1] in df and df[c[1]].notna().any())]
    header = [h for h, _, _ in cols] + ["Failed"]
    rows = []
    for _, row in df.iterrows():
        cells = [_fmt(row[col], d) for _, col, d in cols]
        if bool(row.get("client_bound")) or bool(row.get("send_late")):
            cells[0] += f" {LATE_MARK}"
        failed, ok = int(row["failed"] or 0), int(row["completed"] or 0)
        rows.append([*cells, f"{failed}/{failed + ok}"])
    return header, rows


def rate_table(doc: ResultsDoc) -> str:
    """The rate table as GitHub markdown, with the mark explained when a point carries it."""
    header, rows = rate_rows(doc)
    if not rows:
        return "(no points)"
    text = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
    if any(LATE_MARK in r[0] for r in rows):
        text += (f"\n{LATE_MARK} the client's sends ran late (p99 over the client-bound bound) or "
                 "its loop lagged: latencies may include client delay.")
    return text
