"""Faults injected by the simulator are counted by kind, and none is dropped."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from bench import client
from bench.sim import SimConfig, SimServer
from testbeds.simsweep import read_requests, sweep_against_sim

pytestmark = pytest.mark.timeout(120)

KIND = {"http_error": "http_500", "cut": "stream_cut", "malformed": "malformed",
        "stall": "timeout"}


def test_faults_counted_by_kind(tmp_path: Path) -> None:
    sim = SimConfig(model="faulty", decode_base_s=0.002, prefill_base_s=0.002,
                    fail_every=5, cut_every=7, malformed_every=11, stall_every=13, stall_s=2.0)
    doc, truth = sweep_against_sim(sim, tmp_path, concurrency=[4], input_len=16, output_len=16,
                                   requests_per_point=40, warmup=0,
                                   timeouts=client.Timeouts(read_s=0.5))
    point = doc["points"][0]
    expected = collections.Counter(KIND[rec["fault"]] for rec in truth.values() if rec["fault"])
    assert sum(expected.values()) >= 12  # the run really exercised every kind
    assert set(expected) == set(KIND.values())
    assert point["failures"] == dict(expected)
    assert point["failed"] == sum(expected.values())
    assert point["completed"] + point["failed"] == point["requests"] == 40
    assert point["error_rate"] == pytest.approx(point["failed"] / 40)
    rows = read_requests(tmp_path / "faulty")
    assert len(rows) == 40
    by_rid = {r["rid"]: r for r in rows}
    for rid, rec in truth.items():
        want = KIND[rec["fault"]] if rec["fault"] else None
        assert by_rid[rid]["error_kind"] == want, (rid, rec["fault"], by_rid[rid]["error"])
    # Failed requests stay out of the latency distributions.
    assert point["ttft_ms"]["count"] == point["completed"]


def test_connection_refused_is_a_connection_error() -> None:
    from testbeds.simsweep import free_port

    async def go() -> client.RequestResult:
        async with client.make_session(1) as s:
            spec = client.RequestSpec(rid="x", model="m", prompt="hi", max_tokens=4)
            return await client.send_request(s, f"http://127.0.0.1:{free_port()}", spec)

    res = asyncio.run(go())
    assert not res.ok and res.error_kind == "connection"


def test_tokens_estimated_without_running_usage() -> None:
    """Only a final usage chunk: N is still the server's, spread over chunks, and marked."""

    async def go() -> client.RequestResult:
        async with SimServer(SimConfig(model="m", spec_tokens=2, spec_accept=1.0)) as sim:
            async with client.make_session(1) as s:
                spec = client.RequestSpec(rid="e", model="m", prompt="a b c", max_tokens=10,
                                          api="completions",
                                          extra={"stream_options": {"include_usage": True}})
                return await client.send_request(s, sim.base_url, spec)

    res = asyncio.run(go())
    assert res.ok
    assert res.output_tokens == 10
    assert res.tokens_source == "estimated"
    assert sum(res.chunk_tokens) == 10
    assert len(res.chunk_tokens) == 4  # 1 (prefill) + 3 + 3 + 3
