"""The node sampler's line parser against real recorded nvidia-smi rows, the nvidia-smi stand-in
against the recorded formats, and the real sampler command run locally (bash, stand-in on PATH)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.telemetry import summarize_point
from cluster.nvsmi import parse_gpu_row, parse_row_time
from cluster.telemetry import SamplerParser, TelemetryOptions, sampler_command, stop_command
from testbeds.checks import timing
from testbeds.telemetrydata import FIXTURES, RECORDED_FIELDS, group_members

STANDIN = Path(__file__).resolve().parents[2] / "testbeds" / "standins" / "nvidia-smi"


def recorded_rows() -> list[str]:
    return (FIXTURES / "h200-lms250-powercap.csv").read_text().splitlines()


def recorded_samples() -> list[dict]:
    return [parse_gpu_row(line, RECORDED_FIELDS) for line in recorded_rows()]


def test_idle_row_parses_to_typed_readings() -> None:
    s = recorded_samples()[0]
    utc = datetime(2026, 12, 2, 6, 45, 57, 321000, tzinfo=UTC).timestamp()
    assert s["t"] == pytest.approx(utc, abs=1e-6)
    assert (s["gpu"], s["name"], s["pstate"]) == (0, "NVIDIA H200", "P0")
    assert s["power_w"] == 80.83 and s["power_limit_w"] == 700.0 and s["enforced_power_limit_w"] == 700.0
    assert (s["sm_clock_mhz"], s["sm_clock_max_mhz"], s["mem_clock_mhz"]) == (345, 1980, 3201)
    assert (s["temp_c"], s["util_pct"], s["mem_used_mib"], s["mem_total_mib"]) == (35, 0, 0, 143771)
    assert s["throttle_mask"] == "0x0000000000000001" and s["throttle_reasons"] == ["gpu_idle"]
    assert s["reason_sw_power_cap"] is False and s["reason_hw_slowdown"] is False


def test_power_capped_rows_carry_the_sw_power_cap_bit_and_flag() -> None:
    samples = recorded_samples()
    capped = [s for s in samples if "sw_power_cap" in s["throttle_reasons"]]
    assert len(capped) == 20
    assert all(s["throttle_mask"] == "0x0000000000000004" and s["reason_sw_power_cap"] for s in capped)
    assert [s for s in samples if s["reason_sw_power_cap"]] == capped
    assert min(s["sm_clock_mhz"] for s in capped) == 1185 and max(s["power_w"] for s in capped) == 695.81


def test_time_comes_from_the_row_timestamp_not_the_period() -> None:
    times = [s["t"] for s in recorded_samples()]
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(s > 0 for s in steps)
    assert steps[0] == pytest.approx(0.261, abs=1e-6)  # 57.321 -> 57.582: not the -lms 250
    assert times[-1] - times[0] == pytest.approx(12.427, abs=1e-6)  # 49 steps, not 49 x 0.250


def test_row_time_uses_the_node_utc_offset() -> None:
    utc = datetime(2026, 12, 2, 6, 45, 57, 321000, tzinfo=UTC).timestamp()
    assert parse_row_time("2026/12/02 08:45:57.321", 7200) == pytest.approx(utc, abs=1e-6)


@pytest.mark.parametrize("answer", ["[N/A]", "N/A", "[Not Supported]", "Not Supported"])
def test_unsupported_fields_are_absent_not_zero(answer: str) -> None:
    row = f"0, NVIDIA GB10, {answer}, {answer}, {answer}"
    s = parse_gpu_row(row, ("index", "name", "memory.total", "memory.used", "memory.free"))
    assert s == {"source": "gpu", "gpu": 0, "name": "NVIDIA GB10"}


def test_published_gb10_row_has_no_memory_readings() -> None:
    lines = [ln for ln in (FIXTURES / "gb10-published.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    s = parse_gpu_row(lines[0], ("index", "name", "memory.total", "memory.used", "memory.free"))
    assert not any(k.startswith("mem_") for k in s)


def test_a_line_that_is_not_a_row_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 18 fields"):
        parse_gpu_row('Field "foo" is not a valid field to query.', RECORDED_FIELDS)
    note = SamplerParser("n1", RECORDED_FIELDS).feed('gpu Field "foo" is not a valid field to query.')
    assert note is not None and note["event"] == "note" and note["node"] == "n1"


def test_tagged_lines() -> None:
    clock = iter([1000.5, 1000.5]).__next__
    p = SamplerParser("w1", ("timestamp", "power.draw"), clock=clock)
    hello = p.feed("hello 1002.5 +0100 4242 4242 20")
    assert hello is not None and (hello["pid"], hello["pgid"], hello["nproc"]) == (4242, 4242, 20)
    assert p.clock_offset_s == pytest.approx(2.0) and p.utc_offset_s == 3600
    gpu = p.feed("gpu 1970/01/01 01:16:43.000, 12.50")  # 1003.0 node clock, 1001.0 control clock
    assert gpu == {"node": "w1", "source": "gpu", "t": pytest.approx(1001.0), "power_w": 12.5}
    mem = p.feed("mem 1004.5 MemAvailable=100 MemFree=50 Cached=40 SwapTotal=10 SwapFree=7")
    assert mem == {"node": "w1", "source": "mem", "t": pytest.approx(1002.5), "mem_available_kib": 100,
                   "mem_free_kib": 50, "cached_kib": 40, "swap_total_kib": 10, "swap_free_kib": 7}
    load = p.feed("load 1004.5 1.50 0.75 0.25 3/200")
    assert load is not None and (load["load1"], load["nproc"]) == (1.5, 20)
    died = p.feed("gpu-exit 1005.5 1")
    assert died == {"node": "w1", "event": "gpu-exit", "t": pytest.approx(1003.5), "exit_code": 1}


# -- the stand-in against the recorded formats ----------------------------------------------

def standin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STANDIN), *args], capture_output=True, text=True, timeout=10,
                          env={**os.environ, **(env or {})})


def test_standin_header_and_units_match_the_recorded_csv_form(tmp_path: Path) -> None:
    header, row = (FIXTURES / "h200-with-header.csv").read_text().splitlines()
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"readings": {"memory.used": 0, "clocks.sm": 1980}, "unsupported": []}))
    r = standin("--query-gpu=power.draw,clocks.sm,temperature.gpu,utilization.gpu,memory.used",
                "--format=csv", env={"NVIDIA_SMI_STANDIN_SCENARIO": str(scenario)})
    assert r.returncode == 0, r.stdout + r.stderr
    got_header, got_row = r.stdout.splitlines()
    assert got_header == header
    shape = re.compile(r"^[\d.]+ W, \d+ MHz, \d+, \d+ %, \d+ MiB$")
    assert shape.match(row) and shape.match(got_row), got_row


def test_standin_rows_parse_like_real_ones_and_loop_on_their_own_clock(tmp_path: Path) -> None:
    fields = ",".join(RECORDED_FIELDS)
    proc = subprocess.Popen([str(STANDIN), f"--query-gpu={fields}", "--format=csv,noheader,nounits",
                             "-lms", "100"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "NVIDIA_SMI_STANDIN_SCENARIO": str(tmp_path / "none.json")})
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(4)]
    proc.kill()
    proc.wait()
    samples = [parse_gpu_row(line, RECORDED_FIELDS, time.localtime().tm_gmtoff) for line in lines]
    steps = [b["t"] - a["t"] for a, b in zip(samples, samples[1:], strict=False)]
    assert all(0.09 < s < 0.2 for s in steps)
    assert "mem_used_mib" not in samples[0] and "enforced_power_limit_w" not in samples[0]  # GB10 default
    assert samples[0]["name"] == "NVIDIA GB10" and samples[0]["throttle_reasons"] == []


def test_standin_refuses_an_unknown_field_like_nvidia_smi() -> None:
    r = standin("--query-gpu=timestamp,clocks.applications.sm", "--format=csv")
    assert r.returncode == 2
    assert r.stdout == 'Field "clocks.applications.sm" is not a valid field to query.\n\n'


# -- the real sampler command, run locally ---------------------------------------------------


def run_sampler(tmp_path: Path, scenario: dict, seconds: float) -> tuple[list[dict], int, str]:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       127600748 kB\nMemFree:         2000000 kB\n"
                       "MemAvailable:   118566368 kB\nCached:         90000000 kB\n"
                       "SwapTotal:       16000000 kB\nSwapFree:        15000000 kB\n")
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    env = {**os.environ, "PATH": f"{STANDIN.parent}:{os.environ['PATH']}",
           "NVIDIA_SMI_STANDIN_SCENARIO": str(tmp_path / "scenario.json")}
    command = sampler_command(TelemetryOptions(interval_ms=200, meminfo_path=str(meminfo)))
    # start_new_session: what sshd does for every session's command.
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    parser = SamplerParser("local", TelemetryOptions().gpu_fields)
    items = []
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = parser.feed(proc.stdout.readline())
        if item is not None:
            items.append(item)
    started = time.monotonic()
    stop = subprocess.run(["sh", "-c", stop_command(proc.pid)], capture_output=True, text=True, timeout=10)
    took = time.monotonic() - started
    proc.wait(5)
    timing(took, 2.0, "stop_command")
    return items, proc.pid, stop.stdout.strip()


def test_sampler_streams_tagged_lines_and_stops_leaving_nothing(tmp_path: Path) -> None:
    scenario = {"readings": {"power.draw": 42.5, "clocks.sm": 850, "utilization.gpu": 96,
                             "clocks_event_reasons.active": "0x0000000000000004"}}
    items, pgid, stopped = run_sampler(tmp_path, scenario, 2.5)
    hello = items[0]
    assert hello["event"] == "hello" and hello["pgid"] == hello["pid"] == pgid
    gpu = [i for i in items if i.get("source") == "gpu"]
    mem = [i for i in items if i.get("source") == "mem"]
    assert len(gpu) >= 8 and len(mem) >= 2 and any(i.get("source") == "load" for i in items)
    assert all(s["power_w"] == 42.5 and s["sm_clock_mhz"] == 850 for s in gpu)
    assert all(s["throttle_reasons"] == ["sw_power_cap"] and "mem_used_mib" not in s for s in gpu)
    assert mem[0]["mem_available_kib"] == 118566368 and mem[0]["swap_free_kib"] == 15000000
    assert abs(gpu[0]["t"] - time.time()) < 5
    assert stopped == "gone"
    assert group_members(pgid) == []


def test_a_dying_gpu_sampler_is_reported_and_host_sampling_goes_on(tmp_path: Path) -> None:
    scenario = {"readings": {"power.draw": 30.0}, "die_after_rows": 3, "die_exit_code": 4}
    items, pgid, stopped = run_sampler(tmp_path, scenario, 3.2)
    died = [i for i in items if i.get("event") == "gpu-exit"]
    assert len(died) == 1 and died[0]["exit_code"] == 4 and died[0]["node"] == "local"
    gpu = [i for i in items if i.get("source") == "gpu"]
    assert len(gpu) == 3
    assert any(i.get("source") == "mem" and i["t"] > died[0]["t"] for i in items)
    notes = [i["text"] for i in items if i.get("event") == "note"]
    assert any("dying after 3 rows" in n for n in notes)
    start, end = gpu[0]["t"], max(i["t"] for i in items if "source" in i)
    summary = summarize_point({"local": gpu}, start, end, 100, events=died)
    assert summary["energy_j"] is None and summary["flagged_nodes"] == ["local"]
    assert summary["flags"]["node_lost"][0]["since"] == pytest.approx(died[0]["t"])
    assert stopped == "gone" and group_members(pgid) == []
