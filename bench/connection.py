"""The stamped connection: an aiohttp session whose sockets carry the kernel's receive stamps.

Each connection's socket is a `bench.netstamp.StampedSocket` under `StampingHandler`, aiohttp's
response protocol that hands every read's body bytes, with that read's stamp, to the response's
event parser (`bench.client`), so no task wakes up per event. Why the timing is done this way:
`bench.client` and docs/metrics.md ("Clock and timestamps").
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from bench import netstamp

if TYPE_CHECKING:
    from bench.client import EventParser

_HAS_SOCKET_FACTORY = "socket_factory" in inspect.signature(aiohttp.TCPConnector).parameters


@dataclass
class Marks:
    """Per read of one response body: arrival ns, when the read ran, body bytes so far."""

    arrival: list[int] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    kernel: bool = True


class StampingHandler(ResponseHandler):
    """aiohttp's response protocol that hands each read's body bytes, with the read's stamps, to
    the response's `EventParser` once one is attached, and keeps `Marks` until then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks_payload: object | None = None
        self.marks = Marks()
        self.stamped: netstamp.StampedSocket | None = None
        self.events: EventParser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.stamped = netstamp.lookup(transport)

    def resume_reading(self, resume_parser: bool = True) -> None:
        # aiohttp calls this whenever a body read leaves its buffer below the low-water mark,
        # which for an event stream read as it arrives is every read; re-running the parser on
        # no data costs more than parsing the event. Nothing to resume unless something paused.
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)

    def data_received(self, data: bytes) -> None:
        if not data:  # aiohttp resuming its parser after a pause; nothing arrived
            super().data_received(data)
            return
        t_read = time.perf_counter_ns()
        sock = self.stamped
        t_kernel = sock.rx_kernel_ns if sock is not None else None
        if sock is not None and sock.rx_read_ns is not None:
            t_read = sock.rx_read_ns
        super().data_received(data)
        if self.events is not None:
            self.events.pump(t_kernel, t_read)
            return
        payload = self._payload
        if payload is None:
            return
        if payload is not self.marks_payload:
            self.marks_payload = payload
            self.marks = Marks(kernel=sock is not None)
        marks = self.marks
        if t_kernel is None:
            marks.kernel = False
        marks.arrival.append(t_read if t_kernel is None else t_kernel)
        marks.read.append(t_read)
        marks.nbytes.append(payload.total_bytes)


class StampingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections are `StampedSocket`s under a `StampingHandler`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _HAS_SOCKET_FACTORY:
            kwargs["socket_factory"] = netstamp.client_socket
        super().__init__(*args, **kwargs)
        if hasattr(self, "_factory"):
            self._factory = functools.partial(  # type: ignore[assignment]
                StampingHandler, loop=self._loop)


@dataclass(frozen=True)
class Timeouts:
    """Generous but finite: a stuck server fails a request instead of hanging a sweep."""

    connect_s: float = 10.0
    read_s: float = 300.0
    total_s: float = 3600.0


def make_session(concurrency: int, timeouts: Timeouts | None = None) -> aiohttp.ClientSession:
    """One shared session for a concurrency point: pool = concurrency, keep-alive, no env."""
    t = timeouts or Timeouts()
    connector = StampingConnector(limit=max(1, concurrency) + 4, limit_per_host=0,
                                  keepalive_timeout=120, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
        timeout=aiohttp.ClientTimeout(total=t.total_s, connect=t.connect_s,
                                      sock_connect=t.connect_s, sock_read=t.read_s),
    )
