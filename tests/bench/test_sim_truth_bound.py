"""The simulator keeps only the newest `truth_keep` truth records: a long soak stays flat."""

from __future__ import annotations

import json
import urllib.request

from bench.sim import BackgroundSim, SimConfig


def test_truth_keeps_only_the_newest_records() -> None:
    with BackgroundSim(SimConfig(model="m", truth_keep=3)) as sim:
        for i in range(7):
            req = urllib.request.Request(
                f"{sim.base_url}/v1/completions", method="POST",
                data=json.dumps({"model": "m", "prompt": "a b c", "max_tokens": 2}).encode(),
                headers={"Content-Type": "application/json", "X-Request-Id": f"r{i}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        truth = sim.truth()
    assert list(truth) == ["r4", "r5", "r6"]
    assert all(truth[k]["status"] == 200 for k in truth)
