"""Open-loop (request-rate) load: arrivals on a seeded schedule, a sweep over rates, goodput
under SLOs per rate, and a search for the highest rate that meets the SLOs.

Unlike the closed loop (`bench.sweep`: C in flight, a request starts when one ends), here a
request starts when the schedule says (`bench.arrivals`, drawn like `vllm bench serve
--request-rate R --burstiness B`), whether or not the server has kept up; nothing caps the
requests in flight. The client's own punctuality is measured per request: `send_lateness` =
actual send (start of the request's socket write) minus scheduled send; a point whose lateness
p99 exceeds `LOOP_LAG_BOUND_MS` is `send_late` and `client_bound`, marked in the table like a
client-bound closed-loop point. To keep the schedule to well under a millisecond the dispatcher
sleeps until `SPIN_S` before a send and then yields to the loop (which keeps reading streams)
until the time comes: the event loop's timers alone wake up to a millisecond late (epoll's
timeout is in whole milliseconds). It dispatches each request early by the median time recent
requests took from dispatch to their socket write (aiohttp's request path, a few hundred
microseconds), so the write, not the dispatch, is on time; lateness can then be negative.

A rate run is a results folder of its own (`settings.mode = "rate"`); its points carry
`mode: "rate"`, `request_rate`, `burstiness`, `achieved_rate`, `send_lateness_ms`, `send_late`,
`meets_slo`, and `concurrency` = the peak number of requests in flight (not a setting). Rows
in requests.jsonl carry `request_rate`, `t_scheduled_s` and `send_lateness_ms`.

The max-rate search (`RateLoad.search`): a rate "meets the SLOs" when its `goodput_frac` is at
least `goodput_target` (a point whose sends were late is marked, and listed with the answer,
not failed). Start from the swept rates: the bracket is
(highest rate that met, lowest higher rate that did not); with no failing rate the upper end
doubles, with no passing rate the lower end halves; then bisect. It stops after
`search_probes` probes, or when the bracket's width is at most `search_tolerance` of its lower
end. The answer is the bracket's lower end (a rate that was measured to meet the SLOs).
docs/metrics.md, "Request-rate load", has all of this.

Public: `RateLoad`, `run_rate_sweep(cfg, load, progress) -> ResultsDoc`, `arun_rate_sweep`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import gc
import logging
import math
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from bench import arrivals, client, provenance, results, servermetrics
from bench.errors import BenchError
from bench.looplag import LOOP_LAG_BOUND_MS, LoopLag
from bench.prompts import calibrate_words, fit_prompts, make_prompt
from bench.shapes import PointSummary, RequestRow, ResultsDoc
from bench.stats import summarize
from bench.summary import client_health, request_row, summarize_point
from bench.sweep import SweepConfig, _now_iso, _open_existing, preflight

log = logging.getLogger("bench")

SPIN_S = 0.0015          # sleep until this long before a send, then yield until it is due
LEAD_S = 0.05            # the schedule starts this long after the point is set up
LEAD_WINDOW = 32         # dispatch early by the median request path of the last this many sends
MAX_LEAD_NS = 2_000_000
PREWARM_S = 0.5
RATE_PROMPT_BASE = 1_000_000  # prompt seeds of rate points: apart from every concurrency point


@dataclass
class RateLoad:
    """The open-loop settings. `rates` in requests/s; the SLOs are the `SweepConfig`'s."""

    rates: list[float]
    burstiness: float = 1.0
    goodput_target: float = 0.95   # a rate meets the SLOs when this fraction is within them
    search: bool = False
    search_probes: int = 6
    search_tolerance: float = 0.1

    def validate(self) -> None:
        if not self.rates:
            raise BenchError("request-rate list is empty")
        bad = [r for r in self.rates if not (isinstance(r, int | float) and r > 0
                                              and math.isfinite(r))]
        if bad:
            raise BenchError(f"request rates must be positive finite numbers, got {bad}")
        if not self.burstiness > 0:
            raise BenchError(f"burstiness must be positive (1 = Poisson), got {self.burstiness}")
        if not 0 < self.goodput_target <= 1:
            raise BenchError(f"goodput target must be in (0, 1], got {self.goodput_target}")
        if self.search_probes < 1:
            raise BenchError("search probes must be at least 1")
        if not self.search_tolerance > 0:
            raise BenchError("search tolerance must be positive")

    def settings(self) -> dict[str, Any]:
        return {"mode": "rate", "request_rates": list(self.rates), "burstiness": self.burstiness,
                "goodput_target": self.goodput_target, "search": self.search,
                "search_probes": self.search_probes, "search_tolerance": self.search_tolerance}


