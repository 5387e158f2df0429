"""A sweep with node telemetry on the simulated cluster: every node's nvidia-smi stand-in and
meminfo file sampled over real SSH for every point (cluster/sweeptelemetry.py), summarized by
bench's TelemetryHooks. Energy against the readings' truth, a throttled node marking exactly
its point, a sampler that dies reported while the sweep goes on."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.hooks import TelemetryHooks
from bench.shapes import PointSummary, RequestRow, ResultsDoc
from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, arun_sweep
from bench.telemetry import FlagRules, read_telemetry_csv
from cluster import config, sweeptelemetry
from cluster.remote import Cluster
from testbeds.clustertool import tool_config
from testbeds.telemetrydata import put, scenario

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]
STANDIN = Path(__file__).resolve().parents[2] / "testbeds" / "standins" / "nvidia-smi"
MEMINFO = "/root/telemetry-meminfo"
POWER = {"head": 41.0, "w1": 33.0, "w2": 27.0, "w3": 19.0}
NORMAL = {"clocks.sm": 2400, "utilization.gpu": 95}
MEM = ("MemTotal: 127600748 kB\nMemFree: 2000000 kB\nMemAvailable: 118566368 kB\nCached: 90000000 kB\n"
       "SwapTotal: 16000000 kB\nSwapFree: 16000000 kB\n")


@pytest.fixture
def nodes(simcluster: Any) -> Any:
    shutil.copy2(STANDIN, simcluster.state_dir / "bin" / "nvidia-smi")
    for node in simcluster.nodes:
        scenario(simcluster, node, readings={"power.draw": POWER[node], **NORMAL})
        put(simcluster, node, MEMINFO, MEM)
    yield simcluster
    for node in simcluster.nodes:
        simcluster.node_run(node, f"rm -f /root/.nvidia-smi-standin.json {MEMINFO}")
    (simcluster.state_dir / "bin" / "nvidia-smi").unlink(missing_ok=True)


class Faults(TelemetryHooks):
    """Throttles w2 for exactly the C=2 point; kills w3's nvidia-smi at the start of C=4."""

    def __init__(self, sim: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim = sim

    def point_start(self, c: int) -> None:
        if c == 2:
            scenario(self.sim, "w2", readings={"power.draw": 12.0, "clocks.sm": 700, "utilization.gpu": 96,
                                                "clocks_event_reasons.active": "0x4"})
            time.sleep(1.0)  # the stand-in re-reads its scenario before each row (every 0.25 s)
        if c == 4:
            scenario(self.sim, "w3", readings={"power.draw": POWER["w3"], **NORMAL}, die_after_rows=0)
        super().point_start(c)

    def point_end(self, c: int, point: PointSummary, rows: list[RequestRow], start: float, end: float,
                  folder: Path) -> None:
        super().point_end(c, point, rows, start, end, folder)
        if c == 2:
            scenario(self.sim, "w2", readings={"power.draw": POWER["w2"], **NORMAL})
            time.sleep(1.0)


def test_sweep_stores_every_nodes_series_energy_flags_and_a_dead_sampler(nodes: Any, tmp_path: Path) -> None:
    settings = config.load(tool_config(nodes, tmp_path, telemetry={"interval_ms": 250, "meminfo_path": MEMINFO}))
    sim_cfg = SimConfig(model="telemetry", decode_base_s=0.05, prefill_base_s=0.002)
    with Cluster(settings) as cl, sweeptelemetry.recording(cl) as tel:
        hooks = Faults(nodes, tel.data, tel.mark, tel.save_logs, FlagRules(**tel.rules))

        async def go() -> ResultsDoc:
            async with SimServer(sim_cfg) as server:
                cfg = SweepConfig(base_url=server.base_url, model="telemetry", results_dir=tmp_path / "results",
                                  concurrency=[1, 2, 4], input_len=8, output_len=40, requests_per_point=2,
                                  warmup=0, hooks=hooks)
                return await arun_sweep(cfg, progress=False)

        doc = asyncio.run(go())
    points = {p["concurrency"]: p for p in doc["points"]}
    assert sorted(points) == [1, 2, 4]  # the sweep went on past the dead sampler
    stored = json.loads((tmp_path / "results" / "telemetry" / "results.json").read_text())
    assert [p["telemetry"]["flagged_nodes"] for p in stored["points"]] == [[], ["w2"], ["w3"]]

    # energy: every node covered in C=1, integral within 1 % of the readings' truth
    t1 = points[1]["telemetry"]
    assert all(t1["nodes"][n]["covered"] for n in POWER)
    truth = sum(POWER.values()) * t1["window_s"]
    assert t1["energy_j"] == pytest.approx(truth, rel=0.01)
    assert t1["output_tokens"] == 2 * 40
    assert t1["joules_per_token"] == pytest.approx(truth / 80, rel=0.01)
    assert t1["tokens_per_s_per_watt"] == pytest.approx(80 / truth, rel=0.01)
    for n, watts in POWER.items():
        assert t1["nodes"][n]["energy_j"] == pytest.approx(watts * t1["window_s"], rel=0.01), n

    # throttled: w2 in C=2 only, named, with the reason; no one else, no other point
    t2 = points[2]["telemetry"]
    assert [f["node"] for f in t2["flags"]["throttled"]] == ["w2"]
    assert "sw_power_cap" in " ".join(map(str, t2["flags"]["throttled"][0]["why"]))
    assert t2["nodes"]["w2"]["min_sm_clock_mhz"] == 700
    assert not t1["flags"]["throttled"] and not points[4]["telemetry"]["flags"]["throttled"]

    # w3's nvidia-smi died in C=4: reported (node lost, the event kept), energy not claimed
    t4 = points[4]["telemetry"]
    assert [f["node"] for f in t4["flags"]["node_lost"]] == ["w3"]
    assert any(e["node"] == "w3" and e["event"] == "gpu-exit" for e in t4["events"])
    assert t4["energy_j"] is None and t4["nodes"]["head"]["covered"]

    # telemetry.csv beside results.json: every node's GPU and memory series in every point
    series = read_telemetry_csv(tmp_path / "results" / "telemetry" / "telemetry.csv")
    for c, p in points.items():
        live = [n for n in POWER if (c, n) != (4, "w3")]
        assert all(p["telemetry"]["nodes"][n]["samples"] >= 4 for n in live), c  # 4 Hz over >= 1.5 s
    for node in POWER:
        gpu = [s for s in series[node] if s["source"] == "gpu"]
        mem = [s for s in series[node] if s["source"] == "mem"]
        assert gpu and mem and "mem_used_mib" not in gpu[0]  # GB10's [N/A] memory: absent, not 0
        assert all(s["mem_available_kib"] == 118566368 for s in mem)

    # the table and figures: energy columns, flagged points marked with the node named

    rendered = report.render(stored, tmp_path / "results" / "telemetry", "simulated cluster")
    table = rendered.markdown
    assert "| J / output token | Tok/s per W |" in table
    rows = {line.split("|")[1].split()[0]: line.split("|")[1] for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| Concurrency")}
    assert [report.NODE_FLAG_MARK in rows[c] for c in ("1", "2", "4")] == [False, True, True]
    [row1] = [line for line in table.splitlines() if line.startswith("| 1 ")]
    assert f"| {t1['joules_per_token']:.2f} |" in row1
    assert "C=2: throttled w2; C=4: node lost w3." in table
    assert {"energy", "node_timeline"} <= set(rendered.figures)
