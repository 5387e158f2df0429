"""The simulated GPU worker: one step loop for the whole batch, and the truth of what was sent.

Batch effects come from scheduling, as on a GPU: a step costs `decode_base_s + decode_per_seq_s *
batch`, plus the prefill of the requests it admits; steps end at absolute deadlines so the
schedule does not drift. `StreamTruth` records when each chunk's bytes really left (the kernel's
transmit stamp, `bench.netstamp`), which the tests and benchmarks compare the client against.
The timing model is described in `bench.sim` and docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from bench import netstamp
from bench.aiotools import cancel_and_wait
from bench.sim.config import SimConfig


@dataclass
class Request:
    """One request inside the engine; `queue` gets the token count of each step that served it,
    `drafts` the number of draft tokens accepted at each step that drafted for it (the truth the
    speculative-decoding counters are checked against)."""

    rid: str
    prompt_tokens: int
    max_tokens: int
    queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    generated: int = 0
    prefilled: bool = False
    cancelled: bool = False
    drafts: list[int] = field(default_factory=list)


class EngineMetrics:
    """vLLM's metric names, exposed with prometheus_client from a private registry."""

    def __init__(self, cfg: SimConfig) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.lv = {"model_name": cfg.model, "engine": "0"}
        reg = self.registry
        self.running = Gauge("vllm:num_requests_running", "Requests running", labels, registry=reg)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting", labels, registry=reg)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV cache usage (1 = 100%)", labels,
                        registry=reg)
        self.prompt = Counter("vllm:prompt_tokens", "Prefill tokens", labels, registry=reg)
        self.gen = Counter("vllm:generation_tokens", "Generated tokens", labels, registry=reg)
        for metric in (self.running, self.waiting, self.kv, self.prompt, self.gen):
            metric.labels(**self.lv)
        self.spec = cfg.spec_tokens > 0
        if self.spec:
            self.drafts = Counter("vllm:spec_decode_num_drafts", "Drafts", labels, registry=reg)
            self.draft_tokens = Counter("vllm:spec_decode_num_draft_tokens", "Draft tokens",
                                        labels, registry=reg)
            self.accepted = Counter("vllm:spec_decode_num_accepted_tokens", "Accepted tokens",
                                    labels, registry=reg)
            self.per_pos = Counter("vllm:spec_decode_num_accepted_tokens_per_pos",
                                   "Accepted tokens per draft position", [*labels, "position"],
                                   registry=reg)
            for metric in (self.drafts, self.draft_tokens, self.accepted):
                metric.labels(**self.lv)
            for i in range(cfg.spec_tokens):
                self.per_pos.labels(**self.lv, position=str(i))


class Engine:
    """Runs steps back to back while requests wait or run; `submit` hands it a request."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.metrics = EngineMetrics(cfg)
        self._rng = random.Random(cfg.seed)
        self._waiting: list[Request] = []
        self._running: list[Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def submit(self, req: Request) -> None:
        self._waiting.append(req)
        self._wake.set()

    async def _run(self) -> None:
        """One step at a time for the whole batch, so batch effects come from scheduling."""
        cfg = self.cfg
        deadline = time.perf_counter_ns()
        while True:
            if not self._running and not self._waiting:
                self._update_gauges()
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter_ns()
            admitted: list[Request] = []
            while self._waiting and len(self._running) < cfg.max_batch:
                req = self._waiting.pop(0)
                if not req.cancelled:
                    self._running.append(req)
                    admitted.append(req)
            decoding = [r for r in self._running if r.prefilled]
            step = cfg.decode_base_s + cfg.decode_per_seq_s * len(self._running)
            if admitted:
                step += cfg.prefill_base_s + cfg.prefill_per_token_s * sum(
                    r.prompt_tokens for r in admitted)
            self._update_gauges()
            # Absolute deadlines: a late wake-up shortens the next sleep instead of adding up.
            deadline = max(deadline + int(step * 1e9), time.perf_counter_ns())
            await _sleep_until_ns(deadline)
            for req in admitted:
                req.prefilled = True
                self.metrics.prompt.labels(**self.metrics.lv).inc(req.prompt_tokens)
                self._emit(req, 1)
            for req in decoding:
                self._emit(req, 1 + self._draft_accepted(req))
            self._running = [r for r in self._running if not r.cancelled
                             and r.generated < r.max_tokens]

    def _draft_accepted(self, req: Request) -> int:
        k = self.cfg.spec_tokens
        if k <= 0:
            return 0
        m = self.metrics
        accepted = 0
        while accepted < k and self._rng.random() < self.cfg.spec_accept:
            accepted += 1
        req.drafts.append(accepted)
        m.drafts.labels(**m.lv).inc()
        m.draft_tokens.labels(**m.lv).inc(k)
        m.accepted.labels(**m.lv).inc(accepted)
        for i in range(accepted):
            m.per_pos.labels(**m.lv, position=str(i)).inc()
        return accepted

    def _emit(self, req: Request, n: int) -> None:
        if req.cancelled:
            return
        n = min(n, req.max_tokens - req.generated)
        req.generated += n
        self.metrics.gen.labels(**self.metrics.lv).inc(n)
        req.queue.put_nowait(n)

    def _update_gauges(self) -> None:
        m = self.metrics
        m.running.labels(**m.lv).set(len(self._running))
        m.waiting.labels(**m.lv).set(len(self._waiting))
        used = sum(r.prompt_tokens + r.generated for r in self._running)
        m.kv.labels(**m.lv).set(min(1.0, used / self.cfg.kv_capacity_tokens))


async def _sleep_until_ns(deadline_ns: int) -> None:
    delay = (deadline_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


class StreamTruth:
    """Writes one stream's chunks and records each as `[t_sent, tokens, kind, t_write, t_returned]`
    in `record["chunks"]`: what the server did, not what it planned."""

    def __init__(self, request: web.Request, resp: web.StreamResponse,
                 record: dict[str, Any]) -> None:
        self.resp = resp
        self.record = record
        self.transport = request.transport
        self.sock = netstamp.lookup(self.transport)
        self._unstamped: list[tuple[list[Any], int]] = []  # (chunk, end offset) without a stamp yet

    async def send(self, payload: bytes, n: int, kind: str) -> None:
        t_write = time.perf_counter_ns()
        await self.resp.write(payload)
        t_returned = time.perf_counter_ns()
        sock, record = self.sock, self.record
        queued = self.transport is not None and self.transport.get_write_buffer_size() > 0
        record["queued_writes"] += queued
        end = None if sock is None or queued else sock.tx_bytes
        stamp = None if sock is None or end is None else sock.sent_stamp(end)
        chunk = [t_returned if stamp is None else stamp, n, kind, t_write, t_returned]
        record["chunks"].append(chunk)
        if stamp is None:
            self._unstamped.append((chunk, -1 if end is None else end))

    def settle(self) -> None:
        """Stamps of bytes TCP sent after the write returned have arrived by the end of the
        stream; a chunk still without one keeps `t_returned`, and the record says so."""
        sock = self.sock
        missing = 0
        for chunk, end in self._unstamped:
            stamp = None if sock is None or end < 0 else sock.sent_stamp(end)
            if stamp is None:
                missing += 1
            else:
                chunk[0] = stamp
        self._unstamped.clear()
        self.record["send_source"] = "write" if missing else "kernel"
        if sock is not None:
            sock.forget_sent_before(sock.tx_bytes)
