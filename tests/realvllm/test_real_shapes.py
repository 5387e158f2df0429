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

from testbeds.checks import skip_or_fail
from testbeds.realvllm import Endpoint, compare_fingerprints, fingerprint

from test_sim_shapes import ASPECTS, sim_fingerprint  # isort: skip

pytestmark = pytest.mark.realvllm

SHAPES_FILE = Path(__file__).with_name("real_vllm_shapes.json")


def shapes_problem(update: bool, exists: bool) -> str | None:
    """Why the live server cannot be compared with the recording this run, or None."""
    if update:
        return (f"GX10_UPDATE_SHAPES is set: {SHAPES_FILE.name} is rewritten from the live server, "
                "nothing is compared (review the diff; unset it to check)")
    if not exists:
        return f"{SHAPES_FILE.name} is missing; record it with GX10_UPDATE_SHAPES=1"
    return None


def test_live_server_matches_the_recording_and_the_simulator(
    real_vllm: Endpoint, real_vllm_spec: Endpoint
) -> None:
    reason = shapes_problem(update=bool(os.environ.get("GX10_UPDATE_SHAPES")), exists=SHAPES_FILE.exists())
    live = fingerprint(real_vllm.base_url, real_vllm.model, spec_base_url=real_vllm_spec.base_url)
    if reason:
        # Recording the live server and comparing it with itself checks nothing: record, then
        # skip (fail under CI, where a recording must never be made or be missing).
        if not os.environ.get("CI"):
            SHAPES_FILE.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
        skip_or_fail(reason)
    recorded = json.loads(SHAPES_FILE.read_text())
    # The recording is the real server, so against it every aspect must be empty, metrics
    # included in both directions (a family vLLM added or dropped shows here).
    assert {k: v for k, v in compare_fingerprints(recorded, live).items() if v} == {}
    assert set(recorded["metrics"]) == set(live["metrics"])
    sim = compare_fingerprints(live, sim_fingerprint())
    assert {k: sim[k] for k in ASPECTS if sim[k]} == {}
