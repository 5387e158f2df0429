"""The real server's fingerprint, live: it must match the recording in `real_vllm_shapes.json`
(which `test_sim_shapes.py` holds the simulator to), and the simulator, asked the same requests
in the same run, must match it too. `GX10_UPDATE_SHAPES=1` rewrites the recording from the live
server (do it after a vLLM upgrade, and review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbeds.realvllm import Endpoint, compare_fingerprints, fingerprint

from test_sim_shapes import ASPECTS, sim_fingerprint  # isort: skip

pytestmark = pytest.mark.realvllm

SHAPES_FILE = Path(__file__).with_name("real_vllm_shapes.json")


def test_live_server_matches_the_recording_and_the_simulator(
    real_vllm: Endpoint, real_vllm_spec: Endpoint
) -> None:
    live = fingerprint(real_vllm.base_url, real_vllm.model, spec_base_url=real_vllm_spec.base_url)
    if os.environ.get("GX10_UPDATE_SHAPES") or not SHAPES_FILE.exists():
        if os.environ.get("CI") and not SHAPES_FILE.exists():
            pytest.fail(f"{SHAPES_FILE.name} is missing; record it with GX10_UPDATE_SHAPES=1")
        SHAPES_FILE.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(SHAPES_FILE.read_text())
    # The recording is the real server, so against it every aspect must be empty, metrics
    # included in both directions (a family vLLM added or dropped shows here).
    assert {k: v for k, v in compare_fingerprints(recorded, live).items() if v} == {}
    assert set(recorded["metrics"]) == set(live["metrics"])
    sim = compare_fingerprints(live, sim_fingerprint())
    assert {k: sim[k] for k in ASPECTS if sim[k]} == {}
