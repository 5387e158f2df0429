"""Open-loop (request-rate) load, goodput, the max-rate search, the reasoning split, the exports,
and bad input, against the embedded simulated endpoint (docs/metrics.md, "Request-rate load").

Arrival distribution: the Kolmogorov-Smirnov statistic of the gaps between the client's actual
sends (socket writes, so the client's own jitter is in) against the exponential (Poisson) or
gamma CDF the run asked for, below the 1 % critical value 1.628 / sqrt(n); the same gaps
against a wrong distribution must exceed it, so the check can fail.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import arrivals, export, openloop
from bench.results import load_results
from bench.sim import BackgroundSim, SimConfig, SimServer
from bench.sweep import SweepConfig
from testbeds.checks import scaled
from testbeds.simsweep import read_requests, sweep_against_sim

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
SIM = SimConfig(model="ol", decode_base_s=0.003, prefill_base_s=0.002, seed=5)


def _rate_run(tmp: Path, sim_cfg: SimConfig, load: openloop.RateLoad,
              **sweep: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    with BackgroundSim(sim_cfg) as sim:
        cfg = SweepConfig(base_url=sim.base_url, model=sim_cfg.model, results_dir=tmp, **sweep)
        doc = openloop.run_rate_sweep(cfg, load, progress=False)
        return dict(doc), sim.truth()


def _gaps(rows: list[dict[str, Any]], rate: float) -> list[float]:
    sends = sorted(r["t_send_s"] for r in rows if r["request_rate"] == rate)
    return [b - a for a, b in zip(sends, sends[1:], strict=False)]


def test_parse_rates_and_goodput() -> None:
    assert arrivals.parse_rates("1, 2.5,4") == [1.0, 2.5, 4.0]
    for bad, word in (("0", "positive"), ("-1", "positive"), ("x", "not a number"),
                      ("", "empty"), ("2,2", "twice"), ("inf", "positive finite")):
        with pytest.raises(ValueError, match=word):
            arrivals.parse_rates(bad)
    assert arrivals.parse_goodput("ttft:500 tpot:50") == {"ttft": 500.0, "tpot": 50.0}
    assert arrivals.parse_goodput("ttft:0.5s,e2el:900ms") == {"ttft": 500.0, "e2el": 900.0}
    for bad, word in (("ttft", "KEY:VALUE"), ("itl:5", "not one of"), ("ttft:5,ttft:6", "twice"),
                      ("ttft:abc", "KEY:VALUE"), ("", "empty")):
        with pytest.raises(ValueError, match=word):
            arrivals.parse_goodput(bad)


def test_schedule_is_seeded_and_lands_on_n_over_rate() -> None:
    a = arrivals.schedule(500, 20.0, 1.0, seed=3)
    assert a == arrivals.schedule(500, 20.0, 1.0, seed=3)
    assert a != arrivals.schedule(500, 20.0, 1.0, seed=4)
    assert math.isclose(a[-1], 500 / 20.0)
    even = arrivals.schedule(10, 4.0, math.inf)
    assert all(math.isclose(b - a_, 0.25) for a_, b in zip(even, even[1:], strict=False))


def test_gamma_cdf_matches_known_values() -> None:
    # Exponential, and the Erlang-2 closed form 1 - e^-x (1 + x).
    assert math.isclose(arrivals.gamma_cdf(1.0, 1.0, 1.0), 1 - math.exp(-1))
    for x in (0.1, 1.0, 3.0):
        assert math.isclose(arrivals.gamma_cdf(x, 2.0, 1.0), 1 - math.exp(-x) * (1 + x),
                            rel_tol=1e-9)


@pytest.mark.parametrize("burstiness", [1.0, 0.5])
def test_arrivals_match_the_requested_process(tmp_path: Path, burstiness: float) -> None:
    rate, n = 40.0, 240
    doc, _ = _rate_run(tmp_path, SIM, openloop.RateLoad(rates=[rate], burstiness=burstiness),
                       input_len=16, output_len=8, requests_per_point=n, warmup=0)
    point = doc["points"][0]
    assert point["mode"] == "rate" and point["request_rate"] == rate
    assert point["completed"] == n
    # Achieved arrival rate: the schedule ends on N / rate exactly, so only the first gap and
    # the client's lateness move it.
    assert abs(point["achieved_rate"] / rate - 1) < 0.05, point["achieved_rate"]
    rows = read_requests(tmp_path / "ol")
    assert all(r["t_scheduled_s"] is not None and "send_lateness_ms" in r for r in rows)
    gaps = _gaps(rows, rate)
    shape, scale = burstiness, 1 / (rate * burstiness)
    d = arrivals.ks_statistic(gaps, lambda x: arrivals.gamma_cdf(x, shape, scale))
    crit = arrivals.ks_critical(len(gaps), 0.01)
    assert d < crit, f"KS D {d:.3f} >= {crit:.3f} for burstiness {burstiness}"
    # The same test rejects a process the run did not ask for (it can fail).
    wrong = 4.0 if burstiness < 1 else 0.25
    d_wrong = arrivals.ks_statistic(gaps, lambda x: arrivals.gamma_cdf(x, wrong, 1 / (rate * wrong)))
    assert d_wrong > crit, f"KS D {d_wrong:.3f} against shape {wrong} should exceed {crit:.3f}"
    # Lateness per point agrees with the rows, and is reported with its p50/p99/max.
    late = sorted(r["send_lateness_ms"] for r in rows if not r["warmup"])
    assert point["send_lateness_ms"]["max"] == pytest.approx(late[-1])
    assert point["send_lateness_ms"]["p99"] is not None


def test_goodput_equals_the_fraction_within_slo_from_requests_jsonl(tmp_path: Path) -> None:
    sim = SimConfig(model="ol", decode_base_s=0.004, prefill_base_s=0.002, fail_every=9, seed=2)
    doc, _ = _rate_run(tmp_path, sim, openloop.RateLoad(rates=[20.0, 60.0]), input_len=16,
                       output_len=8, requests_per_point=80, slo_ttft_ms=100.0, slo_tpot_ms=20.0)
    rows = read_requests(tmp_path / "ol")
    for point in doc["points"]:
        mine = [r for r in rows if r["request_rate"] == point["request_rate"] and not r["warmup"]]
        good = [r for r in mine if r["ok"] and r["ttft_ms"] <= 100.0
                and (r["tpot_ms"] is None or r["tpot_ms"] <= 20.0)]
        assert len(mine) == point["requests"] == 80
        assert point["goodput_frac"] == len(good) / len(mine)
        assert 0 < point["goodput_frac"] < 1, point["goodput_frac"]  # failures count against it
        assert point["goodput"] == pytest.approx(len(good) / point["duration_s"])
        assert point["meets_slo"] is False  # 1 in 9 failed: under the 95 % target


def test_max_rate_search_bisects_within_its_budget() -> None:
    # A synthetic monotone server: rates up to 13 meet the SLOs.
    seen: dict[float, bool] = {1.0: True, 4.0: True}
    probes = []
    while (rate := openloop.next_probe(seen, 0.1)) is not None and len(probes) < 10:
        probes.append(rate)
        seen[rate] = rate <= 13.0
    lo, hi = openloop.bracket(seen)
    assert probes[:3] == [8.0, 16.0, 12.0]
    assert lo is not None and hi is not None and lo <= 13.0 < hi and hi - lo <= 0.1 * lo
    assert len(probes) <= 6


def test_search_against_the_sim_names_a_rate_that_met(tmp_path: Path) -> None:
    # One engine slot of ~30 ms per request: above ~30 req/s requests queue and TTFT explodes.
    sim = SimConfig(model="ol", decode_base_s=0.004, prefill_base_s=0.002, max_batch=1, seed=1)
    doc, _ = _rate_run(tmp_path, sim, openloop.RateLoad(rates=[5.0, 80.0], search=True,
                                                        search_probes=3),
                       input_len=16, output_len=8, requests_per_point=40, slo_ttft_ms=60.0)
    search = doc["max_rate_search"]
    assert len(search["probes"]) <= 3
    by_rate = {p["request_rate"]: p for p in doc["points"]}
    assert by_rate[80.0]["meets_slo"] is False
    assert search["max_rate"] is not None and by_rate[search["max_rate"]]["meets_slo"] is True


def test_reasoning_split_matches_the_simulators_truth(tmp_path: Path) -> None:
    sim = SimConfig(model="think", reasoning_tokens=7, spec_tokens=2, spec_accept=0.6,
                    decode_base_s=0.004, prefill_base_s=0.002, seed=4)
    doc, truth = sweep_against_sim(sim, tmp_path, concurrency=[2], input_len=16, output_len=20,
                                   requests_per_point=8)
    rows = [r for r in read_requests(tmp_path / "think") if not r["warmup"]]
    assert rows and all(r["ok"] for r in rows)
    for r in rows:
        rec = truth[r["rid"]]
        assert rec["reasoning_tokens"] == 7
        assert r["reasoning_tokens"] == 7 and r["answer_tokens"] == r["output_tokens"] - 7
        kinds = [c for c in rec["chunks"] if c[2] in ("reasoning", "content")]
        first_r = next(c for c in kinds if c[2] == "reasoning")
        first_a = next(c for c in kinds if c[2] == "content")
        assert sum(c[1] for c in kinds if c[2] == "reasoning") == 7
        true_ttfr = (first_r[0] - rec["t_recv_ns"]) / 1e6
        true_ttfa = (first_a[0] - rec["t_recv_ns"]) / 1e6
        assert abs(r["ttfr_ms"] - true_ttfr) < scaled(2.0), (r["ttfr_ms"], true_ttfr)
        assert abs(r["ttfa_ms"] - true_ttfa) < scaled(2.0), (r["ttfa_ms"], true_ttfa)
        assert r["ttfa_ms"] > r["ttfr_ms"]
    split = doc["points"][0]["reasoning"]
    assert split["reasoning_tokens"]["mean"] == 7
    assert split["answer_tokens"]["mean"] == 13
    # The CLI table and the report's table show the split where present.
    from bench.cli import summary_table
    from bench.ratetable import rate_table
    assert "TTFR p50" not in rate_table({**doc, "points": []})
    assert "reasoning" in summary_table(doc).lower() or "TTFR" in summary_table(doc)


def test_no_reasoning_means_no_split(tmp_path: Path) -> None:
    doc, _ = sweep_against_sim(SIM, tmp_path, concurrency=[1], input_len=8, output_len=6,
                               requests_per_point=2)
    assert "reasoning" not in doc["points"][0]
    assert all("reasoning_tokens" not in r for r in read_requests(tmp_path / "ol"))


def _num(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        return float(text)


def test_csv_numbers_equal_results_json(tmp_path: Path) -> None:
    doc, _ = _rate_run(tmp_path, SIM, openloop.RateLoad(rates=[10.0, 30.0]), input_len=16,
                       output_len=8, requests_per_point=20, slo_ttft_ms=50.0)
    folder = tmp_path / "ol"
    from bench import report
    report.render(load_results(folder), folder, "test hardware")
    with (folder / export.CSV_FILE).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["points"]) == 2
    checked = 0
    for row, p in zip(rows, sorted(doc["points"], key=lambda p: p["request_rate"]), strict=True):
        assert _num(row["request_rate"]) == p["request_rate"]
        for key in ("output_tok_s", "goodput", "goodput_frac", "achieved_rate", "duration_s"):
            assert _num(row[key]) == p[key], key
            checked += 1
        for dist in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "send_lateness_ms"):
            for stat in export.STATS:
                assert _num(row[f"{dist}_{stat}"]) == p[dist][stat], f"{dist}_{stat}"  # type: ignore[literal-required]
                checked += 1
        assert _num(row["client_loop_lag_ms_p99"]) == p["client"]["loop_lag_ms"]["p99"]
        assert _num(row["ttft_p99_ms"]) == p["ttft_ms"]["p99"]
    assert checked > 80
    # The llama-benchy report: its schema's required keys, values from the same requests.
    bench = json.loads((folder / export.BENCHY_JSON).read_text())
    for key in ("version", "timestamp", "latency_mode", "latency_ms", "model",
                "prefix_caching_enabled", "max_concurrency", "benchmarks"):
        assert key in bench
    run = bench["benchmarks"][0]
    for key in ("concurrency", "context_size", "prompt_size", "response_size",
                "is_context_prefill_phase"):
        assert key in run
    assert run["prompt_size"] == 16 and run["response_size"] == 8
    assert run["e2e_ttft"]["mean"] == pytest.approx(doc["points"][0]["ttft_ms"]["mean"])
    assert len(run["e2e_ttft"]["values"]) == doc["points"][0]["completed"]
    md = (folder / export.BENCHY_MD).read_text()
    assert md.startswith("| model | test | t/s (total) | t/s (req) |") and "pp16" in md
    assert (folder / "goodput_vs_rate.png").exists() and (folder / "latency_vs_rate.png").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GX10_BENCH_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)


@pytest.mark.parametrize("args, word", [
    (("--request-rate", "0"), "request rate '0' must be a positive"),
    (("--request-rate", "-2"), "request rate '-2' must be a positive"),
    (("--request-rate", "1,abc"), "'abc' is not a number"),
    (("--request-rate", "2", "--burstiness", "0"), "burstiness"),
    (("--request-rate", "2", "--goodput", "ttft=500"), "argument --goodput"),
    (("--request-rate", "2", "--goodput", "itl:5"), "argument --goodput"),
    (("--goodput", "ttft:fast"), "argument --goodput"),
    (("--request-rate", "2", "--find-max-rate"), "needs SLOs"),
])
def test_bad_rate_and_slo_input_is_one_line_before_anything_is_sent(
        tmp_path: Path, args: tuple[str, ...], word: str) -> None:
    async def go() -> tuple[subprocess.CompletedProcess[str], int]:
        async with SimServer(SimConfig(model="bad")) as sim:
            proc = await asyncio.to_thread(
                _cli, "--base-url", sim.base_url, "--model", "bad", "--results-dir",
                str(tmp_path), "--no-progress", *args)
            return proc, sim._arrivals + len(sim.truth)

    proc, arrivals_seen = asyncio.run(go())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], proc.stderr
    assert arrivals_seen == 0
    assert not (tmp_path / "bad").exists()
