"""The closed-loop concurrency sweep: one point per concurrency, results written after each.

Per point: exactly C requests in flight (a worker sends its next request when its previous one
ends); the first `warmup` requests (default C) run as part of the same loop, so measurement
starts in steady state, and are excluded from every client-side number. Server counter deltas
cover the whole point including warm-up (rates such as acceptance are unaffected). Prompts are
unique and deterministic (seeded per run seed, concurrency and index; the unique words come
first so no two requests share a prefix-cache block), each fitted through `/tokenize` to
`input_len` tokens where the server has it (a real tokenizer gives a word one to several tokens,
so one word count does not fit every prompt); `max_tokens = output_len`, `ignore_eos`,
`temperature: 0`. At most `STARTS_PER_LOOP_TURN` requests start per event-loop turn, so a cohort
of requests ending together cannot keep the client from reading its sockets (the wait is
dispatch lag).

Everything the user can get wrong is checked before anything is written: the concurrency list,
the URL, that the server answers, and that it serves the model (`/v1/models`).

Public: `SweepConfig`, `run_sweep(cfg, progress=True) -> dict` (blocking; safe to call from a
notebook with a running loop), `arun_sweep(cfg, progress=True)` (async),
`parse_concurrency("1,2,4") -> [1, 2, 4]`, `BenchError` (user-facing failures).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import gc
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from tqdm import tqdm

from bench import client, results, servermetrics
from bench.aiotools import cancel_and_wait
from bench.errors import BenchError
from bench.simserver import WORDS
from bench.stats import summarize

log = logging.getLogger("bench")

LOOP_LAG_BOUND_MS = 2.0
LOOP_LAG_INTERVAL_S = 0.005
# Starting a request costs the client far more than reading an event (aiohttp builds and writes
# it); when a whole cohort of C requests ends together, C starts in one event-loop turn would
# keep every socket unread for that long, and events that queue up meanwhile share a stamp.
STARTS_PER_LOOP_TURN = 8


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


# -- prompts -----------------------------------------------------------------------------------

def make_prompt(seed: int, c: int, i: int, words: int) -> str:
    """A unique, deterministic prompt of `words` words; the unique part comes first."""
    rng = random.Random(f"{seed}/{c}/{i}")
    head = [f"r{seed}c{c}i{i}"]
    body = [rng.choice(WORDS) for _ in range(max(0, words - 1))]
    return " ".join(head + body)


async def _count_tokens(session: aiohttp.ClientSession, cfg: SweepConfig,
                        prompt: str) -> int | None:
    body: dict[str, Any] = {"model": cfg.model}
    if cfg.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    try:
        async with session.post(cfg.base_url.rstrip("/") + "/tokenize", json=body) as resp:
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
            return int(data["count"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None


FIT_TRIES = 12  # /tokenize calls to find the word count, per prompt
FILL_TRIES = 48  # words tried, to fill a gap that one word more overshoots
FIT_PARALLEL = 8


async def fit_prompt(session: aiohttp.ClientSession, cfg: SweepConfig, c: int, i: int,
                     words: int) -> tuple[str, int | None]:
    """Prompt `i` of point `c` with `input_len` tokens by the server's `/tokenize`, and its count.

    Real tokenizers give a word one to several tokens, so the word count that hits the target
    differs per prompt: search it from `words` (adding a word never removes tokens), then, when
    one word more overshoots, append other words that do not, until the count is exact. Returns
    the closest prompt not over the target when that fails, and count None without `/tokenize`.
    """
    target = cfg.input_len
    counts: dict[int, int] = {}
    lo, hi = 0, None  # the largest word count known under the target, the smallest over it
    w = max(1, words)
    for _ in range(FIT_TRIES):
        n = await _count_tokens(session, cfg, make_prompt(cfg.seed, c, i, w))
        if n is None:
            return make_prompt(cfg.seed, c, i, max(1, words)), None
        counts[w] = n
        if n == target:
            return make_prompt(cfg.seed, c, i, w), n
        if n < target:
            lo = max(lo, w)
        else:
            hi = w if hi is None else min(hi, w)
        if hi is not None and hi - lo <= 1:
            break
        step = round((target - n) * w / n) or (1 if n < target else -1)
        w = min(max(w + step, lo + 1), hi - 1 if hi is not None else w + step)
    if lo == 0:
        return make_prompt(cfg.seed, c, i, 1), counts.get(1)
    prompt, n = make_prompt(cfg.seed, c, i, lo), counts[lo]
    rng = random.Random(f"fill/{cfg.seed}/{c}/{i}")
    for word in rng.sample(WORDS, min(FILL_TRIES, len(WORDS))):
        m = await _count_tokens(session, cfg, f"{prompt} {word}")
        if m is not None and m <= target:
            prompt, n = f"{prompt} {word}", m
            if n == target:
                break
    return prompt, n


async def fit_prompts(cfg: SweepConfig, c: int, total: int, words: int) -> list[str]:
    """The prompts of one point, each fitted to `input_len` tokens (before the point starts)."""
    sem = asyncio.Semaphore(FIT_PARALLEL)
    async with client.make_session(FIT_PARALLEL, cfg.timeouts) as session:
        async def one(i: int) -> str:
            async with sem:
                return (await fit_prompt(session, cfg, c, i, words))[0]
        return list(await asyncio.gather(*(one(i) for i in range(total))))


async def calibrate_words(cfg: SweepConfig) -> tuple[int, bool]:
    """Words per prompt that make `input_len` tokens; (words, calibrated via /tokenize?)."""
    async with client.make_session(1, cfg.timeouts) as session:
        prompt, count = await fit_prompt(session, cfg, 0, 0, cfg.input_len)
    if count is None:
        return cfg.input_len, False
    return len(prompt.split()), True


# -- one point ---------------------------------------------------------------------------------

class _LoopLag:
    """How late a short timer fires: a direct reading of event-loop congestion."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_INTERVAL_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t - LOOP_LAG_INTERVAL_S) * 1e3))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)


