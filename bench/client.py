"""One streamed request to vLLM's OpenAI API, timed where the bytes arrive.

Why the timing is done this way: a coroutine that stamps each SSE line when it gets around to
reading it measures its own event-loop queue and its process's turns on a busy CPU as much as
the server. Here the connection's socket is a `bench.netstamp.StampedSocket`: the kernel stamps
each received segment, and the connection's protocol hands every read's body bytes, with that
read's stamp, straight to the response's event parser, so an event's arrival time is the stamp
of the read that brought its final byte (`timing_source: "kernel"`), and no task wakes up per
event (at high concurrency that wake-up was a large part of the client's CPU). Where the kernel
gives no stamp the time of the read is used (`"socket"`), and if aiohttp's internals change so
the hook cannot be installed, the coroutine reads and parses and stamps at parse time
(`"read"`). Events that share a read with a later event carry that later stamp; they are counted
per request (`coalesced`).

`t_send` is the start of the socket write that carries the request (the socket notes it), so
building the request, JSON encoding and waiting for a pooled connection are not server time;
`t_call` (just before the request is handed to aiohttp) is kept beside it, and the difference is
the client's own request path. The session uses `trust_env=False` (no netrc/proxy look-ups in a
thread pool per request), keep-alive, a connection pool sized to the concurrency (aiohttp's
default of 100 would silently cap a sweep), no compression, and finite timeouts.

Public: `make_session(concurrency, timeouts)` and `Timeouts` (from `bench.connection`),
`RequestSpec`, `RequestResult`, `send_request(session, base_url, spec)`, `request_metrics(result)`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.connection import StampingHandler, Timeouts, make_session
from bench.shapes import RequestMetrics

TIMING_KERNEL = "kernel"
TIMING_SOCKET = "socket"
TIMING_READ = "read"
SEND_WRITE = "write"
SEND_CALL = "call"
@dataclass
class RequestSpec:
    """What to send. `rid` goes out as `X-Request-Id` (vLLM and the simulator both honour it)."""

    rid: str
    model: str
    prompt: str
    max_tokens: int
    api: str = "chat"
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            body["prompt"] = self.prompt
        body.update(self.extra)
        return body


@dataclass
class RequestResult:
    """Raw timings (perf_counter_ns) and counts of one request; metrics derive from these.

    `t_send_ns` is the start of the request's socket write (`send_source: "write"`), or, where
    that is unknown, `t_call_ns` (`"call"`). `t_first_read_ns` and `t_first_parse_ns` are when
    the first content event's bytes were read by this process and when it was parsed;
    `read_lag_ns` is read minus arrival per content event: how late this process got to them.
    """

    rid: str
    t_send_ns: int
    t_call_ns: int | None = None
    send_source: str = SEND_CALL
    t_intended_ns: int | None = None
    ok: bool = False
    error_kind: str | None = None
    error: str | None = None
    t_first_ns: int | None = None
    t_first_read_ns: int | None = None
    t_first_parse_ns: int | None = None
    t_last_ns: int | None = None
    t_end_ns: int | None = None
    t_done_ns: int | None = None  # arrival of the read that brought `data: [DONE]`
    chunk_t_ns: list[int] = field(default_factory=list)
    read_lag_ns: list[int] = field(default_factory=list)
    coalesced: int = 0
    chunk_tokens: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    tokens_source: str | None = None
    timing_source: str = TIMING_READ
    t_last_read_ns: int | None = None  # newest read of any byte of the stream (stall watchdog)
    t_scheduled_ns: int | None = None  # open loop: when the schedule said to send (bench.openloop)
    # Reasoning models (docs/metrics.md, "Reasoning"): arrival of the first reasoning and first
    # answer event, and the tokens of each kind (from the same per-chunk n_k as everything else).
    chunk_kinds: list[str] = field(default_factory=list)  # per content chunk: "answer"/"reasoning"
    t_first_reasoning_ns: int | None = None
    t_first_answer_ns: int | None = None


class _Malformed(Exception):
    """A stream event that is not what an OpenAI-compatible server sends."""


REASONING = "reasoning"
ANSWER = "answer"


def _content_of(obj: dict[str, Any]) -> tuple[bool, int | None, bool]:
    """(carries generated content?, len(token_ids) if given, only reasoning content?) for one
    parsed chunk. vLLM's delta carries reasoning as `reasoning` (vllm/entrypoints/openai/engine/
    protocol.py, DeltaMessage); older versions and other servers as `reasoning_content`."""
    choices = obj.get("choices")
    if not isinstance(choices, list):
        raise _Malformed("chunk has no choices list")
    answer = reasoning = False
    ids: int | None = None
    for ch in choices:
        if not isinstance(ch, dict):
            raise _Malformed("choice is not an object")
        if ch.get("text"):
            answer = True
        delta = ch.get("delta")
        if isinstance(delta, dict):
            answer = answer or bool(delta.get("content"))
            reasoning = reasoning or bool(delta.get("reasoning_content") or delta.get("reasoning"))
        tid = ch.get("token_ids")
        if isinstance(tid, list):
            ids = (ids or 0) + len(tid)
    return answer or reasoning, ids, reasoning and not answer


async def send_request(session: aiohttp.ClientSession, base_url: str,
                       spec: RequestSpec, in_flight: dict[int, RequestResult] | None = None) -> RequestResult:
    """Send one streaming request; never raises for server or network faults (records them).
    `in_flight`: the result is in this dict (by id)  while the request runs (the stall watchdog reads it)."""
    body = json.dumps(spec.body()).encode()
    headers = {"Content-Type": "application/json", "X-Request-Id": spec.rid}
    url = base_url.rstrip("/") + spec.path()
    t_call = time.perf_counter_ns()
    res = RequestResult(rid=spec.rid, t_send_ns=t_call, t_call_ns=t_call)
    if in_flight is not None:
        in_flight[id(res)] = res
    try:
        return await _send(session, url, body, headers, res)
    finally:
        if in_flight is not None:
            in_flight.pop(id(res), None)


async def _send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                res: RequestResult) -> RequestResult:
    t_call = res.t_send_ns
    got_done = False
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            proto = resp.connection.protocol if resp.connection is not None else None
            sock = proto.stamped if isinstance(proto, StampingHandler) else None
            # The connection was ours alone since before t_call, and its previous response was
            # read to the end, so the first write after that read is this request's.
            if sock is not None and sock.tx_start_ns is not None and sock.tx_start_ns >= t_call:
                res.t_send_ns, res.send_source = sock.tx_start_ns, SEND_WRITE
            if resp.status != 200:
                text = (await resp.text())[:200]
                res.error_kind = f"http_{resp.status}"
                res.error = text.replace("\n", " ")
                return res
            got_done = await _read_stream(resp, res)
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        res.error_kind, res.error = "timeout", repr(exc)
    except aiohttp.ClientPayloadError as exc:
        res.error_kind, res.error = "stream_cut", repr(exc)
    except aiohttp.ServerDisconnectedError as exc:
        res.error_kind = "stream_cut" if res.chunk_t_ns or res.t_first_ns else "connection"
        res.error = repr(exc)
    except aiohttp.ClientConnectionError as exc:
        res.error_kind, res.error = "connection", repr(exc)
    except _Malformed as exc:
        res.error_kind, res.error = "malformed", str(exc)
    except aiohttp.ClientError as exc:
        res.error_kind, res.error = "client_error", repr(exc)
    res.t_end_ns = time.perf_counter_ns()
    if res.error_kind is None:
        if not got_done:
            res.error_kind, res.error = "stream_cut", "stream ended before data: [DONE]"
        elif res.output_tokens is None:
            res.error_kind, res.error = "malformed", "no usage in the stream"
        elif not res.chunk_t_ns:
            res.error_kind, res.error = "malformed", "no content in the stream"
        else:
            _settle_token_counts(res)
            res.ok = True
    return res


class EventParser:
    """Parses one response's server-sent events as their bytes arrive, stamping each event with
    the arrival of the read that brought its last byte. Fed from the protocol's `data_received`
    (no task wake-up per event, which at high concurrency is a large part of the client's CPU),
    or, where the protocol is not ours, from the reading coroutine."""

    def __init__(self, res: RequestResult, payload: aiohttp.StreamReader,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.res = res
        self.payload = payload
        self.finished: asyncio.Future[None] = loop.create_future()
        self.got_done = False
        self.kernel = True
        self._buf = b""
        self._prev_usage = 0
        self._pending = 0  # tokens reported by usage on chunks without content, owed to the next
        self._ids_seen = False
        self._pumping = False

    def pump(self, t_kernel: int | None, t_read: int) -> None:
        """Parse what the payload holds now; its last byte came with this read."""
        # Reading the payload can make aiohttp resume its parser, which calls back into the
        # protocol; the outer call picks up whatever that added.
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.finished.done() and self.payload.exception() is None:
                data = self.payload.read_nowait()
                if not data:
                    return
                self.feed(data, t_kernel, t_read)
        finally:
            self._pumping = False

    def feed(self, data: bytes, t_kernel: int | None, t_read: int) -> None:
        if self.finished.done():
            return
        self.res.t_last_read_ns = t_read
        if t_kernel is None:
            self.kernel = False
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        try:
            self._parse(lines, t_read if t_kernel is None else t_kernel, t_read)
        except _Malformed as exc:
            self.finished.set_exception(exc)

    def _parse(self, lines: list[bytes], t: int, t_read: int) -> None:
        res = self.res
        contents = 0
        for raw in lines:
            if not raw.startswith(b"data:"):
                continue
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                self.got_done = True
                res.t_done_ns = t
                self.finished.set_result(None)
                return
            try:
                obj = json.loads(payload.decode())
            except ValueError as exc:
                raise _Malformed(f"event is not JSON: {payload[:60]!r}") from exc
            if not isinstance(obj, dict):
                raise _Malformed("event is not a JSON object")
            if "error" in obj and "choices" not in obj:
                raise _Malformed(f"error event: {str(obj['error'])[:120]}")
            has, ids, only_reasoning = _content_of(obj)
            usage = obj.get("usage")
            n_usage: int | None = None
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                total = int(usage["completion_tokens"])
                n_usage = total - self._prev_usage
                self._prev_usage = total
                res.output_tokens = total
                if usage.get("prompt_tokens") is not None:
                    res.prompt_tokens = int(usage["prompt_tokens"])
            if has:
                contents += 1
                if contents > 1:
                    res.coalesced += 1  # the previous content event shares this read's stamp
                if res.t_first_ns is None:
                    res.t_first_ns = t
                    res.t_first_read_ns = t_read
                    res.t_first_parse_ns = time.perf_counter_ns()
                res.read_lag_ns.append(t_read - t)
                if only_reasoning:
                    res.chunk_kinds.append(REASONING)
                    if res.t_first_reasoning_ns is None:
                        res.t_first_reasoning_ns = t
                else:
                    res.chunk_kinds.append(ANSWER)
                    if res.t_first_answer_ns is None:
                        res.t_first_answer_ns = t
                res.t_last_ns = t
                res.chunk_t_ns.append(t)
                if n_usage is not None:
                    res.chunk_tokens.append(n_usage + self._pending)
                    self._pending = 0
                    res.tokens_source = res.tokens_source or "usage"
                elif ids is not None:
                    self._ids_seen = True
                    res.chunk_tokens.append(ids)
                else:
                    res.chunk_tokens.append(-1)
            elif n_usage:
                self._pending += n_usage
            if self._ids_seen and res.tokens_source is None:
                res.tokens_source = "token_ids"


async def _read_stream(resp: aiohttp.ClientResponse, res: RequestResult) -> bool:
    """Parse the event stream; returns True when `data: [DONE]` was seen."""
    proto = resp.connection.protocol if resp.connection is not None else None
    parser = EventParser(res, resp.content, asyncio.get_running_loop())
    if not isinstance(proto, StampingHandler) or proto.marks_payload is not resp.content:
        res.timing_source = TIMING_READ
        while not parser.finished.done():
            data = await resp.content.readany()
            if not data:
                return False
            t_read = time.perf_counter_ns()
            parser.feed(data, None, t_read)
        parser.finished.result()
        return parser.got_done
    # What arrived before the parser was attached, split by the reads that brought it; from
    # here on the protocol feeds the parser as bytes arrive (nothing runs in between).
    marks = proto.marks
    backlog = resp.content.read_nowait()
    start = marks.nbytes[-1] - len(backlog) if marks.nbytes else 0
    for arrival, t_read, end in zip(marks.arrival, marks.read, marks.nbytes, strict=True):
        if end > start:
            parser.feed(backlog[:end - start], arrival if marks.kernel else None, t_read)
            backlog, start = backlog[end - start:], end
    parser.kernel = parser.kernel and marks.kernel
    proto.events = parser
    eof = asyncio.ensure_future(resp.content.wait_eof())
    try:
        await asyncio.wait((parser.finished, eof), return_when=asyncio.FIRST_COMPLETED)
    finally:
        proto.events = None
        eof.cancel()
        res.timing_source = TIMING_KERNEL if parser.kernel else TIMING_SOCKET
    if parser.finished.done():
        parser.finished.result()
        return parser.got_done
    await eof  # raises what ended the stream early (timeout, cut), else the stream just ended
    return False


def _settle_token_counts(res: RequestResult) -> None:
    """Make per-chunk counts sum to the server's N; spread evenly when the server gave none."""
    n = res.output_tokens or 0
    counts = res.chunk_tokens
    exact = all(c >= 0 for c in counts) and res.tokens_source in ("usage", "token_ids")
    if exact and sum(counts) != n and sum(counts) < n and res.tokens_source == "usage":
        # Usage after the last content chunk (e.g. only on the final usage chunk) stays with it.
        counts[-1] += n - sum(counts)
    if not exact or sum(counts) != n:
        m = len(counts)
        base, extra = divmod(n, m)
        res.chunk_tokens = [base + (1 if i < extra else 0) for i in range(m)]
        res.tokens_source = "estimated"


def request_metrics(res: RequestResult) -> RequestMetrics:
    """Per-request metrics in ms (see docs/metrics.md); only for successful requests."""
    assert res.ok and res.t_first_ns is not None and res.t_last_ns is not None  # noqa: S101
    n = res.output_tokens or 0
    ttft = (res.t_first_ns - res.t_send_ns) / 1e6
    e2el = (res.t_last_ns - res.t_send_ns) / 1e6
    decode_ms = (res.t_last_ns - res.t_first_ns) / 1e6
    itl: list[float] = []
    icl: list[float] = []
    for k in range(1, len(res.chunk_t_ns)):
        gap = (res.chunk_t_ns[k] - res.chunk_t_ns[k - 1]) / 1e6
        icl.append(gap)
        nk = res.chunk_tokens[k]
        if nk > 0:
            itl.extend([gap / nk] * nk)
    out: RequestMetrics = {
        "ttft_ms": ttft,
        "e2el_ms": e2el,
        "tpot_ms": decode_ms / (n - 1) if n > 1 else None,
        "decode_tok_s": (n - 1) / (decode_ms / 1e3) if n > 1 and decode_ms > 0 else None,
        "e2e_tok_s": n / (e2el / 1e3) if e2el > 0 else None,
        "itl_ms": itl,
        "icl_ms": icl,
        "tokens_per_chunk": list(res.chunk_tokens),
    }
    return out


__all__ = ["SEND_CALL", "SEND_WRITE", "TIMING_KERNEL", "TIMING_READ", "TIMING_SOCKET", "RequestResult",
           "RequestSpec", "Timeouts", "make_session", "request_metrics", "send_request"]
