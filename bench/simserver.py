"""A simulated vLLM OpenAI-compatible endpoint: the embedded default and the tests' ground truth.

It speaks what `vllm serve` speaks on the paths the harness and the cluster tasks use
(`/health`, `/version`, `/v1/models`, `/tokenize`, `/v1/completions`, `/v1/chat/completions`,
`/metrics`) with vLLM's stream shape: a role-only first chat chunk, running usage per chunk when
`stream_options.continuous_usage_stats` is set, a final usage chunk with empty `choices`, then
`data: [DONE]`.

Timing model (all knobs in `SimConfig`): one asyncio engine loop runs steps back to back, like a
GPU worker. A step takes `decode_base_s + decode_per_seq_s * batch`, plus `prefill_base_s +
prefill_per_token_s * prompt_tokens` when it admits new requests (chunked prefill in one step).
At most `max_batch` requests run; the rest queue (`vllm:num_requests_waiting`). Each step gives an
admitted request its first token and every decoding request `1 + accepted` tokens, where with
`spec_tokens = k` (MTP) each of the k draft tokens is accepted in order with probability
`spec_accept` (seeded RNG), so chunks carry several tokens. Steps end at absolute deadlines so the
schedule does not drift.

Truth, per request keyed by the client's `X-Request-Id` header (clock: `time.perf_counter_ns()`,
CLOCK_MONOTONIC, so comparable across processes on one Linux host): `t_recv_ns`, when the
request's last byte arrived (the kernel's receive stamp of the socket read that completed it,
see `bench.netstamp`; `recv_source` says "kernel", or "read" where the kernel gave none), with
`t_read_ns` (when this server's loop read it) and `t_handler_ns` (when the handler began) beside
it, so the server's own queueing is visible; and per chunk `[t_sent, tokens, kind, t_write,
t_returned]`: `t_sent` is the kernel's stamp of the chunk's bytes leaving the socket
(`send_source: "kernel"`; where there is none, `t_returned` and `"write"`), `t_write` is taken
just before the write started and `t_returned` after it returned. What the server did, not what
it planned. `queued_writes` counts writes that the transport had to buffer (sent later, so they
fall back to `t_returned`; on loopback it stays 0). In process read `SimServer.truth`; out of
process `GET /sim/truth`.

Faults: `fail_every` (every Nth request answers HTTP `fail_status`), `cut_every` (the stream is
cut after `fault_after_tokens` tokens), `stall_every` (the stream stops for `stall_s`),
`malformed_every` (one event is not JSON).

Public helpers: `SimConfig`, `SimServer` (async context manager; `.base_url`), `sim_endpoint(cfg)`
(async context manager yielding the base URL), `BackgroundSim` (runs in a thread, for notebooks
and blocking code), and the CLI `python -m bench.simserver --host H --port P --model M
[--load-delay S] [--config JSON]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from bench import netstamp
from bench.aiotools import cancel_and_wait

WORDS = (
    "the of and to in is it that for on was with as at by be this from or an are not have "
    "but had they his her which one you all were we there can been has more when will would "
    "who so no if out time up into do about than them only other new some could these two may "
    "first then any like now my such over our even most made after also did many before must "
    "through back years where much your way well down should because each just those people "
    "how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three"
).split()


@dataclass
class SimConfig:
    """Knobs of the simulated endpoint; defaults look like a small model on a fast GPU."""

    model: str = "sim-model"
    max_model_len: int = 32768
    version: str = "0.32.0+sim"
    prefill_base_s: float = 0.004
    prefill_per_token_s: float = 0.000005
    decode_base_s: float = 0.010
    decode_per_seq_s: float = 0.00002
    max_batch: int = 256
    spec_tokens: int = 0
    spec_accept: float = 0.7
    seed: int = 0
    kv_capacity_tokens: int = 1_000_000
    load_delay_s: float = 0.0
    fail_every: int = 0
    fail_status: int = 500
    cut_every: int = 0
    stall_every: int = 0
    stall_s: float = 5.0
    malformed_every: int = 0
    fault_after_tokens: int = 4
    record_truth: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SimConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


def count_tokens(text: str) -> int:
    """The simulated tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Tokens of a ChatML-like template: 4 per message of framing, 3 for the generation prompt."""
    total = 3
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += 4 + count_tokens(str(content))
    return total


@dataclass
class _Req:
    """One request inside the engine."""

    rid: str
    prompt_tokens: int
    max_tokens: int
    queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    generated: int = 0
    prefilled: bool = False
    cancelled: bool = False


class _Metrics:
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


class SimServer:
    """The simulated endpoint: an aiohttp app plus its engine loop. Use `async with`."""

    def __init__(self, cfg: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.cfg = cfg or SimConfig()
        self.host = host
        self.port = port
        self.base_url = ""
        self.truth: dict[str, dict[str, Any]] = {}
        self._rng = random.Random(self.cfg.seed)
        self._waiting: list[_Req] = []
        self._running: list[_Req] = []
        self._wake = asyncio.Event()
        self._engine_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._arrivals = 0
        self._started = time.monotonic()
        self.metrics = _Metrics(self.cfg)

    # -- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sim/truth", self._truth)
        app.router.add_post("/sim/reset", self._reset)
        return app

    async def start(self) -> str:
        """Bind (port 0 picks a free one), start the engine loop, return the base URL."""
        self._started = time.monotonic()
        self._engine_task = asyncio.create_task(self._engine())
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = netstamp.listening_socket(self.host, self.port, backlog=1024)
        site = web.SockSite(self._runner, sock, backlog=1024)
        await site.start()
        self.port = int(sock.getsockname()[1])
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await cancel_and_wait(self._engine_task)
        self._engine_task = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- engine ------------------------------------------------------------------------------

    async def _engine(self) -> None:
        """One step at a time for the whole batch, so batch effects come from scheduling."""
        cfg = self.cfg
        deadline = time.perf_counter_ns()
        while True:
            if not self._running and not self._waiting:
                self._update_gauges()
                self._wake.clear()
                await self._wake.wait()
                deadline = time.perf_counter_ns()
            admitted: list[_Req] = []
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

    def _draft_accepted(self, req: _Req) -> int:
        k = self.cfg.spec_tokens
        if k <= 0:
            return 0
        m = self.metrics
        accepted = 0
        while accepted < k and self._rng.random() < self.cfg.spec_accept:
            accepted += 1
        m.drafts.labels(**m.lv).inc()
        m.draft_tokens.labels(**m.lv).inc(k)
        m.accepted.labels(**m.lv).inc(accepted)
        for i in range(accepted):
            m.per_pos.labels(**m.lv, position=str(i)).inc()
        return accepted

    def _emit(self, req: _Req, n: int) -> None:
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

    # -- HTTP handlers -----------------------------------------------------------------------

    def _loaded(self) -> bool:
        return time.monotonic() - self._started >= self.cfg.load_delay_s

    async def _health(self, request: web.Request) -> web.Response:
        if not self._loaded():
            return web.Response(status=503, text="model loading")
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": self.cfg.version})

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        permission = {"id": f"modelperm-{uuid.uuid4().hex[:16]}", "object": "model_permission",
                      "created": created, "allow_create_engine": False, "allow_sampling": True,
                      "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                      "allow_fine_tuning": False, "organization": "*", "group": None,
                      "is_blocking": False}
        card = {"id": self.cfg.model, "object": "model", "created": created, "owned_by": "vllm",
                "root": self.cfg.model, "parent": None, "max_model_len": self.cfg.max_model_len,
                "permission": [permission]}
        return _json({"object": "list", "data": [card]})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _truth(self, request: web.Request) -> web.Response:
        return web.json_response(self.truth)

    async def _reset(self, request: web.Request) -> web.Response:
        self.truth.clear()
        return web.json_response({"ok": True})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "messages" in body:
            count = chat_prompt_tokens(body["messages"])
        else:
            count = count_tokens(str(body.get("prompt", "")))
        return _json({"count": count, "max_model_len": self.cfg.max_model_len,
                      "tokens": list(range(count)), "token_strs": None})

    def _error(self, status: int, message: str, kind: str = "BadRequestError",
               param: str | None = None) -> web.Response:
        error = {"message": message, "type": kind, "param": param, "code": status}
        return _json({"error": error},
                                 status=status)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        t_handler = time.perf_counter_ns()
        if not self._loaded():
            return self._error(503, "model is loading", "ServiceUnavailableError")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "body is not JSON")
        # The body is read whole and HTTP/1.1 clients do not pipeline, so the latest read on
        # this connection brought the request's last byte.
        sock = netstamp.lookup(request.transport)
        t_read = sock.rx_read_ns if sock is not None else None
        t_kernel = sock.rx_kernel_ns if sock is not None else None
        if body.get("model") != self.cfg.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist. "
                               f"Valid aliases: {self.cfg.model}.", "NotFoundError", "model")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return self._error(400, "messages must be a list")
            prompt_tokens = chat_prompt_tokens(messages)
        else:
            prompt_tokens = count_tokens(str(body.get("prompt", "")))
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        limit = self.cfg.max_model_len
        if max_tokens > limit:
            return self._error(400, f"max_tokens={max_tokens} cannot be greater than "
                               f"max_model_len={limit}. Please request fewer output tokens. "
                               f"(parameter=max_tokens, value={max_tokens})", param="max_tokens")
        if prompt_tokens > limit:
            return self._error(400, f"This model's maximum context length is {limit} tokens. "
                               f"However, your prompt contains at least {prompt_tokens} input "
                               "tokens, which exceeds this limit even without any output tokens. "
                               "Please reduce the length of the input prompt. "
                               f"(parameter=input_tokens, value={prompt_tokens})",
                               param="input_tokens")
        # Like vLLM: max_tokens shrinks to what the context has room for.
        max_tokens = min(max_tokens, limit - prompt_tokens)
        if max_tokens < 1:
            return self._error(400, "max_tokens must be at least 1, got 0. "
                               "(parameter=max_tokens, value=0)", param="max_tokens")
        self._arrivals += 1
        nth = self._arrivals
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        record: dict[str, Any] = {
            "t_recv_ns": t_kernel or t_read or t_handler,
            "recv_source": "kernel" if t_kernel else "read" if t_read else "handler",
            "t_read_ns": t_read, "t_handler_ns": t_handler, "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens, "chunks": [], "queued_writes": 0, "status": 200,
            "fault": None}
        if self.cfg.record_truth:
            self.truth[rid] = record

        def every(n: int) -> bool:
            return n > 0 and nth % n == 0

        if every(self.cfg.fail_every):
            record["status"] = self.cfg.fail_status
            record["fault"] = "http_error"
            return self._error(self.cfg.fail_status, "injected failure", "InternalServerError")
        fault = ("cut" if every(self.cfg.cut_every) else
                 "stall" if every(self.cfg.stall_every) else
                 "malformed" if every(self.cfg.malformed_every) else None)
        record["fault"] = fault

        req = _Req(rid=rid, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        self._waiting.append(req)
        self._wake.set()
        try:
            if body.get("stream"):
                return await self._stream(request, body, req, record, chat, fault)
            return await self._whole(body, req, chat)
        finally:
            req.cancelled = True

    async def _whole(self, body: dict[str, Any], req: _Req, chat: bool) -> web.Response:
        while req.generated < req.max_tokens:
            await req.queue.get()
        text = "".join(self._text(req.rid, i) for i in range(req.max_tokens))
        usage = {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens
                 + req.max_tokens, "completion_tokens": req.max_tokens,
                 "prompt_tokens_details": None, "completion_tokens_details": None}
        want_ids = bool(body.get("return_token_ids"))
        ids = list(range(req.max_tokens)) if want_ids else None
        prompt_ids = list(range(req.prompt_tokens)) if want_ids else None
        # The fields and their order are vLLM 0.32's (tests/realvllm/real_vllm_shapes.json).
        choice: dict[str, Any]
        if chat:
            message = {"role": "assistant", "content": text, "refusal": None, "annotations": None,
                       "audio": None, "function_call": None, "reasoning": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length",
                      "stop_reason": None, "token_ids": ids, "routed_experts": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                      "stop_reason": None, "token_ids": ids, "prompt_logprobs": None,
                      "prompt_token_ids": prompt_ids, "routed_experts": None}
        out: dict[str, Any] = {
            "id": ("chatcmpl-" if chat else "cmpl-") + req.rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": self.cfg.model, "choices": [choice],
            "service_tier": None, "system_fingerprint": self._fingerprint(), "usage": usage}
        if chat:
            out.update(prompt_logprobs=None, prompt_token_ids=prompt_ids, prompt_text=None)
        out.update(kv_transfer_params=None, ec_transfer_params=None, metrics=None)
        return _json(out)

    def _fingerprint(self) -> str:
        """vLLM's `system_fingerprint`: the version and a per-server hash."""
        return f"vllm-{self.cfg.version}-{zlib.crc32(self.cfg.model.encode()):08x}"

    @staticmethod
    def _text(rid: str, i: int) -> str:
        return " " + WORDS[(zlib.crc32(rid.encode()) + i * 7) % len(WORDS)]

    async def _stream(self, request: web.Request, body: dict[str, Any], req: _Req,
                      record: dict[str, Any], chat: bool, fault: str | None) -> web.StreamResponse:
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        continuous = include_usage and bool(opts.get("continuous_usage_stats"))
        want_ids = bool(body.get("return_token_ids"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": ("chatcmpl-" if chat else "cmpl-") + req.rid,
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": self.cfg.model}
        chunks: list[list[Any]] = record["chunks"]

        def usage(done: int, details: bool = False) -> dict[str, int | None]:
            u: dict[str, int | None] = {"prompt_tokens": req.prompt_tokens,
                                        "total_tokens": req.prompt_tokens + done,
                                        "completion_tokens": done}
            if details:  # vLLM's running usage in chat chunks carries this key; the rest do not
                u["completion_tokens_details"] = None
            return u

        transport = request.transport
        sock = netstamp.lookup(transport)
        unstamped: list[tuple[list[Any], int]] = []  # (chunk, end offset) without a stamp yet

        async def send(payload: bytes, n: int, kind: str) -> None:
            t_write = time.perf_counter_ns()
            await resp.write(payload)
            t_returned = time.perf_counter_ns()
            queued = transport is not None and transport.get_write_buffer_size() > 0
            record["queued_writes"] += queued
            end = None if sock is None or queued else sock.tx_bytes
            stamp = None if sock is None or end is None else sock.sent_stamp(end)
            chunk = [t_returned if stamp is None else stamp, n, kind, t_write, t_returned]
            chunks.append(chunk)
            if stamp is None:
                unstamped.append((chunk, -1 if end is None else end))

        def settle_stamps() -> None:
            """Stamps of bytes TCP sent after the write returned have arrived by the end of the
            stream; a chunk still without one keeps `t_returned`, and the record says so."""
            missing = 0
            for chunk, end in unstamped:
                stamp = None if sock is None or end < 0 else sock.sent_stamp(end)
                if stamp is None:
                    missing += 1
                else:
                    chunk[0] = stamp
            unstamped.clear()
            record["send_source"] = "write" if missing else "kernel"
            if sock is not None:
                sock.forget_sent_before(sock.tx_bytes)

        def event(obj: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        try:
            if chat:
                # vLLM sends the role-only chunk as soon as the request is accepted, before prefill.
                first: dict[str, Any] = {**base, "choices": [{
                    "index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}]}
                if continuous:
                    first["usage"] = usage(0, details=True)
                first["prompt_token_ids"] = list(range(req.prompt_tokens)) if want_ids else None
                first["prompt_text"] = None
                await send(event(first), 0, "role")
            done = 0
            while done < req.max_tokens:
                n = await req.queue.get()
                text = "".join(self._text(req.rid, i) for i in range(done, done + n))
                ids = list(range(done, done + n))
                done += n
                finish = "length" if done >= req.max_tokens else None
                # The keys and their order are vLLM 0.32's (tests/realvllm/real_vllm_shapes.json).
                choice: dict[str, Any]
                if chat:
                    choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                              "finish_reason": finish}
                    if finish:
                        choice["stop_reason"] = None
                else:
                    first_ids = want_ids and done == n
                    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                              "stop_reason": None,
                              "prompt_token_ids": list(range(req.prompt_tokens)) if first_ids else None}
                choice["token_ids"] = ids if want_ids else None
                obj: dict[str, Any] = {**base, "choices": [choice]}
                if continuous:
                    obj["usage"] = usage(done, details=chat)
                if finish and not include_usage:
                    obj["system_fingerprint"] = self._fingerprint()
                if fault and done >= self.cfg.fault_after_tokens and done < req.max_tokens:
                    if fault == "cut":
                        await send(event(obj), n, "content")
                        record["status"] = "cut"
                        # Drop the connection without the chunked terminator, like a dying server.
                        if request.transport is not None:
                            request.transport.close()
                        return resp
                    if fault == "stall":
                        fault = None
                        await asyncio.sleep(self.cfg.stall_s)
                    elif fault == "malformed":
                        fault = None
                        await send(b"data: {\"choices\": [\n\n", 0, "malformed")
                await send(event(obj), n, "content")
            if include_usage:
                await send(event({**base, "choices": [], "usage": usage(done),
                                  "system_fingerprint": self._fingerprint()}), 0, "usage")
            await send(b"data: [DONE]\n\n", 0, "done")
            await resp.write_eof()
            return resp
        finally:
            settle_stamps()


def _json(obj: Any, status: int = 200) -> web.Response:
    """A JSON answer with vLLM's exact Content-Type (aiohttp's json_response adds a charset)."""
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status,
                        headers={"Content-Type": "application/json"})


async def _sleep_until_ns(deadline_ns: int) -> None:
    delay = (deadline_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


@asynccontextmanager
async def sim_endpoint(cfg: SimConfig | None = None, host: str = "127.0.0.1",
                       port: int = 0) -> AsyncIterator[str]:
    """Run the simulated endpoint in this event loop on a free port; yield its base URL."""
    async with SimServer(cfg, host, port) as sim:
        yield sim.base_url


class BackgroundSim:
    """The simulated endpoint on its own event loop in a daemon thread, for blocking callers.

    `with BackgroundSim(SimConfig(model="demo")) as sim: run(sim.base_url)`. Truth is
    `sim.truth()` (a copy taken on the server's loop).
    """

    def __init__(self, cfg: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.server = SimServer(cfg, host, port)
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="simserver")

    def start(self) -> str:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop)
        self.base_url = fut.result(timeout=30)
        return self.base_url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on (in its own thread)."""
        return self._loop

    def truth(self) -> dict[str, dict[str, Any]]:
        async def copy() -> dict[str, dict[str, Any]]:
            return json.loads(json.dumps(self.server.truth))
        return asyncio.run_coroutine_threadsafe(copy(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> BackgroundSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints the base URL on stdout once listening."""
    parser = argparse.ArgumentParser(prog="python -m bench.simserver", description=__doc__
                                     and __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--model", default=SimConfig.model, help="served model name")
    parser.add_argument("--load-delay", type=float, default=0.0,
                        help="seconds /health answers 503, like a model loading")
    parser.add_argument("--config", default="{}",
                        help="JSON object of SimConfig fields, e.g. '{\"spec_tokens\": 3}'")
    args = parser.parse_args(argv)
    try:
        extra = json.loads(args.config)
        if not isinstance(extra, dict):
            raise ValueError("--config must be a JSON object")
        cfg = SimConfig.from_dict({**extra, "model": args.model, "load_delay_s": args.load_delay})
    except ValueError as exc:
        parser.error(str(exc))

    async def serve() -> None:
        async with SimServer(cfg, args.host, args.port) as sim:
            print(sim.base_url, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


__all__ = ["BackgroundSim", "SimConfig", "SimServer", "sim_endpoint", "main",
           "count_tokens", "chat_prompt_tokens"]

if __name__ == "__main__":
    raise SystemExit(main())
