"""The simulated endpoint's HTTP side: vLLM's routes and answer shapes, faults, `/sim/truth`.

Answers carry vLLM 0.32's fields in vLLM's order (tests/realvllm/real_vllm_shapes.json; the
comparison is docs/real-vllm.md). Faults (`fail_every`, `cut_every`, `stall_every`,
`malformed_every`) are injected per Nth request; each request's truth record (keyed by the
client's `X-Request-Id`) is in `SimServer.truth`, or `GET /sim/truth` out of process.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections import OrderedDict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bench import netstamp
from bench.prompts import WORDS
from bench.sim.config import SimConfig, chat_prompt_tokens, count_tokens
from bench.sim.engine import Engine, Request, StreamTruth


class SimServer:
    """The simulated endpoint: an aiohttp app plus its engine loop. Use `async with`."""

    def __init__(self, cfg: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.cfg = cfg or SimConfig()
        self.host = host
        self.port = port
        self.base_url = ""
        self.truth: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.engine = Engine(self.cfg)
        self.metrics = self.engine.metrics
        self._runner: web.AppRunner | None = None
        self._arrivals = 0
        self._tokens_out = 0   # for wedge_after_tokens
        self._stopping = False
        self._started = time.monotonic()

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
        self.engine.start()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = netstamp.listening_socket(self.host, self.port, backlog=1024)
        site = web.SockSite(self._runner, sock, backlog=1024)
        await site.start()
        self.port = int(sock.getsockname()[1])
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.engine.stop()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _wedged(self, n: int) -> bool:
        """Count tokens out; True once `wedge_after_tokens` is passed (the engine hangs)."""
        limit = self.cfg.wedge_after_tokens
        if limit <= 0:
            return False
        if self._tokens_out + n > limit or self._tokens_out > limit:
            self._tokens_out = limit + 1
            return True
        self._tokens_out += n
        return False

    async def _hold(self, request: web.Request) -> None:
        """Keep the connection open and send nothing until the client goes or the server stops."""
        while not self._stopping and request.transport is not None \
                and not request.transport.is_closing():
            await asyncio.sleep(0.1)

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
        return _json({"error": error}, status=status)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        t_handler = time.perf_counter_ns()
        if not self._loaded():
            return self._error(503, "model is loading", "ServiceUnavailableError")
        if time.monotonic() - self._started < self.cfg.generate_delay_s:
            return self._error(503, "engine is not ready", "ServiceUnavailableError")
        if self._wedged(0):
            await self._hold(request)
            return web.Response(status=503)
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
            "fault": None,
            "reasoning_tokens": min(self.cfg.reasoning_tokens, max_tokens) if chat else 0}
        if self.cfg.record_truth:
            self.truth[rid] = record
            while len(self.truth) > max(1, self.cfg.truth_keep):
                self.truth.popitem(last=False)  # the oldest

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

        req = Request(rid=rid, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        record["drafts"] = req.drafts  # filled by the engine as it drafts
        self.engine.submit(req)
        try:
            if body.get("stream"):
                return await self._stream(request, body, req, record, chat, fault)
            return await self._whole(body, req, chat)
        finally:
            req.cancelled = True

    async def _whole(self, body: dict[str, Any], req: Request, chat: bool) -> web.Response:
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

    async def _stream(self, request: web.Request, body: dict[str, Any], req: Request,
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

        def usage(done: int, details: bool = False) -> dict[str, int | None]:
            u: dict[str, int | None] = {"prompt_tokens": req.prompt_tokens,
                                        "total_tokens": req.prompt_tokens + done,
                                        "completion_tokens": done}
            if details:  # vLLM's running usage in chat chunks carries this key; the rest do not
                u["completion_tokens_details"] = None
            return u

        truth = StreamTruth(request, resp, record)
        send = truth.send

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
                if self._wedged(n):
                    await self._hold(request)
                    return resp
                think = min(n, max(0, self.cfg.reasoning_tokens - done)) if chat else 0
                if 0 < think < n:
                    # The chunk crosses from reasoning to the answer: its reasoning part goes
                    # first, as an event of its own (its running usage with it).
                    part = "".join(self._text(req.rid, i) for i in range(done, done + think))
                    done += think
                    n -= think
                    head: dict[str, Any] = {
                        **base, "choices": [{"index": 0, "delta": {"reasoning": part},
                                             "logprobs": None, "finish_reason": None,
                                             "token_ids": (list(range(done - think, done))
                                                           if want_ids else None)}]}
                    if continuous:
                        head["usage"] = usage(done, details=True)
                    await send(event(head), think, "reasoning")
                    think = 0
                text = "".join(self._text(req.rid, i) for i in range(done, done + n))
                ids = list(range(done, done + n))
                done += n
                finish = "length" if done >= req.max_tokens else None
                # The keys and their order are vLLM 0.32's (tests/realvllm/real_vllm_shapes.json).
                choice: dict[str, Any]
                if chat:
                    delta_key = "reasoning" if think else "content"
                    choice = {"index": 0, "delta": {delta_key: text}, "logprobs": None,
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
                await send(event(obj), n, "reasoning" if think else "content")
            if include_usage:
                await send(event({**base, "choices": [], "usage": usage(done),
                                  "system_fingerprint": self._fingerprint()}), 0, "usage")
            await send(b"data: [DONE]\n\n", 0, "done")
            await resp.write_eof()
            return resp
        except ConnectionResetError:
            # The client went away (Ctrl-C, its read timeout): not a server error, so no traceback
            # from aiohttp's request logger; the truth says what happened.
            record["status"] = "client_gone"
            return resp
        finally:
            truth.settle()


def _json(obj: Any, status: int = 200) -> web.Response:
    """A JSON answer with vLLM's exact Content-Type (aiohttp's json_response adds a charset)."""
    return web.Response(body=json.dumps(obj, separators=(",", ":")).encode(), status=status,
                        headers={"Content-Type": "application/json"})
