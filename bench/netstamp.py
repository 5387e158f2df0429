"""Kernel timestamps on TCP sockets, on the `time.perf_counter_ns()` clock.

Why: a process that stamps bytes when it reads them measures its own scheduling and event-loop
queueing as well as the network (at high concurrency, on a busy machine, that is most of the
error); one that stamps a write before or after the call measures its own turns on the CPU too.
Linux can stamp both where the bytes really move:

- receive (`SO_TIMESTAMPNS`): each segment is stamped when it enters the network stack, and a
  read hands over the stamp of the last segment it consumed;
- send (`SO_TIMESTAMPING` with `SOF_TIMESTAMPING_TX_SOFTWARE | OPT_ID`): when a write's last byte
  leaves for the device, the kernel queues a stamp keyed by that byte's offset on the socket's
  error queue.

Stamps are wall-clock time (CLOCK_REALTIME); each is moved to the monotonic clock with the
offset between the two clocks, re-read every 0.1 s, so a clock adjustment during a run leaks in
for at most that long.

`StampedSocket` is a drop-in `socket.socket` (asyncio's selector transports call its `recv`
and `send`) that keeps, for its latest read, `rx_kernel_ns` (None where the kernel gave no
stamp) and `rx_read_ns` (when the read ran); `tx_start_ns`, the start of the first write after a
read, which on an HTTP/1.1 connection (no pipelining) is the start of a request; and, with
`tx_stamps=True` (connected sockets only), `tx_bytes` (bytes the kernel accepted so far) and
`sent_stamp(end)`: the kernel's send stamp of the write whose last byte is byte `end - 1`
(kept until `forget_sent_before`). Its
`accept` returns `StampedSocket`s (with send stamps if `accept_tx_stamps`), so a listening
`StampedSocket` stamps every connection.
`lookup(transport)` finds the `StampedSocket` behind an asyncio transport.

Limits: bytes that queued up before a read share one stamp, the newest: the read reports the
stamp of the last segment it consumed, and TCP merges small segments that wait in the receive
queue into one, keeping the newer stamp (so reading in smaller pieces does not help). A process
that reads promptly sees one message per read; callers count the messages that shared a read.
TLS transports read with `recv_into` and get no stamps. Linux only; elsewhere every stamp is
None and callers fall back to their own clocks.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
import weakref
from collections.abc import Iterable
from typing import Any

# Linux's values on every architecture that uses the generic socket constants (x86, arm64).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
_TX_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)  # TX_SOFTWARE, SOFTWARE, OPT_ID, OPT_TSONLY
_SO_EE_ORIGIN_TIMESTAMPING = 4
_SCM_TSTAMP_SND = 0
_RECVERR = {(getattr(socket, "SOL_IP", 0), getattr(socket, "IP_RECVERR", 11)),
            (getattr(socket, "SOL_IPV6", 41), getattr(socket, "IPV6_RECVERR", 25))}
_TIMESPEC = struct.Struct("@ll")
_EXTENDED_ERR = struct.Struct("@IBBBBII")  # errno, origin, type, code, pad, info, data
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(3 * _TIMESPEC.size)
_ERR_ANC_SIZE = socket.CMSG_SPACE(3 * _TIMESPEC.size) + socket.CMSG_SPACE(64)

_REGISTRY: weakref.WeakValueDictionary[int, StampedSocket] = weakref.WeakValueDictionary()


def _keep_receive_stamps_on() -> socket.socket | None:
    """Linux stamps received packets only while some socket asks for it, and switches that on
    and off from a deferred work item; sockets that come and go would see unstamped packets
    while it catches up. One socket held for the life of the process keeps it on."""
    try:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return None
    return keeper


_KEEPER = _keep_receive_stamps_on()


_OFFSET_REFRESH_NS = 100_000_000
_offset = {"ns": 0, "at": -_OFFSET_REFRESH_NS}


def _realtime_offset(t_now: int) -> int:
    """CLOCK_REALTIME minus the perf_counter clock, re-read every 0.1 s: the narrowest of five
    readings bracketed by two monotonic reads (one read can be interrupted between its clocks,
    which moved a stamp by microseconds)."""
    if t_now - _offset["at"] >= _OFFSET_REFRESH_NS:
        readings = []
        for _ in range(5):
            before = time.perf_counter_ns()
            real = time.time_ns()
            after = time.perf_counter_ns()
            readings.append((after - before, real - (before + after) // 2))
        _offset["ns"], _offset["at"] = min(readings)[1], t_now
    return _offset["ns"]


def _to_perf_ns(sec: int, nsec: int, t_now: int) -> int:
    """A CLOCK_REALTIME stamp on the perf_counter clock; never later than `t_now`."""
    # A stamp cannot follow its collection; any excess is jitter in reading the offset.
    return min(sec * 1_000_000_000 + nsec - _realtime_offset(t_now), t_now)


def _rx_ns(ancdata: Iterable[tuple[int, int, bytes]], t_read: int) -> int | None:
    """The kernel's receive stamp in `recvmsg` ancillary data, on the perf_counter clock."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return _to_perf_ns(sec, nsec, t_read)
    return None