class _StartGate:
    """Lets at most `per_turn` requests start per event-loop turn; the rest wait, in order, for
    the next turns, so reads are serviced in between (the wait shows as dispatch lag)."""

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._started = 0
        self._reset_scheduled = False
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        if self._started < self.per_turn and not self._waiting:
            self._take()
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        await fut

    def _take(self) -> None:
        self._started += 1
        if not self._reset_scheduled:
            self._reset_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._started = 0
        self._reset_scheduled = False
        while self._waiting and self._started < self.per_turn:
            fut = self._waiting.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)


def _rel_s(t_ns: int | None, t0_ns: int) -> float | None:
    return None if t_ns is None else round((t_ns - t0_ns) / 1e9, 9)


def _meets_slo(cfg: SweepConfig, m: dict[str, Any]) -> bool:
    checks = ((cfg.slo_ttft_ms, m["ttft_ms"]), (cfg.slo_tpot_ms, m["tpot_ms"]),
              (cfg.slo_e2el_ms, m["e2el_ms"]))
    return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


async def run_point(cfg: SweepConfig, c: int, words: int, run_id: str, t0_ns: int,
                    progress: bool, fit: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
        lag = _LoopLag()
        sampler.start()
        lag.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        gate = _StartGate(STARTS_PER_LOOP_TURN)

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
                res = await client.send_request(session, cfg.base_url, spec)
                res.t_intended_ns = t_free
                got[i] = res
                t_free = time.perf_counter_ns()
                bar.update(1)

        # Objects from before the point (earlier points' rows) are frozen out of the collector,
        # so a full collection during the point does not pause the loop for long.
        gc.collect()
        gc.freeze()
        try:
            await asyncio.gather(*(worker() for _ in range(c)))
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
    dispatch = [(r.t_send_ns - r.t_intended_ns) / 1e6 for r in measured
                if r.t_intended_ns is not None]
    request_path = [(r.t_send_ns - r.t_call_ns) / 1e6 for r in measured
                    if r.t_call_ns is not None and r.send_source == client.SEND_WRITE]
    loop_lag = summarize(lag.lags_ms)
    dispatch_s = summarize(dispatch)
    p99s = [v for v in (loop_lag["p99"], dispatch_s["p99"]) if v is not None]
    ok = [r for r in measured if r.ok]
    n_events = sum(len(r.chunk_t_ns) for r in ok)
    coalesced = sum(r.coalesced for r in ok)
    point["client"] = {
        "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else None,
        "loop_lag_ms": loop_lag,
        "dispatch_lag_ms": dispatch_s,
        "request_path_ms": summarize(request_path),
        "read_lag_ms": summarize([lag / 1e6 for r in ok for lag in r.read_lag_ns]),
        "coalesced_events": coalesced,
        "coalesced_frac": coalesced / n_events if n_events else None,
        "client_bound": bool(p99s and max(p99s) > LOOP_LAG_BOUND_MS),
        "client_bound_threshold_ms": LOOP_LAG_BOUND_MS,
    }
    rows = [_request_row(r, c, i, i < n_warm, t0_ns) for i, r in enumerate(done)]
    return point, rows


def summarize_point(cfg: SweepConfig, c: int, n_warm: int,
                    measured: list[client.RequestResult]) -> dict[str, Any]:
    """Aggregate client-side numbers of one point (definitions in docs/metrics.md)."""
    ok = [r for r in measured if r.ok]
    failures = collections.Counter(r.error_kind or "unknown" for r in measured if not r.ok)
    per = [client.request_metrics(r) for r in ok]
    if measured:
        first_send = min(r.t_send_ns for r in measured)
        last_end = max((r.t_end_ns or r.t_send_ns) for r in measured)
        duration = (last_end - first_send) / 1e9
    else:
        duration = 0.0
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    good = sum(1 for m in per if _meets_slo(cfg, m))

    def rate(x: float) -> float | None:
        return x / duration if duration > 0 else None

    def flat(key: str) -> list[float]:
        return [v for m in per for v in m[key]]

    def scalar(key: str) -> list[float]:
        return [m[key] for m in per if m[key] is not None]

    sources = collections.Counter(r.timing_source for r in ok)
    return {
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
        "ttft_ms": summarize(scalar("ttft_ms")),
        "tpot_ms": summarize(scalar("tpot_ms")),
        "itl_ms": summarize(flat("itl_ms")),
        "icl_ms": summarize(flat("icl_ms")),
        "e2el_ms": summarize(scalar("e2el_ms")),
        "decode_tok_s": summarize(scalar("decode_tok_s")),
        "e2e_tok_s": summarize(scalar("e2e_tok_s")),
        "tokens_per_chunk": summarize(flat("tokens_per_chunk")),
    }


def _request_row(r: client.RequestResult, c: int, i: int, warm: bool,
                 t0: int) -> dict[str, Any]:
    row: dict[str, Any] = {
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
    if r.ok:
        m = client.request_metrics(r)
        row.update({k: m[k] for k in ("ttft_ms", "tpot_ms", "e2el_ms", "decode_tok_s")})
    return row


# -- the sweep ---------------------------------------------------------------------------------

def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _open_existing(cfg: SweepConfig) -> dict[str, Any] | None:
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
    return doc


async def arun_sweep(cfg: SweepConfig, progress: bool = True) -> dict[str, Any]:
    """Async form of `run_sweep`."""
    version = await preflight(cfg)
    existing = _open_existing(cfg)
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
            doc: dict[str, Any] = {
                "schema_version": results.SCHEMA_VERSION, "label": folder.name,
                "model": cfg.model, "base_url": cfg.base_url, "server_version": version,
                "started_at": _now_iso(), "updated_at": None, "settings": cfg.settings(),
                "points": [],
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
            point, rows = await run_point(cfg, c, words, run_id, t0, progress, fit=calibrated)
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
        return doc
    finally:
        log.removeHandler(handler)
        handler.close()


def run_sweep(cfg: SweepConfig, progress: bool = True) -> dict[str, Any]:
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
    return dict(box["doc"])
