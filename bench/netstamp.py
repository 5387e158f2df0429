"""Kernel receive timestamps on TCP sockets, on the `time.perf_counter_ns()` clock.

Why: a process that stamps bytes when it reads them measures its own scheduling and event-loop
queueing as well as the network (at high concurrency, on a busy machine, that is most of the
error). With `SO_TIMESTAMPNS` Linux stamps each received segment when it enters the network
stack and hands the stamp of the last segment of a read to `recvmsg`. The stamp is wall-clock
time (CLOCK_REALTIME); it is moved to the monotonic clock with the offset between the two
clocks read right after the read, so clock adjustments during a run cannot leak in.

`StampedSocket` is a drop-in `socket.socket` (asyncio's selector transports call its `recv`
and `send`) that keeps, for its latest read, `rx_kernel_ns` (None where the kernel gave no
stamp) and `rx_read_ns` (when the read ran), and `tx_start_ns`: the start of the first write
after a read, which on an HTTP/1.1 connection (no pipelining) is the start of a request. Its
`accept` returns `StampedSocket`s, so a listening `StampedSocket` stamps every connection.
`lookup(transport)` finds the `StampedSocket` behind an asyncio transport.

Limits: bytes that queued up before a read share one stamp, the newest: the read reports the
stamp of the last segment it consumed, and TCP merges small segments that wait in the receive
queue into one, keeping the newer stamp (so reading in smaller pieces does not help). A process
that reads promptly sees one message per read; callers count the messages that shared a read.
TLS transports read with `recv_into` and get no stamps.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import weakref
from collections.abc import Iterable
from typing import Any

# Linux's value on every architecture that uses the generic socket constants (x86, arm64).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@ll")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)

_REGISTRY: weakref.WeakValueDictionary[int, StampedSocket] = weakref.WeakValueDictionary()


def _kernel_ns(ancdata: Iterable[tuple[int, int, bytes]], t_read: int) -> int | None:
    """The kernel's receive stamp in `recvmsg` ancillary data, on the perf_counter clock."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            offset = time.time_ns() - time.perf_counter_ns()
            # Arrival cannot follow the read; any excess is jitter in reading the offset.
            return min(sec * 1_000_000_000 + nsec - offset, t_read)
    return None


class StampedSocket(socket.socket):
    """A socket that remembers when the kernel received its latest read and when a request began."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        super().__init__(family, type, proto, fileno)
        self.rx_kernel_ns: int | None = None
        self.rx_read_ns: int | None = None
        self.tx_start_ns: int | None = None
        self._sent_since_rx = False
        try:
            self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_stamps = True
        except OSError:
            self.kernel_stamps = False
        _REGISTRY[self.fileno()] = self

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        conn = StampedSocket(self.family, self.type, self.proto, fileno=fd)
        conn.setblocking(self.getblocking())
        return conn, addr

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        anc: list[tuple[int, int, bytes]] = []
        if self.kernel_stamps:
            data, anc, _, _ = self.recvmsg(bufsize, _ANC_SIZE, flags)
        else:
            data = super().recv(bufsize, flags)
        if data:
            t_read = time.perf_counter_ns()
            self.rx_read_ns = t_read
            self.rx_kernel_ns = _kernel_ns(anc, t_read)
            self._sent_since_rx = False
        return data

    def _mark_tx(self) -> None:
        if not self._sent_since_rx:
            self.tx_start_ns = time.perf_counter_ns()
            self._sent_since_rx = True

    def send(self, data: Any, flags: int = 0) -> int:
        self._mark_tx()
        return super().send(data, flags)

    def sendmsg(self, *args: Any) -> int:
        self._mark_tx()
        return super().sendmsg(*args)


def stamped_socket(addr_info: tuple[Any, ...]) -> StampedSocket:
    """A `socket_factory` for aiohttp's TCPConnector: `(family, type, proto, ...)` in."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    return StampedSocket(family, type_, proto)


def listening_socket(host: str, port: int, backlog: int) -> StampedSocket:
    """A bound, listening `StampedSocket` for `host:port` (port 0 picks a free one)."""
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = StampedSocket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def lookup(transport: asyncio.BaseTransport | None) -> StampedSocket | None:
    """The `StampedSocket` under an asyncio transport, if it is one (None for TLS or others)."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    wrapped = transport.get_extra_info("socket")
    if wrapped is None:
        return None
    fd = wrapped.fileno()
    sock = _REGISTRY.get(fd)
    return sock if sock is not None and sock.fileno() == fd else None
