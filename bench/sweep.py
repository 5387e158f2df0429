"""The closed-loop concurrency sweep: one point per concurrency, results written after each.

Per point: exactly C requests in flight (a worker sends its next request when its previous one
ends); the first `warmup` requests (default C) run as part of the same loop, so measurement
starts in steady state, and are excluded from every client-side number. Server counter deltas
cover the whole point including warm-up (rates such as acceptance are unaffected). Prompts come
from `bench.prompts` (fitted to `input_len` through `/tokenize`), starts are paced by
`bench.pacing`, the client's own health by `bench.looplag`, and a point is summarized by
`bench.summary`; every definition is in docs/metrics.md.

Everything the user can get wrong is checked before anything is written: the concurrency list,
the URL, that the server answers, and that it serves the model (`/v1/models`).

Public: `SweepConfig`, `run_sweep(cfg, progress=True) -> ResultsDoc` (blocking; safe to call from
a notebook with a running loop), `arun_sweep(cfg, progress=True)` (async),
`parse_concurrency("1,2,4") -> [1, 2, 4]`, `BenchError` (user-facing failures).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import gc
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from tqdm import tqdm

from bench import client, provenance, results, servermetrics
from bench.errors import BenchError
from bench.hooks import TELEMETRY_FILE, SweepHooks
from bench.looplag import LoopLag
from bench.pacing import STARTS_PER_LOOP_TURN, StartGate
from bench.prompts import calibrate_words, fit_prompts, make_prompt
from bench.shapes import PointSummary, RequestRow, ResultsDoc
from bench.summary import client_health, request_row, summarize_point
from bench.watchdog import EngineStalled, Watchdog

log = logging.getLogger("bench")

def parse_concurrency(text: str) -> list[int]:
    """Parse "1,2,4" into [1, 2, 4]; ValueError naming the bad item otherwise."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise ValueError("concurrency list is empty; give positive integers like 1,4,16")
    out: list[int] = []
    for item in items:
        if not re.fullmatch(r"\d+", item):
            raise ValueError(f"concurrency {item!r} is not a positive integer (list: {text!r})")
        value = int(item)
        if value < 1:
            raise ValueError(f"concurrency {value} must be at least 1 (list: {text!r})")
        if value in out:
            raise ValueError(f"concurrency {value} is listed twice (list: {text!r})")
        out.append(value)
    return out


@dataclass
class SweepConfig:
    """What to run. `requests_per_point` None means `max(min_requests, multiplier * C)`."""

    base_url: str
    model: str
    label: str | None = None
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    input_len: int = 128
    output_len: int = 128
    requests_per_point: int | None = None
    requests_multiplier: int = 4
    min_requests: int = 8
    warmup: int | None = None
    api: str = "chat"
    results_dir: Path = Path("results")
    rerun: bool = False
    seed: int = 0
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_e2el_ms: float | None = None
    timeouts: client.Timeouts = field(default_factory=client.Timeouts)
    scrape_interval_s: float = 0.5
    stall_s: float | None = 120.0   # stall watchdog (bench/watchdog.py); None: off
    hooks: SweepHooks = field(default_factory=SweepHooks, compare=False, repr=False)
    cluster_facts: dict[str, Any] | None = None  # from cluster/ (bench.provenance); None: bare URL

    @property
    def folder(self) -> Path:
        return Path(self.results_dir) / (self.label or self.model.replace("/", "_"))

    def requests_for(self, c: int) -> int:
        if self.requests_per_point is not None:
            return self.requests_per_point
        return max(self.min_requests, self.requests_multiplier * c)

    def warmup_for(self, c: int) -> int:
        return c if self.warmup is None else self.warmup

    def validate(self) -> None:
        """Raise BenchError for settings that cannot run."""
        url = urlparse(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise BenchError(f"base URL {self.base_url!r} is not http(s)://host[:port]")
        if not self.model:
            raise BenchError("no model given (--model or GX10_BENCH_MODEL)")
        if not self.concurrency:
            raise BenchError("concurrency list is empty")
        bad = [c for c in self.concurrency if not isinstance(c, int) or c < 1]
        if bad:
            raise BenchError(f"concurrency values must be positive integers, got {bad}")
        for name in ("input_len", "output_len", "requests_multiplier", "min_requests"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be at least 1")
        if self.requests_per_point is not None and self.requests_per_point < 1:
            raise BenchError("requests_per_point must be at least 1")
        if self.warmup is not None and self.warmup < 0:
            raise BenchError("warmup must not be negative")
        if self.api not in ("chat", "completions"):
            raise BenchError(f"api must be 'chat' or 'completions', got {self.api!r}")
        label = self.folder.name
        if label in ("", ".", "..") or "/" in (self.label or ""):
            raise BenchError(f"label {self.label!r} is not a usable folder name")

    def settings(self) -> dict[str, Any]:
        """What results.json records; the first four must match for a run to resume."""
        return {
            "api": self.api,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "seed": self.seed,
            "requests_per_point": self.requests_per_point,
            "requests_multiplier": self.requests_multiplier,
            "min_requests": self.min_requests,
            "warmup": self.warmup,
            "slo_ttft_ms": self.slo_ttft_ms,
            "slo_tpot_ms": self.slo_tpot_ms,
            "slo_e2el_ms": self.slo_e2el_ms,
            "timeouts": dataclasses.asdict(self.timeouts),
            "temperature": 0,
            "ignore_eos": True,
        }


RESUME_KEYS = ("api", "input_len", "output_len", "seed")


# -- preflight ---------------------------------------------------------------------------------

async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise BenchError(f"{url} answered HTTP {resp.status}")
        return await resp.json(content_type=None)


async def preflight(cfg: SweepConfig) -> str | None:
    """Check the server serves `cfg.model`; return its vLLM version (None if not exposed)."""
    cfg.validate()
    base = cfg.base_url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=30, connect=min(10.0, cfg.timeouts.connect_s))
    async with aiohttp.ClientSession(trust_env=False, timeout=timeout) as session:
        try:
            models = await _get_json(session, base + "/v1/models")
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BenchError(f"cannot reach {base}/v1/models: {reason}") from exc
        except ValueError as exc:
            raise BenchError(f"{base}/v1/models did not answer JSON") from exc
        served = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)]
        if cfg.model not in served:
            raise BenchError(f"model {cfg.model!r} is not served at {base}; it serves: "
                             f"{', '.join(map(str, served)) or 'nothing'}")
        try:
            version = await _get_json(session, base + "/version")
            return str(version.get("version")) if isinstance(version, dict) else None
        except (BenchError, aiohttp.ClientError, TimeoutError, ValueError):
            return None


