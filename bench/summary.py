"""Point summaries: the client-side numbers of one concurrency point, its client health, and the
requests.jsonl rows. Every definition is in docs/metrics.md; the shapes are in `bench.shapes`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bench import client, reasoning
from bench.looplag import LOOP_LAG_BOUND_MS
from bench.shapes import ClientHealth, PointSummary, RequestMetrics, RequestRow
from bench.stats import summarize

if TYPE_CHECKING:
    from bench.sweep import SweepConfig


def _rel_s(t_ns: int | None, t0_ns: int) -> float | None:
    return None if t_ns is None else round((t_ns - t0_ns) / 1e9, 9)


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _meets_slo(cfg: SweepConfig, m: RequestMetrics) -> bool:
    checks = ((cfg.slo_ttft_ms, m["ttft_ms"]), (cfg.slo_tpot_ms, m["tpot_ms"]),
              (cfg.slo_e2el_ms, m["e2el_ms"]))
    return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


def summarize_point(cfg: SweepConfig, c: int, n_warm: int,
                    measured: list[client.RequestResult]) -> PointSummary:
    """Aggregate client-side numbers of one point (definitions in docs/metrics.md)."""
    ok = [r for r in measured if r.ok]
    failures = collections.Counter(r.error_kind or "unknown" for r in measured if not r.ok)
    per = [client.request_metrics(r) for r in ok]
    if measured:
        first_send = min(r.t_send_ns for r in measured)
        # The stream's end as its bytes arrived (the kernel's stamp), not when the loop got to it.
        last_end = max((r.t_done_ns or r.t_end_ns or r.t_send_ns) for r in measured)
        duration = (last_end - first_send) / 1e9
    else:
        duration = 0.0
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    good = sum(1 for m in per if _meets_slo(cfg, m))

    def rate(x: float) -> float | None:
        return x / duration if duration > 0 else None

    sources = collections.Counter(r.timing_source for r in ok)
    point: PointSummary = {
        "concurrency": c,
        "warmup": n_warm,
        "requests": len(measured),
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "failures": dict(sorted(failures.items())),
        "error_rate": (len(measured) - len(ok)) / len(measured) if measured else None,
        "duration_s": duration,
        "output_tokens": out_tokens,
        "input_tokens": in_tokens,
        "input_tokens_mean": in_tokens / len(ok) if ok else None,
        "output_tok_s": rate(out_tokens),
        "total_tok_s": rate(out_tokens + in_tokens),
        "request_s": rate(len(ok)),
        "goodput": rate(good),
        "goodput_frac": good / len(measured) if measured else None,
        "tokens_estimated": sum(1 for r in ok if r.tokens_source == "estimated"),
        "timing_source": ",".join(sorted(sources)) or None,
        "ttft_ms": summarize([m["ttft_ms"] for m in per]),
        "tpot_ms": summarize(_present(m["tpot_ms"] for m in per)),
        "itl_ms": summarize([v for m in per for v in m["itl_ms"]]),
        "icl_ms": summarize([v for m in per for v in m["icl_ms"]]),
        "e2el_ms": summarize([m["e2el_ms"] for m in per]),
        "decode_tok_s": summarize(_present(m["decode_tok_s"] for m in per)),
        "e2e_tok_s": summarize(_present(m["e2e_tok_s"] for m in per)),
        "tokens_per_chunk": summarize([v for m in per for v in m["tokens_per_chunk"]]),
    }
    split = reasoning.summarize_split(ok)
    if split is not None:  # a reasoning model: the split (bench/reasoning.py)
        point["reasoning"] = split
    return point


def client_health(measured: list[client.RequestResult], lags_ms: list[float], cpu_s: float,
                  wall_s: float) -> ClientHealth:
    """How busy the client was over a point: loop, dispatch, request-path and read lags."""
    dispatch = [(r.t_send_ns - r.t_intended_ns) / 1e6 for r in measured
                if r.t_intended_ns is not None]
    request_path = [(r.t_send_ns - r.t_call_ns) / 1e6 for r in measured
                    if r.t_call_ns is not None and r.send_source == client.SEND_WRITE]
    loop_lag = summarize(lags_ms)
    dispatch_s = summarize(dispatch)
    p99s = [v for v in (loop_lag["p99"], dispatch_s["p99"]) if v is not None]
    ok = [r for r in measured if r.ok]
    n_events = sum(len(r.chunk_t_ns) for r in ok)
    coalesced = sum(r.coalesced for r in ok)
    return {
        "cpu_pct": round(100 * cpu_s / wall_s, 1) if wall_s > 0 else None,
        "loop_lag_ms": loop_lag,
        "dispatch_lag_ms": dispatch_s,
        "request_path_ms": summarize(request_path),
        "read_lag_ms": summarize([lag / 1e6 for r in ok for lag in r.read_lag_ns]),
        "coalesced_events": coalesced,
        "coalesced_frac": coalesced / n_events if n_events else None,
        "client_bound": bool(p99s and max(p99s) > LOOP_LAG_BOUND_MS),
        "client_bound_threshold_ms": LOOP_LAG_BOUND_MS,
    }


def request_row(r: client.RequestResult, c: int, i: int, warm: bool, t0: int) -> RequestRow:
    """The requests.jsonl line of one request, times relative to the run's clock origin `t0`."""
    row: RequestRow = {
        "concurrency": c, "index": i, "rid": r.rid, "warmup": warm, "ok": r.ok,
        "error_kind": r.error_kind, "error": r.error,
        "t_intended_s": _rel_s(r.t_intended_ns, t0), "t_call_s": _rel_s(r.t_call_ns, t0),
        "t_send_s": _rel_s(r.t_send_ns, t0), "send_source": r.send_source,
        "t_first_s": _rel_s(r.t_first_ns, t0), "t_first_read_s": _rel_s(r.t_first_read_ns, t0),
        "t_first_parse_s": _rel_s(r.t_first_parse_ns, t0),
        "t_last_s": _rel_s(r.t_last_ns, t0), "t_end_s": _rel_s(r.t_end_ns, t0),
        "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
        "tokens_source": r.tokens_source, "timing_source": r.timing_source,
        "coalesced": r.coalesced,
        "chunk_t_s": [_rel_s(t, t0) for t in r.chunk_t_ns],
        "chunk_tokens": r.chunk_tokens,
    }
    if r.t_scheduled_ns is not None:  # open loop: the schedule and how late the send was
        row["t_scheduled_s"] = _rel_s(r.t_scheduled_ns, t0)
        row["send_lateness_ms"] = (r.t_send_ns - r.t_scheduled_ns) / 1e6
    if r.ok:
        m = client.request_metrics(r)
        row.update({"ttft_ms": m["ttft_ms"], "tpot_ms": m["tpot_ms"], "e2el_ms": m["e2el_ms"],
                    "decode_tok_s": m["decode_tok_s"]})
        split = reasoning.split(r)
        if split is not None:
            row.update(split)  # type: ignore[typeddict-item]
    return row
