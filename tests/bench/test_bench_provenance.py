"""The provenance card against the simulated endpoint: what HTTP gives, what is unknown, and a
resume that refuses to mix setups, naming what changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.provenance import CLUSTER_FIELDS, parse_info_metrics
from bench.sim import SimConfig
from testbeds.simsweep import sweep_against_sim

pytestmark = pytest.mark.timeout(120)
SIM = SimConfig(model="prov", version="0.33.1+sim", max_model_len=4096, decode_base_s=0.002)
KW = dict(concurrency=[1], input_len=8, output_len=4, requests_per_point=2)


def _facts(image_id: str) -> dict:
    return {"nodes": [{"host": "spark1", "image_tag": "vllm-node:latest", "image_id": image_id},
                      {"host": "spark2", "image_tag": "vllm-node:latest",
                       "image_id": "sha256:" + "2" * 64}],
            "launcher": {"commit": "abc123"}, "recipe": {"path": "r.yaml", "sha256": "f" * 64},
            "command_line": "vllm serve prov --port 8000", "mods": [], "weights": None}


def test_parse_info_metrics() -> None:
    text = ('# HELP vllm:cache_config_info x\n'
            'vllm:cache_config_info{block_size="16",cache_dtype="auto"} 1.0\n'
            'vllm:num_requests_running{model_name="m"} 0.0\n')
    assert parse_info_metrics(text) == {
        "vllm:cache_config_info": {"block_size": "16", "cache_dtype": "auto"}}


def test_bare_url_card_records_http_and_names_the_unknown(tmp_path: Path) -> None:
    doc, _ = sweep_against_sim(SIM, tmp_path, **KW)
    card = doc["provenance"]  # type: ignore[typeddict-item]
    assert card["http"]["version"] == "0.33.1+sim"
    assert card["http"]["model"]["id"] == "prov" and card["http"]["model"]["max_model_len"] == 4096
    assert card["http"]["metrics_info"] is not None
    assert card["unknown"] == list(CLUSTER_FIELDS) and card["source"].startswith("http only")
    assert card["bench_settings"]["seed"] == 0 and card["tool"]["version"]
    assert "provenance_changed" not in doc


def test_resume_refuses_another_image_and_another_server(tmp_path: Path) -> None:
    old = "sha256:" + "a" * 64
    new = "sha256:" + "b" * 64
    doc, _ = sweep_against_sim(SIM, tmp_path, cluster_facts=_facts(old), **KW)
    assert doc["provenance"]["nodes"][0]["image_id"] == old  # type: ignore[typeddict-item]
    assert doc["provenance"]["unknown"] == ["weights"]  # type: ignore[typeddict-item]
    more = {**KW, "concurrency": [1, 2]}
    with pytest.raises(BenchError, match=f"image ID on spark1: {old} -> {new}.*--rerun"):
        sweep_against_sim(SIM, tmp_path, cluster_facts=_facts(new), **more)
    other = SimConfig(**{**SIM.__dict__, "version": "0.34.0+sim"})
    with pytest.raises(BenchError, match=r"server version: 0\.33\.1\+sim -> 0\.34\.0\+sim"):
        sweep_against_sim(other, tmp_path, cluster_facts=_facts(old), **more)
    # the same setup resumes, and --rerun starts a new run on the new image
    doc, _ = sweep_against_sim(SIM, tmp_path, cluster_facts=_facts(old), **more)
    assert [p["concurrency"] for p in doc["points"]] == [1, 2]
    doc, _ = sweep_against_sim(SIM, tmp_path, cluster_facts=_facts(new), rerun=True, **more)
    assert doc["provenance"]["nodes"][0]["image_id"] == new  # type: ignore[typeddict-item]
