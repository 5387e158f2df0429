"""The client's numbers against the simulated server's recorded truth (same clock, in process).

Truth per chunk is the kernel's stamp of its bytes leaving the simulator's socket (`t_sent`,
index 0), with the simulator's `perf_counter_ns()` just before the write began (`t_write`,
index 3); the client's arrival is the kernel's receive stamp of the read that brought the bytes,
and its `t_send` the start of the request's write, so none of them depends on when the shared
event loop got round to it. We hold: every measured arrival is at or after its true send and
after the start of the write (causality: a stamp from the wrong read breaks this), arrival minus
true send has median under 0.25 ms and p95 under 1 ms, TTFT minus the server's true TTFT (first
send after the request's bytes arrived) likewise; counts are exact. Typical values are a few
microseconds; the bounds leave room for a loaded 2-core CI box, where the shared loop can be
late to read and then several events share the newest stamp. Every bound is multiplied by
`GX10_TIME_SCALE` (testbeds/checks.py) and a miss says the machine's load.
"""

from __future__ import annotations

from pathlib import Path
from statistics import median

import pytest

from bench.sim import SimConfig
from bench.stats import summarize
from testbeds.checks import load_note, scaled
from testbeds.simsweep import read_requests, sweep_against_sim

pytestmark = pytest.mark.timeout(120)
MS = 1e6


def _truth_content(truth: dict, rid: str) -> list[list]:
    return [c for c in truth[rid]["chunks"] if c[2] == "content"]


@pytest.fixture(scope="module")
def mtp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, list[dict]]:
    """C=8, 3 draft tokens always accepted: every decode chunk carries 4 tokens, 10 ms apart."""
    tmp = tmp_path_factory.mktemp("acc")
    sim = SimConfig(model="acc", spec_tokens=3, spec_accept=1.0, decode_base_s=0.010,
                    decode_per_seq_s=0.0, prefill_base_s=0.020, prefill_per_token_s=0.0)
    doc, truth = sweep_against_sim(sim, tmp, concurrency=[8], input_len=32, output_len=41,
                                   requests_per_point=24, api="chat")
    rows = read_requests(Path(tmp) / "acc")
    return doc, truth, rows


def test_chunk_arrivals_follow_true_send_times(mtp_run: tuple[dict, dict, list[dict]]) -> None:
    """Per chunk: arrival - start of true send >= 0; arrival - true send median < 0.25 ms, p95 < 1."""
    doc, truth, rows = mtp_run
    errors_ms = []
    after_write_start_ms = []
    for row in rows:
        assert row["ok"], row
        assert row["timing_source"] == "kernel"
        assert row["send_source"] == "write"
        true = _truth_content(truth, row["rid"])
        assert len(true) == len(row["chunk_t_s"])
        t0 = _run_origin_ns(row, doc)
        assert truth[row["rid"]]["send_source"] == "kernel"
        for (t_sent, _, _, t_write, _), t_rel in zip(true, row["chunk_t_s"], strict=True):
            errors_ms.append((t0 + t_rel * 1e9 - t_sent) / MS)
            after_write_start_ms.append((t0 + t_rel * 1e9 - t_write) / MS)
    assert min(after_write_start_ms) >= -0.01, "a chunk was stamped before the server sent it"
    assert min(errors_ms) >= -0.01, "a chunk was stamped before its bytes left the server"
    assert abs(median(errors_ms)) < scaled(0.25), load_note()
    assert _p95(errors_ms) < scaled(1.0), load_note()


def _p95(values: list[float]) -> float:
    p95 = summarize(values)["p95"]
    assert p95 is not None, "no samples"
    return float(p95)


def _run_origin_ns(row: dict, doc: dict) -> float:
    """The run's clock origin: request rows hold seconds relative to it."""
    (point,) = [p for p in doc["points"] if p["concurrency"] == row["concurrency"]]
    return float(point["t0_perf_ns"])


