"""Per-point telemetry summaries: energy against hand-checked and recorded series, J/token,
tokens/s per watt, and the throttled / swapped / node-lost flags naming the node and span."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.telemetry import (
    FlagRules,
    integrate_power,
    read_telemetry_csv,
    summarize_point,
    write_telemetry_csv,
)
from cluster.nvsmi import parse_gpu_row
from testbeds.telemetrydata import FIXTURES, RECORDED_FIELDS


def recorded() -> list[dict]:
    lines = (FIXTURES / "h200-lms250-powercap.csv").read_text().splitlines()
    return [{"node": "h200", **parse_gpu_row(line, RECORDED_FIELDS)} for line in lines]


def independent_readings() -> list[tuple[float, float]]:
    """(epoch s, watts) straight from the CSV with the csv module, not the project's parser."""
    out = []
    with (FIXTURES / "h200-lms250-powercap.csv").open() as f:
        for row in csv.reader(f, skipinitialspace=True):
            stamp = datetime.strptime(row[0], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC)
            out.append((stamp.timestamp(), float(row[3])))
    return out


def flat(node: str, watts: float, start: float, end: float, step: float = 0.5, **extra: object) -> list[dict]:
    n = int(round((end - start) / step))
    return [{"node": node, "source": "gpu", "t": start + i * step, "power_w": watts, **extra}
            for i in range(n + 1)]


def test_trapezoid_with_interpolated_edges_by_hand() -> None:
    points = [(0.0, 100.0), (1.0, 200.0), (2.0, 200.0), (3.0, 0.0)]
    # edges: p(0.5) = 150, p(2.5) = 100; (150+200)/2*0.5 + 200*1 + (200+100)/2*0.5 = 362.5
    assert integrate_power(points, 0.5, 2.5) == pytest.approx(362.5)
    assert integrate_power(points, 0.0, 3.0) == pytest.approx(150 + 200 + 100)
    assert integrate_power(points, 1.2, 1.7) == pytest.approx(100.0)


def test_cluster_energy_joules_per_token_and_tokens_per_watt() -> None:
    series = {"head": flat("head", 100.0, 0, 10), "w1": flat("w1", 50.0, 0, 10)}
    s = summarize_point(series, 0.0, 10.0, output_tokens=1500)
    assert s["nodes"]["head"]["energy_j"] == pytest.approx(1000.0)
    assert s["energy_j"] == pytest.approx(1500.0)
    assert s["joules_per_token"] == pytest.approx(1.0)
    assert s["tokens_per_s_per_watt"] == pytest.approx((1500 / 10.0) / 150.0)
    assert s["mean_power_w"] == pytest.approx(150.0) and s["max_power_w"] == pytest.approx(150.0)
    assert s["flagged_nodes"] == [] and s["flags"] == {"throttled": [], "swapped": [], "node_lost": []}
    assert summarize_point(series, 0.0, 10.0, output_tokens=0)["joules_per_token"] is None


def test_recorded_energy_within_one_percent_of_an_independent_computation() -> None:
    readings = independent_readings()
    start, end = readings[0][0] + 0.1, readings[-1][0] - 0.1
    # Independent: sample the piecewise-linear power on a 1 ms grid and sum rectangles.
    total, steps = 0.0, int((end - start) * 1000)
    for i in range(steps):
        t = start + (i + 0.5) / 1000
        j = next(k for k in range(1, len(readings)) if readings[k][0] >= t)
        (t0, w0), (t1, w1) = readings[j - 1], readings[j]
        total += (w0 + (w1 - w0) * (t - t0) / (t1 - t0)) / 1000
    total += 0.0  # the last partial millisecond is < 1e-3 s * 700 W: inside the tolerance
    s = summarize_point({"h200": recorded()}, start, end, output_tokens=1000)
    assert s["energy_j"] == pytest.approx(total, rel=0.01)
    assert s["joules_per_token"] == pytest.approx(total / 1000, rel=0.01)
    assert s["nodes"]["h200"]["max_power_w"] == 695.81
    assert s["nodes"]["h200"]["min_sm_clock_mhz"] == 345 and s["nodes"]["h200"]["max_temp_c"] == 55


def test_throttle_flag_spans_exactly_the_capped_rows() -> None:
    samples = recorded()
    capped = [s["t"] for s in samples if s["throttle_mask"].endswith("4")]
    s = summarize_point({"h200": samples}, samples[0]["t"], samples[-1]["t"], output_tokens=10)
    (span,) = s["flags"]["throttled"]
    assert span["node"] == "h200" and span["samples"] == len(capped) == 20
    assert (span["since"], span["until"]) == (capped[0], capped[-1])
    assert "sw_power_cap" in span["why"]
    assert s["flagged_nodes"] == ["h200"]
    idle = summarize_point({"h200": samples}, samples[0]["t"], samples[20]["t"], output_tokens=10)
    assert idle["flags"]["throttled"] == []  # 345 MHz while idle (0x...1, 0 %) is not throttling