# -- one point ---------------------------------------------------------------------------------

async def run_point(cfg: SweepConfig, c: int, words: int, run_id: str, t0_ns: int,
                    progress: bool, fit: bool = False) -> tuple[PointSummary, list[RequestRow]]:
    """Run one closed-loop point; return (point summary, one row per request).

    `fit`: fit every prompt to `input_len` tokens with `/tokenize`, else use `words` words.
    """
    n_warm, n_meas = cfg.warmup_for(c), cfg.requests_for(c)
    total = n_warm + n_meas
    if fit:
        prompts = await fit_prompts(cfg, c, total, words)
    else:
        prompts = [make_prompt(cfg.seed, c, i, words) for i in range(total)]
    got: list[client.RequestResult | None] = [None] * total
    next_index = 0
    bar = tqdm(total=total, desc=f"C={c}", unit="req", disable=not progress, leave=True)

    async with client.make_session(c, cfg.timeouts) as session, \
            client.make_session(2, cfg.timeouts) as msession:
        before = await servermetrics.scrape(msession, cfg.base_url, cfg.model)
        sampler = servermetrics.GaugeSampler(msession, cfg.base_url, cfg.model,
                                             cfg.scrape_interval_s)
        lag = LoopLag()
        sampler.start()
        lag.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        gate = StartGate(STARTS_PER_LOOP_TURN)
        dog = Watchdog(cfg.stall_s or 0.0, c)

        async def worker() -> None:
            nonlocal next_index
            t_free = time.perf_counter_ns()
            while next_index < total:
                i = next_index
                next_index += 1
                await gate.wait()
                spec = client.RequestSpec(rid=f"{run_id}-c{c}-{i}", model=cfg.model,
                                          prompt=prompts[i], max_tokens=cfg.output_len,
                                          api=cfg.api)
                res = await client.send_request(session, cfg.base_url, spec, dog.in_flight)
                dog.ended(res)
                res.t_intended_ns = t_free
                got[i] = res
                t_free = time.perf_counter_ns()
                bar.update(1)

        # Objects from before the point (earlier points' rows) are frozen out of the collector,
        # so a full collection during the point does not pause the loop for long.
        gc.collect()
        gc.freeze()
        try:
            await _guarded(asyncio.gather(*(worker() for _ in range(c))),
                           dog if cfg.stall_s else None)
        finally:
            gc.unfreeze()
            bar.close()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            await lag.stop()
            await sampler.stop()
        after = await servermetrics.scrape(msession, cfg.base_url, cfg.model)

    done = [r for r in got if r is not None]
    measured = done[n_warm:]
    point = summarize_point(cfg, c, n_warm, measured)
    server = servermetrics.counter_deltas(before, after)
    server["gauges"] = sampler.summary()
    point["server"] = server
    point["client"] = client_health(measured, lag.lags_ms, cpu, wall)
    rows = [request_row(r, c, i, i < n_warm, t0_ns) for i, r in enumerate(done)]
    return point, rows


async def _guarded(work: asyncio.Future[Any], dog: Watchdog | None) -> None:
    """Await the workers; if the watchdog fires first, cancel them and raise EngineStalled."""
    if dog is None:
        await work
        return
    watch = asyncio.ensure_future(dog.run())
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        if watch.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            watch.result()
        await work
    finally:
        watch.cancel()
        if not work.done():  # we were cancelled (Ctrl-C): stop the workers and reap them quietly
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)


