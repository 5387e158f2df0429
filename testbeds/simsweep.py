"""Run a sweep point against an in-process simulator: shared by tests/bench and benchmarks/render.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bench.shapes import ResultsDoc
from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, arun_sweep
from testbeds.ports import free_port

__all__ = ["free_port", "read_requests", "sweep_against_sim"]


def sweep_against_sim(sim_cfg: SimConfig, tmp: Path,
                      **sweep: Any) -> tuple[ResultsDoc, dict[str, Any]]:
    """Run `arun_sweep` against a fresh in-process simulator; return (results doc, truth)."""

    async def go() -> tuple[ResultsDoc, dict[str, Any]]:
        async with SimServer(sim_cfg) as sim:
            cfg = SweepConfig(base_url=sim.base_url, model=sim_cfg.model, results_dir=tmp,
                              **sweep)
            doc = await arun_sweep(cfg, progress=False)
            return doc, dict(sim.truth)

    return asyncio.run(go())


def read_requests(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