def requests_for_rate(cfg: SweepConfig, rate: float) -> int:
    """Measured requests at a rate: `requests_per_point`, else `multiplier` seconds of arrivals."""
    if cfg.requests_per_point is not None:
        return cfg.requests_per_point
    return max(cfg.min_requests, math.ceil(cfg.requests_multiplier * rate))


def warmup_for_rate(cfg: SweepConfig, rate: float) -> int:
    """Warm-up requests (the schedule's first, excluded): `warmup`, else one second's arrivals."""
    return math.ceil(rate) if cfg.warmup is None else cfg.warmup


def schedule_seed(seed: int, rate: float) -> int:
    return zlib.crc32(f"{seed}/rate/{rate!r}".encode())


def has_slo(cfg: SweepConfig) -> bool:
    return any(v is not None for v in (cfg.slo_ttft_ms, cfg.slo_tpot_ms, cfg.slo_e2el_ms))


async def _sleep_until(t_ns: int) -> None:
    """Sleep until `SPIN_S` before `t_ns`, then yield to the loop until it is due."""
    wait = (t_ns - time.perf_counter_ns()) / 1e9 - SPIN_S
    if wait > 0:
        await asyncio.sleep(wait)
    while time.perf_counter_ns() < t_ns:
        await asyncio.sleep(0)


def prewarm_connections(rate: float, total: int) -> int:
    """Connections opened before the schedule starts: half a second's arrivals and 8 more (a
    send that must first connect is late by the TCP handshake and aiohttp's connect path)."""
    return min(total, math.ceil(rate * PREWARM_S) + 8)


async def _open_connections(session: aiohttp.ClientSession, base_url: str, n: int) -> None:
    """Fill the session's keep-alive pool with `n` connections (n `/health` requests at once)."""
    url = base_url.rstrip("/") + "/health"

    async def one() -> None:
        try:
            async with session.get(url) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # a server without /health: the first sends connect, and show it as lateness

    await asyncio.gather(*(one() for _ in range(n)))