# -- the sweep ---------------------------------------------------------------------------------

def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _open_existing(cfg: SweepConfig, card: dict[str, Any]) -> ResultsDoc | None:
    path = cfg.folder / results.RESULTS_FILE
    if cfg.rerun or not path.exists():
        return None
    try:
        doc = results.load_results(path)
    except results.ResultsError as exc:
        raise BenchError(f"{exc}; fix or remove it, or pass --rerun") from exc
    old = doc.get("settings", {})
    new = cfg.settings()
    diff = [k for k in RESUME_KEYS if old.get(k) != new[k]]
    if doc.get("model") != cfg.model:
        diff.insert(0, "model")
    if diff:
        raise BenchError(f"{path} was made with different {', '.join(diff)}; pass --rerun to "
                         f"replace it or use another --label")
    changed = provenance.differences(doc.get("provenance"), card)  # type: ignore[arg-type]
    if changed:
        raise BenchError(f"{path} was measured on another setup ({'; '.join(changed)}); pass "
                         f"--rerun to start a new run or use another --label")
    return doc


async def arun_sweep(cfg: SweepConfig, progress: bool = True) -> ResultsDoc:
    """Async form of `run_sweep`."""
    version = await preflight(cfg)
    card = provenance.build_card(await provenance.http_facts(cfg.base_url, cfg.model),
                                 cfg.settings(), cfg.cluster_facts)
    existing = _open_existing(cfg, card)
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
            (folder / TELEMETRY_FILE).unlink(missing_ok=True)
            doc: ResultsDoc = {
                "schema_version": results.SCHEMA_VERSION, "label": folder.name,
                "model": cfg.model, "base_url": cfg.base_url, "server_version": version,
                "started_at": _now_iso(), "updated_at": None, "settings": cfg.settings(),
                "points": [], "provenance": card,  # type: ignore[typeddict-unknown-key]
            }
        else:
            doc = existing
            doc["server_version"] = version
            results.prune_requests(req_path, {p["concurrency"] for p in doc["points"]})
        have = {p["concurrency"] for p in doc["points"]}
        todo = [c for c in cfg.concurrency if c not in have]
        log.info("sweep %s model=%s url=%s version=%s points=%s (skipping %s)", folder.name,
                 cfg.model, cfg.base_url, version, todo, sorted(have & set(cfg.concurrency)))
        if not todo:
            return doc
        words, calibrated = await calibrate_words(cfg)
        doc["settings"]["prompt_words"] = words
        doc["settings"]["input_calibrated"] = calibrated
        t0 = time.perf_counter_ns()
        run_id = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        for c in todo:
            log.info("point C=%d: %d warm-up + %d measured requests", c, cfg.warmup_for(c),
                     cfg.requests_for(c))
            cfg.hooks.point_start(c)
            start = time.time()
            try:
                point, rows = await run_point(cfg, c, words, run_id, t0, progress, fit=calibrated)
            except EngineStalled as exc:
                saved = cfg.hooks.stalled(c, str(exc), folder)
                log.error("%s; logs: %s", exc, ", ".join(map(str, saved)) or "none saved")
                doc["stalled"] = {"concurrency": c, "error": str(exc), "at": _now_iso(),
                                  "logs": [str(p) for p in saved]}
                results.write_json_atomic(folder / results.RESULTS_FILE, doc)
                raise
            cfg.hooks.point_end(c, point, rows, start, time.time(), folder)
            point["run_id"] = run_id
            point["t0_perf_ns"] = t0
            for r in rows:
                r["run_id"] = run_id
            results.append_lines(req_path, rows)
            doc["points"] = sorted([*doc["points"], point], key=lambda p: p["concurrency"])
            doc["updated_at"] = _now_iso()
            results.write_json_atomic(folder / results.RESULTS_FILE, doc)
            log.info("point C=%d done: %d ok, %d failed %s, %.1f output tok/s, "
                     "TTFT p50 %s ms", c, point["completed"], point["failed"],
                     point["failures"], point["output_tok_s"] or 0.0, point["ttft_ms"]["p50"])
        await provenance.recheck(cfg, card, doc, todo, folder / results.RESULTS_FILE)
        return doc
    finally:
        log.removeHandler(handler)
        handler.close()


def run_sweep(cfg: SweepConfig, progress: bool = True) -> ResultsDoc:
    """Run the sweep and return the results document (also on disk under `cfg.folder`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun_sweep(cfg, progress))
    # Called from a running loop (a notebook cell): run on a fresh loop in a thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["doc"] = asyncio.run(arun_sweep(cfg, progress))
        except BaseException as exc:  # handed to the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=target, name="bench-sweep")
    thread.start()
    thread.join()
    if "exc" in box:
        raise box["exc"]
    doc: ResultsDoc = copy.copy(box["doc"])
    return doc
