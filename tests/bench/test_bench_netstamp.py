"""Kernel timestamps: stamps say when bytes moved, not when a busy process got round to them.

Each test makes one side late on purpose (a read 50 ms after the bytes arrived, a server loop
blocked while a request arrives, a client loop blocked while chunks arrive) and checks that the
stamps do not move with it. Bounds are loose enough for a loaded 2-core CI box: the stamps are
microseconds apart from the truth, the delays we inject are tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator

import pytest

from bench import client, netstamp
from bench.sim import BackgroundSim, SimConfig

pytestmark = pytest.mark.timeout(60)
MS = 1_000_000


Pair = tuple[netstamp.StampedSocket, netstamp.StampedSocket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """(client, server) connected over loopback; the server side stamps its sends."""
    listener = netstamp.listening_socket("127.0.0.1", 0, 8)
    listener.setblocking(True)
    cli = netstamp.client_socket((socket.AF_INET, socket.SOCK_STREAM, 0))
    cli.connect(listener.getsockname())
    srv, _ = listener.accept()
    listener.close()
    assert isinstance(srv, netstamp.StampedSocket)
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # The kernel turns receive stamping on from a deferred work item: wait for it once.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        srv.send(b".")
        cli.recv(1)
        if cli.rx_kernel_ns is not None:
            break
        time.sleep(0.01)
    srv.forget_sent_before(srv.tx_bytes)
    yield cli, srv
    cli.close()
    srv.close()


def test_receive_stamp_is_arrival_not_read(pair: Pair) -> None:
    cli, srv = pair
    assert cli.kernel_stamps
    t_before = time.perf_counter_ns()
    srv.send(b"data: x\n\n")
    time.sleep(0.05)
    assert cli.recv(1024) == b"data: x\n\n"
    assert cli.rx_kernel_ns is not None and cli.rx_read_ns is not None
    assert t_before <= cli.rx_kernel_ns < t_before + 5 * MS
    assert cli.rx_read_ns - cli.rx_kernel_ns >= 45 * MS


def test_send_stamps_are_keyed_by_write(pair: Pair) -> None:
    cli, srv = pair
    assert srv.tx_stamps and not cli.tx_stamps
    windows = []
    for size in (10, 300, 7):
        t0 = time.perf_counter_ns()
        srv.send(b"x" * size)
        windows.append((t0, time.perf_counter_ns(), srv.tx_bytes))
    # Each write's stamp is found by its end offset, until the older ones are forgotten.
    stamps = [srv.sent_stamp(end) for _, _, end in windows]
    for (t0, t1, _), stamp in zip(windows, stamps, strict=True):
        assert stamp is not None and t0 <= stamp <= t1
    last = stamps[-1]
    assert last is not None
    srv.forget_sent_before(windows[0][2])
    assert srv.sent_stamp(windows[0][2]) is None
    assert srv.sent_stamp(windows[-1][2]) == last
    time.sleep(0.01)
    cli.recv(4096)
    assert cli.rx_kernel_ns is not None and cli.rx_kernel_ns >= last


def test_error_queue_is_drained_on_read(pair: Pair) -> None:
    """Unclaimed send stamps make the socket readable; a read must empty the error queue, or an
    event loop watching the socket would spin."""
    _, srv = pair
    srv.setblocking(False)
    srv.send(b"hello")
    poller = select.epoll()
    poller.register(srv.fileno(), select.EPOLLIN)
    assert poller.poll(0.1)[0][1] & select.EPOLLERR
    with pytest.raises(BlockingIOError):
        srv.recv(1024)
    assert poller.poll(0) == []
    poller.close()


def test_request_start_is_the_first_write_after_a_read(pair: Pair) -> None:
    cli, srv = pair
    cli.send(b"GET / HTTP/1.1\r\n")
    first = cli.tx_start_ns
    cli.send(b"\r\n")
    assert cli.tx_start_ns == first
    srv.send(b"HTTP/1.1 200 OK\r\n\r\n")
    time.sleep(0.01)
    cli.recv(1024)
    t = time.perf_counter_ns()
    cli.send(b"GET / HTTP/1.1\r\n\r\n")
    assert cli.tx_start_ns is not None and first is not None and cli.tx_start_ns >= t > first


def _spec(rid: str, max_tokens: int) -> client.RequestSpec:
    return client.RequestSpec(rid=rid, model="stamp", prompt="one two three", max_tokens=max_tokens)


def test_server_truth_is_arrival_even_when_its_loop_is_busy() -> None:
    """The simulator's loop is blocked for 200 ms as the request arrives: `t_recv_ns` still says
    when the bytes came, and the wait counts in the true TTFT, where the client sees it too."""
    with BackgroundSim(SimConfig(model="stamp", decode_base_s=0.005, prefill_base_s=0.0)) as sim:

        async def go() -> client.RequestResult:
            async with client.make_session(1) as session:
                warm = await client.send_request(session, sim.base_url, _spec("warm", 2))
                assert warm.ok
                sim.loop.call_soon_threadsafe(time.sleep, 0.2)
                await asyncio.sleep(0.02)  # let the block start
                return await client.send_request(session, sim.base_url, _spec("blocked", 4))

        res = asyncio.run(go())
        rec = sim.truth()["blocked"]
    assert res.ok and res.send_source == client.SEND_WRITE
    assert rec["recv_source"] == "kernel" and rec["send_source"] == "kernel"
    assert 0 <= rec["t_recv_ns"] - res.t_send_ns < 5 * MS
    assert rec["t_read_ns"] - rec["t_recv_ns"] > 100 * MS
    first = next(c for c in rec["chunks"] if c[2] == "content")
    assert res.t_first_ns is not None
    true_ttft = first[0] - rec["t_recv_ns"]
    assert true_ttft > 100 * MS
    assert abs((res.t_first_ns - res.t_send_ns) - true_ttft) < 1 * MS


def test_client_arrivals_do_not_move_when_its_loop_is_busy() -> None:
    """Chunks every 20 ms; the client's loop is blocked for 15 ms out of every 50. Events that
    waited for the loop are still stamped within 1 ms of when the server sent them."""
    cfg = SimConfig(model="stamp", decode_base_s=0.020, prefill_base_s=0.0)
    with BackgroundSim(cfg) as sim:

        async def blocker(stop: asyncio.Event) -> None:
            while not stop.is_set():
                await asyncio.sleep(0.035)
                time.sleep(0.015)

        async def go() -> client.RequestResult:
            stop = asyncio.Event()
            task = asyncio.create_task(blocker(stop))
            async with client.make_session(1) as session:
                res = await client.send_request(session, sim.base_url, _spec("busy", 40))
            stop.set()
            await task
            return res

        res = asyncio.run(go())
        rec = sim.truth()["busy"]
        sent = [c[0] for c in rec["chunks"] if c[2] == "content"]
    assert res.ok and res.timing_source == client.TIMING_KERNEL
    assert rec["send_source"] == "kernel"
    errors = [t - s for t, s in zip(res.chunk_t_ns, sent, strict=True)]
    delayed = [e for e, lag in zip(errors, res.read_lag_ns, strict=True) if lag > 5 * MS]
    assert len(delayed) >= 3, "the blocker never delayed a read; the test proved nothing"
    assert min(errors) >= -0.01 * MS  # two clocks read to convert each stamp: tens of ns apart
    assert sorted(delayed)[int(0.9 * (len(delayed) - 1))] < 1 * MS