def test_a_stuck_clock_with_no_reason_bit_is_throttled_and_named() -> None:
    # GB10's reported fault: ~700 MHz of 3003 under load, mask 0x0, power limits [N/A].
    ok = flat("head", 55.0, 0, 10, sm_clock_mhz=2400.0, sm_clock_max_mhz=3003.0, util_pct=96.0,
              throttle_reasons=[])
    stuck = flat("w2", 15.0, 0, 10, sm_clock_mhz=700.0, sm_clock_max_mhz=3003.0, util_pct=96.0,
                 throttle_reasons=[])
    s = summarize_point({"head": ok, "w2": stuck}, 0.0, 10.0, output_tokens=100)
    (span,) = s["flags"]["throttled"]
    assert span["node"] == "w2" and (span["since"], span["until"]) == (0.0, 10.0)
    assert span["why"] == ["sm_clock<50% of 3003 MHz"]
    assert s["energy_j"] == pytest.approx(700.0)  # throttled points still have their energy


def test_power_at_the_enforced_cap_is_throttled() -> None:
    capped = flat("w1", 139.0, 0, 4, enforced_power_limit_w=140.0)
    assert summarize_point({"w1": capped}, 0, 4, 1)["flags"]["throttled"][0]["why"] == ["power_cap"]
    loose = FlagRules(power_cap_fraction=1.0)
    assert summarize_point({"w1": capped}, 0, 4, 1, rules=loose)["flags"]["throttled"] == []


def test_swap_growth_is_flagged_with_node_and_span() -> None:
    def mem(node: str, frees: list[int]) -> list[dict]:
        return [{"node": node, "source": "mem", "t": float(i), "swap_total_kib": 8_000_000,
                 "swap_free_kib": f} for i, f in enumerate(frees)]
    series = {
        "head": flat("head", 50, 0, 5) + mem("head", [8_000_000] * 6),
        "w3": flat("w3", 50, 0, 5) + mem("w3", [8_000_000, 8_000_000, 8_000_000, 7_000_000, 6_500_000, 6_500_000]),
    }
    s = summarize_point(series, 0.5, 5.0, output_tokens=1)
    (span,) = s["flags"]["swapped"]
    assert span["node"] == "w3" and (span["since"], span["until"]) == (3.0, 5.0)
    assert span["why"] == ["swap used grew 1500000 KiB"]


def test_a_sampler_that_died_mid_point_marks_the_node_lost() -> None:
    series = {"head": flat("head", 100, 0, 10), "w1": flat("w1", 100, 0, 4)}
    events = [{"node": "w1", "event": "sampler-exit", "t": 4.2, "why": "exit -1"}]
    s = summarize_point(series, 0.0, 10.0, output_tokens=100, events=events)
    assert s["energy_j"] is None and s["joules_per_token"] is None
    assert s["nodes"]["head"]["energy_j"] == pytest.approx(1000.0)
    assert s["nodes"]["w1"]["energy_j"] is None
    assert s["nodes"]["w1"]["energy_covered_j"] == pytest.approx(400.0 + 100 * 6)  # held flat
    lost = s["flags"]["node_lost"]
    assert {f["node"] for f in lost} == {"w1"} and s["flagged_nodes"] == ["w1"]
    assert lost[0]["since"] == 4.2 and lost[0]["until"] == 10.0 and "sampler-exit" in lost[0]["why"][0]


def test_a_gap_longer_than_the_limit_marks_the_node_lost() -> None:
    gappy = [s for s in flat("w2", 80, 0, 20) if not 6.0 < s["t"] < 13.0]
    s = summarize_point({"w2": gappy}, 0.0, 20.0, output_tokens=1)
    (span,) = s["flags"]["node_lost"]
    assert span["node"] == "w2" and (span["since"], span["until"]) == (6.0, 13.0)
    assert summarize_point({"w2": gappy}, 0.0, 20.0, 1, rules=FlagRules(gap_s=8))["flags"]["node_lost"] == []


def test_telemetry_csv_round_trip(tmp_path: Path) -> None:
    series = {"h200": recorded()[:5],
              "w1": [{"node": "w1", "source": "mem", "t": 1.5, "mem_available_kib": 10, "swap_free_kib": 3}]}
    path = write_telemetry_csv(tmp_path / "telemetry.csv", series)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["node", "source", "t"]
    back = read_telemetry_csv(path)
    assert back["w1"] == [{"source": "mem", "t": 1.5, "mem_available_kib": 10, "swap_free_kib": 3}]
    first = {k: v for k, v in series["h200"][0].items() if k != "node"}
    assert back["h200"][0] == {**first, "t": pytest.approx(first["t"], abs=1e-3)}
