"""The provenance card against the real vLLM server: the HTTP facts are the server's own, and the
command line the tool's container scan finds for a real `vllm serve` process is what it runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

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


def test_card_records_the_real_serve_command_line(real_vllm: Endpoint, tmp_path: Path) -> None:
    """The scan cluster/provenance.py runs inside the head's container (`/proc/*/cmdline`, the
    `vllm serve` line), run here on the real server's machine: it finds the real process, and
    the card keeps that line as the command line."""
    from cluster.provenance import SERVE_SCAN
    scan = SERVE_SCAN.removesuffix(" | head -n1")
    assert scan != SERVE_SCAN
    port = str(urlsplit(real_vllm.base_url).port)
    lines = subprocess.run(["sh", "-c", scan], capture_output=True, text=True, timeout=30).stdout.splitlines()
    ours = [ln.strip() for ln in lines if f"--port {port} " in ln + " "]  # other real servers may run here
    assert len(ours) == 1, lines
    line = ours[0]
    assert " serve " in line and f"--served-model-name {real_vllm.model}" in line, line
    cfg = SweepConfig(base_url=real_vllm.base_url, model=real_vllm.model, results_dir=tmp_path,
                      concurrency=[1], input_len=16, output_len=4, requests_per_point=2,
                      cluster_facts={"command_line": line})
    card = run_sweep(cfg, progress=False)["provenance"]  # type: ignore[typeddict-item]
    assert card["command_line"] == line and "command_line" not in card["unknown"]
    assert card["http"]["version"] and "+sim" not in card["http"]["version"]