def _tx_entry(ancdata: Iterable[tuple[int, int, bytes]], t_now: int) -> tuple[int, int] | None:
    """(byte offset, send stamp) from one error-queue message, if it is a send stamp."""
    stamp: int | None = None
    key: int | None = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            stamp = _to_perf_ns(sec, nsec, t_now)
        elif (level, kind) in _RECVERR and len(data) >= _EXTENDED_ERR.size:
            err, origin, _, _, _, info, offset = _EXTENDED_ERR.unpack_from(data)
            if (err == errno.ENOMSG and origin == _SO_EE_ORIGIN_TIMESTAMPING
                    and info == _SCM_TSTAMP_SND):
                key = offset
    return None if stamp is None or key is None else (key, stamp)


class StampedSocket(socket.socket):
    """A socket that remembers when the kernel received its latest read and, optionally, when
    each write left."""

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None, tx_stamps: bool = False) -> None:
        super().__init__(family, type, proto, fileno)
        self.rx_kernel_ns: int | None = None
        self.rx_read_ns: int | None = None
        self.tx_start_ns: int | None = None
        self.tx_bytes = 0
        self._sent_since_rx = False
        self._tx_pending: dict[int, int] = {}
        try:
            self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_stamps = True
        except OSError:
            self.kernel_stamps = False
        self.tx_stamps = False
        self.accept_tx_stamps = False  # for a listening socket: whether connections stamp sends
        if tx_stamps and self.kernel_stamps:
            try:
                self.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _TX_FLAGS)
                self.tx_stamps = True
            except OSError:
                pass
        _REGISTRY[self.fileno()] = self

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        conn = StampedSocket(self.family, self.type, self.proto, fileno=fd,
                             tx_stamps=self.accept_tx_stamps)
        conn.setblocking(self.getblocking())
        return conn, addr

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.tx_stamps:
            # A non-empty error queue makes the socket readable; empty it or the loop spins.
            self._drain_tx()
        anc: list[tuple[int, int, bytes]] = []
        if self.kernel_stamps:
            data, anc, _, _ = self.recvmsg(bufsize, _ANC_SIZE, flags)
        else:
            data = super().recv(bufsize, flags)
        if data:
            t_read = time.perf_counter_ns()
            self.rx_read_ns = t_read
            self.rx_kernel_ns = _rx_ns(anc, t_read)
            self._sent_since_rx = False
        return data

    def _mark_tx(self) -> None:
        if not self._sent_since_rx:
            self.tx_start_ns = time.perf_counter_ns()
            self._sent_since_rx = True

    def send(self, data: Any, flags: int = 0) -> int:
        self._mark_tx()
        n = super().send(data, flags)
        self.tx_bytes += n
        return n

    def sendmsg(self, *args: Any) -> int:
        self._mark_tx()
        n = super().sendmsg(*args)
        self.tx_bytes += n
        return n

    def _drain_tx(self) -> None:
        while True:
            try:
                _, anc, _, _ = self.recvmsg(1, _ERR_ANC_SIZE,
                                            socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            entry = _tx_entry(anc, time.perf_counter_ns())
            if entry is not None:
                # A retransmission (e.g. TCP's tail loss probe) stamps the same bytes again; the
                # first stamp is when the server sent them.
                self._tx_pending.setdefault(entry[0], entry[1])

    def sent_stamp(self, end: int) -> int | None:
        """The kernel's send stamp of the write that ended at byte `end` (exclusive), if it has
        one yet (the kernel stamps when the bytes leave, which TCP may defer past the write)."""
        if not self.tx_stamps:
            return None
        self._drain_tx()
        return self._tx_pending.get(end - 1)

    def forget_sent_before(self, end: int) -> None:
        """Drop the send stamps of writes that ended before byte `end`."""
        for key in [k for k in self._tx_pending if k < end]:
            del self._tx_pending[key]


def client_socket(addr_info: tuple[Any, ...]) -> StampedSocket:
    """A `socket_factory` for aiohttp's TCPConnector: `(family, type, proto, ...)` in."""
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    return StampedSocket(family, type_, proto)


def listening_socket(host: str, port: int, backlog: int) -> StampedSocket:
    """A bound, listening `StampedSocket` for `host:port` (port 0 picks a free one) whose
    connections stamp both what they receive and what they send."""
    family, type_, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = StampedSocket(family, type_, proto)
    # Linux refuses send stamps keyed by offset on a socket that is not connected.
    sock.accept_tx_stamps = True
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
