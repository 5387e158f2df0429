"""Helpers shared by the bench tests: run a sweep point against an in-process simulator."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, arun_sweep


def free_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sweep_against_sim(sim_cfg: SimConfig, tmp: Path,
                      **sweep: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `arun_sweep` against a fresh in-process simulator; return (results doc, truth)."""

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with SimServer(sim_cfg) as sim:
            cfg = SweepConfig(base_url=sim.base_url, model=sim_cfg.model, results_dir=tmp,
                              **sweep)
            doc = await arun_sweep(cfg, progress=False)
            return doc, dict(sim.truth)

    return asyncio.run(go())


def read_requests(folder: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
