"""TelemetryRecorder end to end over real SSH against the simulated cluster, with the nvidia-smi
stand-in on every node's PATH and a per-node meminfo file the test controls."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bench.telemetry import summarize_point
from cluster import config
from cluster.remote import Cluster
from cluster.telemetry import TelemetryOptions, TelemetryRecorder, read_once
from testbeds.checks import timing
from testbeds.clustertool import tool_config
from testbeds.telemetrydata import group_members, put, scenario

pytestmark = pytest.mark.cluster
STANDIN = Path(__file__).resolve().parents[2] / "testbeds" / "standins" / "nvidia-smi"
MEMINFO = "/root/telemetry-meminfo"


def meminfo(swap_free_kib: int) -> str:
    return ("MemTotal:       127600748 kB\nMemFree:         2000000 kB\nMemAvailable:   118566368 kB\n"
            f"Cached:         90000000 kB\nSwapTotal:       16000000 kB\nSwapFree:       {swap_free_kib} kB\n")



@pytest.fixture
def nodes(simcluster: Any) -> Any:
    shutil.copy2(STANDIN, simcluster.state_dir / "bin" / "nvidia-smi")
    for node in simcluster.nodes:
        scenario(simcluster, node, readings={"power.draw": 40.0, "clocks.sm": 2400, "utilization.gpu": 95})
        put(simcluster, node, MEMINFO, meminfo(16000000))
    yield simcluster
    for node in simcluster.nodes:
        simcluster.node_run(node, f"rm -f /root/.nvidia-smi-standin.json {MEMINFO}")
    (simcluster.state_dir / "bin" / "nvidia-smi").unlink(missing_ok=True)


def test_recorder_samples_every_node_survives_a_death_and_stops_clean(nodes: Any, tmp_path: Path) -> None:
    settings = config.load(tool_config(nodes, tmp_path))
    options = TelemetryOptions(interval_ms=250, meminfo_path=MEMINFO)
    with Cluster(settings) as cluster:
        rec = TelemetryRecorder(cluster, options)
        rec.start()
        hellos = {e["node"]: e for e in rec.data()["events"] if e["event"] == "hello"}
        assert set(hellos) == set(settings.node_names)
        t0 = rec.mark("point 1 start")
        time.sleep(2.0)
        t1 = rec.mark("point 1 end")
        scenario(nodes, "w2", readings={"power.draw": 15.0, "clocks.sm": 700, "utilization.gpu": 96,
                                         "clocks_event_reasons.active": "0x4"})
        scenario(nodes, "w1", readings={"power.draw": 40.0}, die_after_rows=0)
        time.sleep(0.6)
        t2 = rec.mark("point 2 start")
        put(nodes, "w3", MEMINFO, meminfo(15000000))
        time.sleep(2.5)
        t3 = rec.mark("point 2 end")
        assert {n: sorted(s) for n, s in rec.latest().items()}["head"] == ["gpu", "load", "mem"]
        started = time.monotonic()
        outcome = rec.stop()
        took = time.monotonic() - started
    assert outcome == {n: "gone" for n in settings.node_names}
    timing(took, 3.0, "stopping the recorder")
    for e in hellos.values():
        assert group_members(e["pgid"]) == [], e["node"]

    data = rec.data()
    assert [m["label"] for m in data["marks"]] == ["point 1 start", "point 1 end", "point 2 start", "point 2 end"]
    died = [e for e in data["events"] if e["event"] == "gpu-exit"]
    assert [e["node"] for e in died] == ["w1"]
    one = summarize_point(data["nodes"], t0, t1, 1000, data["events"])
    assert one["flagged_nodes"] == [] and one["energy_j"] == pytest.approx(4 * 40.0 * (t1 - t0), rel=0.01)
    two = summarize_point(data["nodes"], t2, t3, 1000, data["events"])
    assert {f["node"] for f in two["flags"]["throttled"]} == {"w2"}
    assert {f["node"] for f in two["flags"]["swapped"]} == {"w3"}
    assert {f["node"] for f in two["flags"]["node_lost"]} == {"w1"}
    assert two["energy_j"] is None and two["nodes"]["head"]["energy_j"] == pytest.approx(40.0 * (t3 - t2), rel=0.01)


def test_a_node_whose_ssh_dies_is_recorded_and_leaves_nothing(nodes: Any, tmp_path: Path) -> None:
    settings = config.load(tool_config(nodes, tmp_path))
    with Cluster(settings) as cluster:
        rec = TelemetryRecorder(cluster, TelemetryOptions(interval_ms=250, meminfo_path=MEMINFO))
        rec.start()
        pgid = next(e["pgid"] for e in rec.data()["events"] if e["event"] == "hello" and e["node"] == "w3")
        time.sleep(1.0)
        nodes.stop_sshd("w3")
        try:
            deadline = time.monotonic() + 10
            while not any(e["event"] == "sampler-exit" for e in rec.data()["events"]):
                assert time.monotonic() < deadline, rec.data()["events"]
                time.sleep(0.1)
            time.sleep(1.0)
            others = {n: len(s) for n, s in rec.data()["nodes"].items()}
            time.sleep(1.0)
            assert all(len(rec.data()["nodes"][n]) > others[n] for n in ("head", "w1", "w2"))
            started = time.monotonic()
            outcome = rec.stop()
            timing(time.monotonic() - started, 3.5, "stopping the recorder after a sampler exit")
        finally:
            nodes.start_sshd("w3")
    lost = [e for e in rec.data()["events"] if e["event"] == "sampler-exit"]
    assert [e["node"] for e in lost] == ["w3"]
    assert outcome["head"] == "gone" and outcome["w3"] != "gone"
    deadline = time.monotonic() + 5  # orphaned by the dead session, they die at their next write
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(pgid) == []


def test_read_once_gives_every_node_one_reading_and_names_an_unreachable_one(nodes: Any, tmp_path: Path) -> None:
    settings = config.load(tool_config(nodes, tmp_path))
    scenario(nodes, "w1", readings={"power.draw": 77.5, "clocks.sm": 1200})
    nodes.stop_sshd("w2")
    try:
        with Cluster(settings) as cluster:
            got = read_once(cluster, TelemetryOptions(meminfo_path=MEMINFO))
    finally:
        nodes.start_sshd("w2")
    assert set(got) == set(settings.node_names)
    gpu = {n: [i for i in items if i.get("source") == "gpu"] for n, items in got.items()}
    assert [(s["power_w"], s["sm_clock_mhz"]) for s in gpu["w1"]] == [(77.5, 1200)]
    assert len(gpu["head"]) == 1 and "mem_used_mib" not in gpu["head"][0]
    assert any(i.get("source") == "mem" and i["swap_free_kib"] == 16000000 for i in got["w3"])
    (failed,) = got["w2"]
    assert failed["event"] == "start-failed" and "w2" in failed["why"]


def test_a_node_down_at_start_is_named_and_does_not_hold_the_others(nodes: Any, tmp_path: Path) -> None:
    settings = config.load(tool_config(nodes, tmp_path))
    nodes.stop_sshd("w1")
    try:
        with Cluster(settings) as cluster:
            rec = TelemetryRecorder(cluster, TelemetryOptions(interval_ms=250, meminfo_path=MEMINFO))
            started = time.monotonic()
            rec.start()
            timing(time.monotonic() - started, 5.0, "starting the recorder")
            t0 = rec.mark("start")
            time.sleep(1.5)
            t1 = rec.mark("end")
            outcome = rec.stop()
    finally:
        nodes.start_sshd("w1")
    data = rec.data()
    (exit_event,) = [e for e in data["events"] if e["event"] == "sampler-exit"]
    assert exit_event["node"] == "w1" and "w1" in exit_event["why"]
    assert outcome["w1"] == "never started" and outcome["head"] == "gone"
    summary = summarize_point(data["nodes"], t0, t1, 10, data["events"])
    assert summary["flagged_nodes"] == ["w1"] and summary["energy_j"] is None
    assert summary["nodes"]["w3"]["energy_j"] == pytest.approx(40.0 * (t1 - t0), rel=0.01)
