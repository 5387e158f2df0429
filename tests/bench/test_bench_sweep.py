"""Sweep behaviour: results on disk, resume, Ctrl-C, bad input, server metrics, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench import cli, pacing, sweep
from bench.results import ResultsError, load_results, points_frame
from bench.sim import BackgroundSim, SimConfig
from bench.stats import summarize
from testbeds.simsweep import free_port, read_requests, sweep_against_sim

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
FAST = SimConfig(model="fast", decode_base_s=0.002, prefill_base_s=0.002, spec_tokens=2,
                 spec_accept=0.6, seed=3)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GX10_BENCH_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_parse_concurrency() -> None:
    assert sweep.parse_concurrency("1, 2,4") == [1, 2, 4]
    for bad, word in (("0,-1,x", "at least 1"), ("1,x", "'x'"), ("", "empty"),
                      ("2,2", "twice"), ("1.5", "'1.5'")):
        with pytest.raises(ValueError, match=word):
            sweep.parse_concurrency(bad)


def test_start_gate_spreads_a_burst_over_loop_turns() -> None:
    """20 workers freed in the same turn start at most 8 per turn, in order, and reads (any
    other callback) run in the turns between."""

    async def go() -> tuple[list[int], list[int]]:
        gate = pacing.StartGate(8)
        turn = 0
        turns_seen: list[int] = []
        order: list[int] = []

        def tick() -> None:
            nonlocal turn
            turn += 1
            if turn < 10:
                asyncio.get_running_loop().call_soon(tick)

        async def worker(i: int) -> None:
            await gate.wait()
            order.append(i)
            turns_seen.append(turn)

        asyncio.get_running_loop().call_soon(tick)
        await asyncio.gather(*(worker(i) for i in range(20)))
        return order, turns_seen

    order, turns = asyncio.run(go())
    assert order == list(range(20))
    per_turn = [turns.count(t) for t in sorted(set(turns))]
    assert max(per_turn) <= 8 and len(per_turn) >= 3


def test_stats_linear_percentiles() -> None:
    s = summarize([1, 2, 3, 4])
    assert s["p50"] == 2.5 and s["p99"] == pytest.approx(3.97) and s["count"] == 4
    assert summarize([])["p50"] is None


def test_results_document_and_frame(tmp_path: Path) -> None:
    doc, truth = sweep_against_sim(FAST, tmp_path, concurrency=[1, 3], input_len=40,
                                   output_len=12, requests_per_point=6, label="lbl")
    on_disk = load_results(tmp_path / "lbl")
    assert on_disk == json.loads(json.dumps(doc))
    for key in ("schema_version", "label", "model", "base_url", "server_version", "started_at",
                "settings", "points"):
        assert key in on_disk
    assert on_disk["server_version"] == FAST.version
    assert [p["concurrency"] for p in on_disk["points"]] == [1, 3]
    # Calibrated input: every request's prompt is exactly input_len tokens on the server.
    assert {r["prompt_tokens"] for r in truth.values()} == {40}
    assert on_disk["settings"]["input_calibrated"] is True
    df = points_frame(on_disk)
    for col in ("concurrency", "output_tok_s", "total_tok_s", "request_s", "ttft_p50_ms",
                "ttft_p99_ms", "tpot_p50_ms", "itl_p50_ms", "itl_p99_ms", "decode_tok_s_p50",
                "e2el_p50_ms", "error_rate", "goodput", "acceptance_rate",
                "acceptance_length", "completed", "failed"):
        assert col in df.columns, col
    assert list(df["completed"]) == [6, 6]
    rows = read_requests(tmp_path / "lbl")
    assert len(rows) == (1 + 6) + (3 + 6)
    assert len({r["rid"] for r in rows}) == len(rows)
    assert all(r["t_send_s"] >= 0 for r in rows)


def test_speculative_counters_and_gauges(tmp_path: Path) -> None:
    doc, truth = sweep_against_sim(FAST, tmp_path, concurrency=[2, 4], input_len=20,
                                   output_len=30, requests_per_point=8)
    rows = read_requests(tmp_path / "fast")
    assert {r["rid"] for r in rows} == set(truth)  # every request the server saw is in a point
    k = FAST.spec_tokens
    for point in doc["points"]:
        # What the simulator drafted and accepted for this point's requests (the truth, not its
        # counters); the second point's window starts on counters the first one left non-zero.
        mine = [truth[r["rid"]] for r in rows if r["concurrency"] == point["concurrency"]]
        steps = [a for rec in mine for a in rec["drafts"]]
        assert len(steps) > 20 and 0 < sum(steps) < k * len(steps)
        server = point["server"]
        counters = server["counters"]
        assert (counters["spec_drafts"], counters["spec_draft_tokens"], counters["spec_accepted_tokens"]) == (
            len(steps), k * len(steps), sum(steps))
        assert server["acceptance_rate"] == pytest.approx(sum(steps) / (k * len(steps)), rel=1e-12)
        assert server["acceptance_length"] == pytest.approx(1 + sum(steps) / len(steps), rel=1e-12)
        assert server["acceptance_per_pos"] == pytest.approx(
            [sum(a > i for a in steps) / len(steps) for i in range(k)], rel=1e-12)
        assert counters["generation_tokens"] == sum(c[1] for rec in mine for c in rec["chunks"])
        assert counters["prompt_tokens"] == sum(rec["prompt_tokens"] for rec in mine)
        assert server["gauges"]["num_requests_running"]["max"] <= point["concurrency"]


def test_absent_counters_are_absent_not_zero(tmp_path: Path) -> None:
    plain = SimConfig(model="plain", decode_base_s=0.002, prefill_base_s=0.002)
    doc, _ = sweep_against_sim(plain, tmp_path, concurrency=[2], input_len=8, output_len=8,
                               requests_per_point=4)
    server = doc["points"][0]["server"]
    assert server["acceptance_rate"] is None and server["acceptance_length"] is None
    assert server["counters"]["spec_drafts"] is None
    assert "vllm:spec_decode_num_drafts_total" in server["absent"]
    assert server["counters"]["generation_tokens"] == (2 + 4) * 8


def test_resume_skips_finished_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A point that raises (as Ctrl-C does) keeps the earlier ones; a rerun runs only the rest."""
    real = sweep.run_point
    calls: list[int] = []

    async def flaky(cfg, c, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(c)
        if c == 4 and calls.count(4) == 1:
            raise KeyboardInterrupt
        return await real(cfg, c, *a, **k)

    monkeypatch.setattr(sweep, "run_point", flaky)
    kw = dict(concurrency=[1, 2, 4], input_len=8, output_len=8, requests_per_point=4)
    with pytest.raises(KeyboardInterrupt):
        sweep_against_sim(FAST, tmp_path, **kw)
    kept = load_results(tmp_path / "fast")
    assert [p["concurrency"] for p in kept["points"]] == [1, 2]
    assert {r["concurrency"] for r in read_requests(tmp_path / "fast")} == {1, 2}
    doc, _ = sweep_against_sim(FAST, tmp_path, **kw)
    assert calls == [1, 2, 4, 4]
    assert [p["concurrency"] for p in doc["points"]] == [1, 2, 4]
    assert doc["started_at"] == kept["started_at"]
    rows = read_requests(tmp_path / "fast")
    assert collections_count(r["concurrency"] for r in rows) == {1: 5, 2: 6, 4: 8}
    # Different settings refuse to mix into the same results unless told to rerun.
    with pytest.raises(sweep.BenchError, match="output_len"):
        sweep_against_sim(FAST, tmp_path, **{**kw, "output_len": 9})
    doc, _ = sweep_against_sim(FAST, tmp_path, **{**kw, "output_len": 9, "rerun": True,
                                                  "concurrency": [1]})
    assert [p["concurrency"] for p in doc["points"]] == [1]


def collections_count(items: object) -> dict[int, int]:
    import collections

    return dict(collections.Counter(items))  # type: ignore[call-overload]


def test_ctrl_c_keeps_finished_points_and_rerun_resumes(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "bench", "--demo", "--results-dir", str(tmp_path),
            "--concurrency", "1,2,3", "--requests", "3", "--warmup", "0", "--output-len",
            "60", "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    results = tmp_path / "demo" / "results.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not results.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    kept = load_results(results)
    assert 1 <= len(kept["points"]) < 3
    done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    doc = load_results(results)
    assert [p["concurrency"] for p in doc["points"]] == [1, 2, 3]
    assert doc["points"][0] == kept["points"][0]
    assert "skipping [1" in (tmp_path / "demo" / "bench.log").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--concurrency", "0,-1,x"], "concurrency 0 must be at least 1"),
    (["--concurrency", "1,x"], "'x' is not a positive integer"),
    (["--base-url", "localhost:8000"], "is not http(s)://"),
    (["--base-url", "UNREACHABLE"], "cannot reach"),
    (["--model", "nope"], "model 'nope' is not served"),
])
def test_bad_input_one_line_and_nothing_on_disk(tmp_path: Path, argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with BackgroundSim(SimConfig(model="served")) as sim:
        base = ["--base-url", sim.base_url, "--model", "served", "--results-dir",
                str(tmp_path / "res")]
        args = base + argv
        if "UNREACHABLE" in args:
            args[args.index("UNREACHABLE")] = f"http://127.0.0.1:{free_port()}"
        rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "res").exists()


def test_load_results_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no results file"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not readable JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"points": []}')
    with pytest.raises(ResultsError, match="schema_version"):
        load_results(tmp_path / "results.json")


def test_simserver_standalone_load_delay() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.sim", "--host", "127.0.0.1",
                             "--port", str(port), "--model", "solo", "--load-delay", "1.0"],
                            env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        codes = []
        for _ in range(40):
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    codes.append(r.status)
                    break
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
            time.sleep(0.1)
        assert codes[0] == 503 and codes[-1] == 200
        with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
            assert json.load(r)["data"][0]["id"] == "solo"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