def peak_in_flight(done: list[client.RequestResult]) -> int:
    events = sorted([(r.t_send_ns, 1) for r in done]
                    + [((r.t_done_ns or r.t_end_ns or r.t_send_ns), -1) for r in done],
                    key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def run_rate_point(cfg: SweepConfig, load: RateLoad, rate: float, words: int, run_id: str,
                         t0_ns: int, progress: bool, fit: bool = False,
                         ) -> tuple[PointSummary, list[RequestRow]]:
    """Run one open-loop point at `rate`; return (point summary, one row per request)."""
    n_warm, n_meas = warmup_for_rate(cfg, rate), requests_for_rate(cfg, rate)
    total = n_warm + n_meas
    key = RATE_PROMPT_BASE + round(rate * 1000)
    if fit:
        prompts = await fit_prompts(cfg, key, total, words)
    else:
        prompts = [make_prompt(cfg.seed, key, i, words) for i in range(total)]
    offsets = arrivals.schedule(total, rate, load.burstiness, schedule_seed(cfg.seed, rate))
    specs = [client.RequestSpec(rid=f"{run_id}-r{rate:g}-{i}", model=cfg.model, prompt=prompts[i],
                                max_tokens=cfg.output_len, api=cfg.api) for i in range(total)]
    got: list[client.RequestResult | None] = [None] * total
    bar = tqdm(total=total, desc=f"rate={rate:g}/s", unit="req", disable=not progress, leave=True)

    async with client.make_session(total, cfg.timeouts) as session, \
            client.make_session(2, cfg.timeouts) as msession:
        before = await servermetrics.scrape(msession, cfg.base_url, cfg.model)
        sampler = servermetrics.GaugeSampler(msession, cfg.base_url, cfg.model,
                                             cfg.scrape_interval_s)
        lag = LoopLag()
        sampler.start()
        lag.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()

        paths: collections.deque[int] = collections.deque(maxlen=LEAD_WINDOW)

        async def one(i: int, t_sched: int, t_dispatch: int) -> None:
            res = await client.send_request(session, cfg.base_url, specs[i])
            res.t_scheduled_ns = res.t_intended_ns = t_sched
            if res.send_source == client.SEND_WRITE:
                paths.append(res.t_send_ns - t_dispatch)
            got[i] = res
            bar.update(1)

        def lead_ns() -> int:
            """How long from dispatch to the socket write lately (the median), capped."""
            if not paths:
                return 0
            return min(sorted(paths)[len(paths) // 2], MAX_LEAD_NS)

        await _open_connections(session, cfg.base_url, prewarm_connections(rate, total))
        tasks: list[asyncio.Task[None]] = []
        gc.collect()
        gc.freeze()
        gc.disable()  # a collection in the middle of a send is lateness; the point is short
        try:
            start = time.perf_counter_ns() + int(LEAD_S * 1e9)
            for i, off in enumerate(offsets):
                t_sched = start + int(off * 1e9)
                await _sleep_until(t_sched - lead_ns())
                tasks.append(asyncio.ensure_future(one(i, t_sched, time.perf_counter_ns())))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            gc.enable()
            gc.unfreeze()
            bar.close()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            await lag.stop()
            await sampler.stop()
        after = await servermetrics.scrape(msession, cfg.base_url, cfg.model)

    done = [r for r in got if r is not None]
    measured = done[n_warm:]
    point = summarize_point(cfg, 0, n_warm, measured)
    server = servermetrics.counter_deltas(before, after)
    server["gauges"] = sampler.summary()
    point["server"] = server
    point["client"] = client_health(measured, lag.lags_ms, cpu, wall)
    lateness = summarize([(r.t_send_ns - r.t_scheduled_ns) / 1e6 for r in measured
                          if r.t_scheduled_ns is not None])
    sends = sorted(r.t_send_ns for r in done)
    late = lateness["p99"] is not None and lateness["p99"] > LOOP_LAG_BOUND_MS
    point.update({
        "concurrency": peak_in_flight(measured),
        "mode": "rate", "request_rate": rate, "burstiness": load.burstiness,
        "achieved_rate": ((len(sends) - 1) / ((sends[-1] - sends[0]) / 1e9)
                          if len(sends) > 1 and sends[-1] > sends[0] else None),
        "send_lateness_ms": lateness, "send_late": late,
        "meets_slo": meets(point, load) if has_slo(cfg) else None,
    })
    point["client"]["client_bound"] = point["client"]["client_bound"] or late
    rows = [request_row(r, 0, i, i < n_warm, t0_ns) for i, r in enumerate(done)]
    for row in rows:
        row["request_rate"] = rate
    return point, rows


def meets(point: PointSummary, load: RateLoad) -> bool:
    """The point met the SLOs: at least `goodput_target` of its requests were within them. (A
    point whose sends ran late is marked, not failed: the search's answer names late points.)"""
    frac = point.get("goodput_frac")
    return frac is not None and frac >= load.goodput_target


# -- the max-rate search -----------------------------------------------------------------------

def next_probe(results_by_rate: dict[float, bool], tolerance: float) -> float | None:
    """The next rate to try, or None when the bracket is narrow enough (see the module doc)."""
    passed = [r for r, ok in results_by_rate.items() if ok]
    lo = max(passed) if passed else None
    failed = [r for r, ok in results_by_rate.items() if not ok and (lo is None or r > lo)]
    hi = min(failed) if failed else None
    if lo is None and hi is None:
        return None
    if hi is None:
        assert lo is not None  # noqa: S101
        return lo * 2
    if lo is None:
        return hi / 2
    if hi - lo <= tolerance * lo:
        return None
    return round((lo + hi) / 2, 6)


def bracket(results_by_rate: dict[float, bool]) -> tuple[float | None, float | None]:
    passed = [r for r, ok in results_by_rate.items() if ok]
    lo = max(passed) if passed else None
    failed = [r for r, ok in results_by_rate.items() if not ok and (lo is None or r > lo)]
    return lo, (min(failed) if failed else None)


# -- the sweep ---------------------------------------------------------------------------------

def _settings(cfg: SweepConfig, load: RateLoad) -> dict[str, Any]:
    return {**cfg.settings(), **load.settings()}


async def arun_rate_sweep(cfg: SweepConfig, load: RateLoad, progress: bool = True) -> ResultsDoc:
    """Async form of `run_rate_sweep`."""
    load.validate()
    version = await preflight(cfg)
    settings = _settings(cfg, load)
    card = provenance.build_card(await provenance.http_facts(cfg.base_url, cfg.model),
                                 settings, cfg.cluster_facts)
    existing = _open_existing(cfg, card)
    if existing is not None and (existing["settings"].get("mode") != "rate"
                                 or existing["settings"].get("burstiness") != load.burstiness):
        raise BenchError(f"{cfg.folder / results.RESULTS_FILE} holds another kind of run "
                         f"(closed loop, or other burstiness); pass --rerun or use another --label")
    folder = cfg.folder
    folder.mkdir(parents=True, exist_ok=True)
    req_path = folder / results.REQUESTS_FILE
    handler = logging.FileHandler(folder / results.LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        if existing is None:
            req_path.unlink(missing_ok=True)
            doc: ResultsDoc = {
                "schema_version": results.SCHEMA_VERSION, "label": folder.name,
                "model": cfg.model, "base_url": cfg.base_url, "server_version": version,
                "started_at": _now_iso(), "updated_at": None, "settings": settings,
                "points": [], "provenance": card,  # type: ignore[typeddict-unknown-key]
            }
        else:
            doc = existing
            doc["server_version"] = version
            doc["settings"].update(load.settings())
            results.prune_requests(req_path, {p["request_rate"] for p in doc["points"]}, "request_rate")
        words, calibrated = await calibrate_words(cfg)
        doc["settings"]["prompt_words"] = words
        doc["settings"]["input_calibrated"] = calibrated
        t0 = time.perf_counter_ns()
        run_id = dt.datetime.now().strftime("%Y%m%dT%H%M%S")

        async def measure(rate: float, probe: bool) -> PointSummary:
            log.info("point rate=%g/s: %d warm-up + %d measured requests", rate,
                     warmup_for_rate(cfg, rate), requests_for_rate(cfg, rate))
            point, rows = await run_rate_point(cfg, load, rate, words, run_id, t0, progress,
                                               fit=calibrated)
            point["run_id"] = run_id
            point["t0_perf_ns"] = t0
            if probe:
                point["search_probe"] = True  # type: ignore[typeddict-unknown-key]
            for r in rows:
                r["run_id"] = run_id
            results.append_lines(req_path, rows)
            doc["points"] = sorted([*doc["points"], point], key=lambda p: p["request_rate"])
            doc["updated_at"] = _now_iso()
            results.write_json_atomic(folder / results.RESULTS_FILE, doc)
            lat = point["send_lateness_ms"]
            log.info("point rate=%g/s done: achieved %.2f/s, %d ok, %d failed, goodput %s, "
                     "send lateness p99 %.3f ms", rate, point["achieved_rate"] or 0.0,
                     point["completed"], point["failed"], point["goodput_frac"], lat["p99"] or 0.0)
            return point

        have = {p["request_rate"] for p in doc["points"]}
        for rate in load.rates:
            if rate not in have:
                await measure(rate, probe=False)
        if load.search and has_slo(cfg):
            await _search(doc, load, measure, folder / results.RESULTS_FILE)
        elif load.search:
            raise BenchError("the max-rate search needs an SLO (--goodput ttft:500,tpot:50)")
        await provenance.recheck(cfg, card, doc, [], folder / results.RESULTS_FILE)
        return doc
    finally:
        log.removeHandler(handler)
        handler.close()


async def _search(doc: ResultsDoc, load: RateLoad, measure: Any, path: Path) -> None:
    """Bisect for the highest rate meeting the SLOs; the result is `doc["max_rate_search"]`."""
    seen = {p["request_rate"]: meets(p, load) for p in doc["points"]}
    probes: list[float] = []
    stopped = "bracket within tolerance"
    while True:
        rate = next_probe(seen, load.search_tolerance)
        if rate is None:
            if not any(seen.values()) and not any(not v for v in seen.values()):
                stopped = "nothing measured"
            break
        if len(probes) >= load.search_probes:
            stopped = f"probe budget ({load.search_probes}) spent"
            break
        probes.append(rate)
        point = await measure(rate, probe=True)
        seen[rate] = meets(point, load)
    lo, hi = bracket(seen)
    late = sorted(p["request_rate"] for p in doc["points"] if p.get("send_late"))
    doc["max_rate_search"] = {  # type: ignore[typeddict-unknown-key]
        "max_rate": lo, "bracket": [lo, hi], "probes": probes, "stopped": stopped,
        "late_points": late,
        "goodput_target": load.goodput_target, "tolerance": load.search_tolerance,
        "max_probes": load.search_probes,
    }
    results.write_json_atomic(path, doc)


def run_rate_sweep(cfg: SweepConfig, load: RateLoad, progress: bool = True) -> ResultsDoc:
    """Run the open-loop sweep (and search) and return the results document (also on disk)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_rate_sweep(cfg, load, progress))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["doc"] = asyncio.run(arun_rate_sweep(cfg, load, progress))
        except BaseException as exc:  # handed to the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=target, name="bench-rate-sweep")
    thread.start()
    thread.join()
    if "exc" in box:
        raise box["exc"]
    doc: ResultsDoc = box["doc"]
    return doc


__all__ = ["RateLoad", "arun_rate_sweep", "run_rate_sweep"]
