"""Typed shapes of what the harness writes: results.json and requests.jsonl, as docs/metrics.md
defines them ("Per request", "Per concurrency point", "Server side", "Client health", "On disk").

They are plain dicts on disk and in memory (JSON in, JSON out); the TypedDicts name every key so
the sweep that writes them and the report and plots that read them agree.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Distribution(TypedDict):
    """`bench.stats.summarize`: None everywhere but `count` (0) when there are no values."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


class RequestMetrics(TypedDict):
    """One successful request's metrics, in ms (docs/metrics.md, "Per request")."""

    ttft_ms: float
    e2el_ms: float
    tpot_ms: float | None
    decode_tok_s: float | None
    e2e_tok_s: float | None
    itl_ms: list[float]
    icl_ms: list[float]
    tokens_per_chunk: list[int]


class RequestRow(TypedDict):
    """One line of requests.jsonl; times in seconds from the run's clock origin (`t0_perf_ns`)."""

    concurrency: int
    index: int
    rid: str
    warmup: bool
    ok: bool
    error_kind: str | None
    error: str | None
    t_intended_s: float | None
    t_call_s: float | None
    t_send_s: float | None
    send_source: str
    t_first_s: float | None
    t_first_read_s: float | None
    t_first_parse_s: float | None
    t_last_s: float | None
    t_end_s: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    tokens_source: str | None
    timing_source: str
    coalesced: int
    chunk_t_s: list[float | None]
    chunk_tokens: list[int]
    ttft_ms: NotRequired[float]
    tpot_ms: NotRequired[float | None]
    e2el_ms: NotRequired[float]
    decode_tok_s: NotRequired[float | None]
    run_id: NotRequired[str]
    request_rate: NotRequired[float]         # open loop (bench/openloop.py)
    t_scheduled_s: NotRequired[float | None]
    send_lateness_ms: NotRequired[float]
    ttfr_ms: NotRequired[float]              # reasoning models (bench/reasoning.py)
    ttfa_ms: NotRequired[float | None]
    reasoning_tokens: NotRequired[int]
    answer_tokens: NotRequired[int]


class GaugeSummary(TypedDict):
    max: float
    mean: float
    samples: int


class ServerSummary(TypedDict):
    """Counter deltas over a point and the sampled gauges; absent counters are None."""

    counters: dict[str, float | None]
    acceptance_rate: float | None
    acceptance_length: float | None
    acceptance_per_pos: list[float] | None
    absent: list[str]
    gauges: NotRequired[dict[str, GaugeSummary | None]]


class ClientHealth(TypedDict):
    """How busy the client was during a point (docs/metrics.md, "Client health")."""

    cpu_pct: float | None
    loop_lag_ms: Distribution
    dispatch_lag_ms: Distribution
    request_path_ms: Distribution
    read_lag_ms: Distribution
    coalesced_events: int
    coalesced_frac: float | None
    client_bound: bool
    client_bound_threshold_ms: float


class PointSummary(TypedDict):
    """One concurrency point of results.json; `server`, `client` and the run keys are added by
    the sweep once the point has run."""

    concurrency: int
    warmup: int
    requests: int
    completed: int
    failed: int
    failures: dict[str, int]
    error_rate: float | None
    duration_s: float
    output_tokens: int
    input_tokens: int
    input_tokens_mean: float | None
    output_tok_s: float | None
    total_tok_s: float | None
    request_s: float | None
    goodput: float | None
    goodput_frac: float | None
    tokens_estimated: int
    timing_source: str | None
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    icl_ms: Distribution
    e2el_ms: Distribution
    decode_tok_s: Distribution
    e2e_tok_s: Distribution
    tokens_per_chunk: Distribution
    server: NotRequired[ServerSummary]
    client: NotRequired[ClientHealth]
    run_id: NotRequired[str]
    t0_perf_ns: NotRequired[int]
    telemetry: NotRequired[dict[str, Any]]   # node telemetry (bench/hooks.py TelemetryHooks)
    reasoning: NotRequired[dict[str, Distribution]]  # reasoning models (bench/reasoning.py)
    mode: NotRequired[str]                   # "rate": an open-loop point (bench/openloop.py)
    request_rate: NotRequired[float]
    burstiness: NotRequired[float]
    achieved_rate: NotRequired[float | None]
    send_lateness_ms: NotRequired[Distribution]
    send_late: NotRequired[bool]
    meets_slo: NotRequired[bool | None]


class ResultsDoc(TypedDict):
    """results.json; `settings` is `SweepConfig.settings()` plus the prompt calibration."""

    schema_version: int
    label: str
    model: str
    base_url: str
    server_version: str | None
    started_at: str
    updated_at: str | None
    settings: dict[str, Any]
    points: list[PointSummary]
    stalled: NotRequired[dict[str, Any]]     # the point the stall watchdog stopped (bench/watchdog.py)
