"""The provenance card against the real vLLM server: the HTTP facts are the server's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.provenance import CLUSTER_FIELDS
from bench.sweep import SweepConfig, run_sweep
from testbeds.realvllm import Endpoint, http_get

pytestmark = pytest.mark.realvllm


def test_card_records_the_real_version_and_model(real_vllm: Endpoint, tmp_path: Path) -> None:
    status, body = http_get(real_vllm.base_url + "/version")
    assert status == 200
    truth = json.loads(body)["version"]
    cfg = SweepConfig(base_url=real_vllm.base_url, model=real_vllm.model, results_dir=tmp_path,
                      concurrency=[1], input_len=16, output_len=4, requests_per_point=2)
    doc = run_sweep(cfg, progress=False)
    card = doc["provenance"]  # type: ignore[typeddict-item]
    assert card["http"]["version"] == truth and "+sim" not in truth
    assert card["http"]["model"]["id"] == real_vllm.model
    assert card["http"]["model"]["max_model_len"] > 0
    assert "vllm:cache_config_info" in card["http"]["metrics_info"]
    assert card["unknown"] == list(CLUSTER_FIELDS)
