"""Running the simulated endpoint: in this event loop, on its own thread, or as a process.

`sim_endpoint(cfg)` serves in the caller's loop (async tests); `BackgroundSim` serves on a
daemon thread's loop for blocking callers (the notebook report, the demo, timing tests that keep
the server off the client's loop); `main` is `python -m bench.sim`, a process of its own
(benchmarks/client_accuracy.py, the load-delay test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench.sim.app import SimServer
from bench.sim.config import SimConfig


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
    parser = argparse.ArgumentParser(prog="python -m bench.sim",
                                     description="A simulated vLLM OpenAI-compatible endpoint: the "
                                     "embedded default and the tests' ground truth.")
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
