"""The stall watchdog: a wedged endpoint (connections open, nothing sent, /health 200) stops the
sweep within the configured time with the named error; finished points stay; logs are saved."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from bench.hooks import SweepHooks
from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, arun_sweep
from bench.watchdog import EngineStalled

pytestmark = pytest.mark.timeout(120)


class Hooks(SweepHooks):
    def __init__(self) -> None:
        self.stalls: list[tuple[int, str, float]] = []

    def stalled(self, c: int, error: str, folder: Path) -> list[Path]:
        self.stalls.append((c, error, time.monotonic()))
        path = folder / "logs" / "head.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("tail\n")
        return [path]


def test_wedged_endpoint_stops_the_sweep_and_keeps_finished_points(tmp_path: Path) -> None:
    stall_s = 1.5
    # C=1: 2 x 9 requests x 8 tokens = 72 tokens, under the wedge; C=4 wedges part-way.
    sim = SimConfig(model="wedge", decode_base_s=0.002, prefill_base_s=0.002, wedge_after_tokens=100)
    hooks = Hooks()

    async def go() -> tuple[float, EngineStalled, int]:
        async with SimServer(sim) as server:
            cfg = SweepConfig(base_url=server.base_url, model="wedge", results_dir=tmp_path,
                              concurrency=[1, 4, 8], input_len=8, output_len=8, requests_per_point=8,
                              warmup=1, stall_s=stall_s, hooks=hooks)
            with pytest.raises(EngineStalled) as info:
                await arun_sweep(cfg, progress=False)
            async with aiohttp.ClientSession() as s, s.get(server.base_url + "/health") as r:
                health = r.status
            wedged_at = min(max(ch[3] for ch in rec["chunks"]) for rec in server.truth.values()
                            if rec["chunks"] and len(rec["chunks"]) < 9)
            return wedged_at / 1e9, info.value, health

    wedged_at, err, health = asyncio.run(go())
    assert health == 200  # the endpoint looks healthy: only the watchdog can tell
    assert err.concurrency == 4 and err.in_flight == 4
    assert str(err).startswith(f"engine stalled: no token for {err.idle_s:.0f} s; in flight 4")
    [(c, message, t_fired)] = hooks.stalls
    assert c == 4 and message == str(err)
    took = t_fired - wedged_at  # both CLOCK_MONOTONIC
    assert stall_s <= took < stall_s + 3.0, took
    doc = json.loads((tmp_path / "wedge" / "results.json").read_text())
    assert [p["concurrency"] for p in doc["points"]] == [1]  # C=8 never ran
    assert doc["stalled"]["concurrency"] == 4 and doc["stalled"]["error"] == str(err)
    assert doc["stalled"]["logs"] == [str(tmp_path / "wedge" / "logs" / "head.log")]


def test_no_stall_when_tokens_flow(tmp_path: Path) -> None:
    """Slow but steady tokens (every 0.3 s) never trip a 1 s watchdog."""
    sim = SimConfig(model="slow", decode_base_s=0.3, prefill_base_s=0.002)

    async def go() -> int:
        async with SimServer(sim) as server:
            cfg = SweepConfig(base_url=server.base_url, model="slow", results_dir=tmp_path,
                              concurrency=[2], input_len=8, output_len=6, requests_per_point=2,
                              warmup=0, stall_s=1.0)
            doc = await arun_sweep(cfg, progress=False)
            return doc["points"][0]["completed"]

    assert asyncio.run(go()) == 2


def test_a_resumed_sweep_keeps_the_telemetry_of_the_points_it_resumes(tmp_path: Path) -> None:
    """telemetry.csv after a resume holds the first run's samples and the second's; a fresh run
    (--rerun) starts it again."""
    from bench.hooks import TELEMETRY_FILE, TelemetryHooks
    from bench.telemetry import read_telemetry_csv

    def hooks(t0: float) -> TelemetryHooks:
        series = {"w1": [{"node": "w1", "source": "gpu", "t": t0 + i, "power_w": 30.0 + i}
                         for i in range(3)]}
        return TelemetryHooks(lambda: {"nodes": series, "events": []})

    sim = SimConfig(model="t", decode_base_s=0.001, prefill_base_s=0.001)

    async def sweep(concurrency: list[int], h: TelemetryHooks, rerun: bool = False) -> None:
        async with SimServer(sim) as server:
            cfg = SweepConfig(base_url=server.base_url, model="t", results_dir=tmp_path,
                              concurrency=concurrency, input_len=8, output_len=4,
                              requests_per_point=2, warmup=0, hooks=h, rerun=rerun)
            await arun_sweep(cfg, progress=False)

    asyncio.run(sweep([1], hooks(100.0)))
    [csv_path] = tmp_path.rglob(TELEMETRY_FILE)
    asyncio.run(sweep([1, 2], hooks(200.0)))  # resumes: C=1 stays, C=2 is measured
    times = [s["t"] for s in read_telemetry_csv(csv_path)["w1"]]
    assert times == [100.0, 101.0, 102.0, 200.0, 201.0, 202.0]
    asyncio.run(sweep([1], hooks(300.0), rerun=True))
    assert [s["t"] for s in read_telemetry_csv(csv_path)["w1"]] == [300.0, 301.0, 302.0]
