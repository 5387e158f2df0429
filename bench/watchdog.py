"""The sweep's stall watchdog: a wedged engine (NCCL hang, dead worker) keeps its connections
open and `/health` at 200 but sends nothing; without this a point waits out every read timeout
and the next point hammers the same wedged server.

Stalled = requests are in flight and no stream has read a byte for `stall_s`. Reads are stamped
by the client's event parser (`RequestResult.t_last_read_ns`); a request that ended counts as
activity at its end.
"""

from __future__ import annotations

import asyncio
import time

from bench.client import RequestResult
from bench.errors import BenchError


class EngineStalled(BenchError):
    """No token for `stall_s` with requests in flight; the sweep stops (finished points stay)."""

    exit_code = 3

    def __init__(self, idle_s: float, in_flight: int, concurrency: int) -> None:
        self.idle_s, self.in_flight, self.concurrency = idle_s, in_flight, concurrency
        super().__init__(f"engine stalled: no token for {idle_s:.0f} s; in flight {in_flight} "
                         f"(point C={concurrency})")


class Watchdog:
    """Watches one point's in-flight requests; `run()` raises EngineStalled when they stall."""

    def __init__(self, stall_s: float, concurrency: int, poll_s: float = 0.25) -> None:
        self.stall_s, self.concurrency, self.poll_s = stall_s, concurrency, poll_s
        self.in_flight: dict[int, RequestResult] = {}
        self.last_ns = time.perf_counter_ns()

    def ended(self, res: RequestResult) -> None:
        """A request finished (any outcome): that is activity."""
        self.last_ns = max(self.last_ns, res.t_end_ns or time.perf_counter_ns())

    def idle_s(self, now_ns: int | None = None) -> float:
        now_ns = time.perf_counter_ns() if now_ns is None else now_ns
        reads = [r.t_last_read_ns for r in self.in_flight.values() if r.t_last_read_ns]
        return (now_ns - max([self.last_ns, *reads])) / 1e9

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            idle = self.idle_s()
            if self.in_flight and idle >= self.stall_s:
                raise EngineStalled(idle, len(self.in_flight), self.concurrency)