def test_token_counts_equal_the_servers(mtp_run: tuple[dict, dict, list[dict]]) -> None:
    doc, truth, rows = mtp_run
    for row in rows:
        true = _truth_content(truth, row["rid"])
        assert row["chunk_tokens"] == [c[1] for c in true]
        assert row["output_tokens"] == sum(c[1] for c in true) == 41
        assert row["tokens_source"] == "usage"
    point = doc["points"][0]
    assert point["output_tokens"] == 24 * 41
    assert point["server"]["counters"]["generation_tokens"] == (24 + 8) * 41


def test_itl_is_per_token_when_chunks_carry_several(mtp_run: tuple[dict, dict, list[dict]]) -> None:
    """4 tokens per 10 ms chunk: ITL is 2.5 ms per token, ICL (per chunk) 10 ms."""
    doc, truth, _ = mtp_run
    p = doc["points"][0]
    assert p["tokens_per_chunk"]["p50"] == 4
    true_itl: list[float] = []
    true_icl: list[float] = []
    for rid, rec in truth.items():
        if "-c8-" not in rid or int(rid.rsplit("-", 1)[1]) < 8:
            continue  # warm-up requests are not in the point
        ch = [c for c in rec["chunks"] if c[2] == "content"]
        for a, b in zip(ch, ch[1:], strict=False):
            gap = (b[0] - a[0]) / MS
            true_icl.append(gap)
            true_itl.extend([gap / b[1]] * b[1])
    t_itl, t_icl = summarize(true_itl), summarize(true_icl)
    assert abs(p["itl_ms"]["p50"] - t_itl["p50"]) < 0.5
    assert abs(p["icl_ms"]["p50"] - t_icl["p50"]) < 0.5
    assert 2.0 < p["itl_ms"]["p50"] < 3.5
    assert 9.0 < p["icl_ms"]["p50"] < 13.0
    assert p["itl_ms"]["count"] == 24 * 40


def test_ttft_tpot_and_throughput_match_truth(mtp_run: tuple[dict, dict, list[dict]]) -> None:
    """TTFT never below truth, within 0.25 ms (median) / 1 ms (p95) of the server's; TPOT median
    within 0.05 ms; the tok/s window within 1 ms (a tenth of a decode step) of the true one, from
    the server's receipt of the first request to the last stream's last bytes leaving it."""
    doc, truth, rows = mtp_run
    measured = [r for r in rows if not r["warmup"]]
    # The true window: from the server's receipt of the first measured request to the moment the
    # last bytes of the last measured stream left it (not from the client's own send stamp).
    first_recv = min(truth[r["rid"]]["t_recv_ns"] - _run_origin_ns(r, doc) for r in measured) / 1e9
    last_true = 0.0
    ttft_err, ttft_vs_server, tpot_err = [], [], []
    for row in measured:
        t0 = _run_origin_ns(row, doc)
        true = _truth_content(truth, row["rid"])
        rec = truth[row["rid"]]
        assert rec["recv_source"] == "kernel"
        t_send = t0 + row["t_send_s"] * 1e9
        assert rec["t_recv_ns"] >= t_send, "the server got the request before the client sent it"
        ttft_err.append(row["ttft_ms"] - (true[0][3] - t_send) / MS)
        ttft_vs_server.append(row["ttft_ms"] - (true[0][0] - rec["t_recv_ns"]) / MS)
        tpot_err.append(row["tpot_ms"] - (true[-1][0] - true[0][0]) / MS / 40)
        last_true = max(last_true, (rec["chunks"][-1][0] - t0) / 1e9)
    assert min(ttft_err) >= 0
    assert median(ttft_err) < scaled(1.0), load_note()
    assert abs(median(ttft_vs_server)) < scaled(0.25), load_note()
    assert _p95([abs(e) for e in ttft_vs_server]) < scaled(1.0), load_note()
    assert abs(median(tpot_err)) < scaled(0.05), load_note()
    window_s = last_true - first_recv
    point = doc["points"][0]
    # A decode step is 10 ms of a ~400 ms window (2.5 %): the bound is a tenth of a step.
    assert abs(point["duration_s"] - window_s) * 1e3 < scaled(1.0), (point["duration_s"], window_s, load_note())
    assert point["output_tok_s"] == pytest.approx(24 * 41 / window_s, rel=scaled(1.0) * 1e-3 / window_s)
