"""Readiness that generates, against the real vLLM tier: `inv launch`'s check (cluster.health
first_token) gets a token from a real `vllm serve` once /health is 200."""

from __future__ import annotations

from urllib.parse import urlparse

from cluster import health
from testbeds.realvllm import Endpoint


def test_real_vllm_generates_a_token_when_healthy(real_vllm: Endpoint) -> None:
    url = urlparse(real_vllm.base_url)
    host, port = url.hostname or "127.0.0.1", int(url.port or 80)
    assert health.probe(host, port, "/health", 5.0).state == health.READY
    got = health.first_token(host, port, real_vllm.model, timeout=120.0)
    assert got.ok and got.status == 200, got
    wrong = health.first_token(host, port, "no-such-model", timeout=60.0)
    assert not wrong.ok and wrong.status == 404, wrong  # launch reports this as the wrong model
