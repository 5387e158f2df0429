"""The start gate: at most `STARTS_PER_LOOP_TURN` requests start per event-loop turn.

Starting a request costs the client far more than reading an event (aiohttp builds and writes
it); when a whole cohort of C requests ends together, C starts in one event-loop turn would keep
every socket unread for that long, and events that queue up meanwhile share a stamp. The wait
shows as dispatch lag (docs/metrics.md, "Client health").
"""

from __future__ import annotations

import asyncio
import collections

STARTS_PER_LOOP_TURN = 8


class StartGate:
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
