"""Loop-lag sampling: how late a short timer fires, a direct reading of event-loop congestion.

A point whose loop lag (or dispatch lag) p99 exceeds `LOOP_LAG_BOUND_MS` is marked
`client_bound`: its latencies may include the client's own delay (docs/metrics.md,
"Client health").
"""

from __future__ import annotations

import asyncio
import time

from bench.aiotools import cancel_and_wait

LOOP_LAG_BOUND_MS = 2.0
LOOP_LAG_INTERVAL_S = 0.005


class LoopLag:
    """Samples, while started, how many ms past `LOOP_LAG_INTERVAL_S` each sleep wakes."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_INTERVAL_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - t - LOOP_LAG_INTERVAL_S) * 1e3))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
