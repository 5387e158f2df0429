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


def test_reproduce_md_holds_results_json_numbers_and_ids(tmp_path: Path) -> None:
    import json

    from bench import report
    from bench.reproduce import bench_command
    facts = _facts("sha256:" + "c" * 64)
    facts["nodes"][0]["versions"] = {"torch": "2.9.0", "vllm": "0.11.1"}
    sweep_against_sim(SIM, tmp_path, cluster_facts=facts, **{**KW, "concurrency": [1, 2]})
    on_disk = json.loads((tmp_path / "prov" / "results.json").read_text())
    rendered = report.render(on_disk, tmp_path / "out", "sim")
    text = (rendered.folder / "reproduce.md").read_text()
    for node in on_disk["provenance"]["nodes"]:
        assert f"| {node['host']} | vllm-node:latest | {node['image_id']} |" in text
    assert "torch 2.9.0, vllm 0.11.1" in text
    assert "```\nvllm serve prov --port 8000\n```" in text
    assert bench_command(on_disk) in text and "--concurrency 1,2" in text
    for p in on_disk["points"]:
        assert (f"| {p['concurrency']} | {p['completed']} | {p['output_tok_s']!r} | "
                f"{p['ttft_ms']['p50']!r} | {p['tpot_ms']['p50']!r} |") in text
    assert "0.33.1+sim" in text and on_disk["provenance"]["tool"]["commit"] in text
    from bench.plots import caption_lines
    caption = " ".join(caption_lines([report.run_view(on_disk, "sim")]))
    assert "image cccccccccccc" in caption and "vLLM 0.33.1+sim" in caption
    assert "repeats 1" in caption and on_disk["started_at"][:10] in caption


def test_a_failed_recheck_is_recorded_and_the_points_are_kept(tmp_path: Path) -> None:
    from bench.hooks import SweepHooks

    class Unreachable(SweepHooks):
        def regather(self) -> dict:
            raise OSError("head unreachable")

    doc, _ = sweep_against_sim(SIM, tmp_path, cluster_facts=_facts("sha256:" + "a" * 64),
                               hooks=Unreachable(), **KW)
    assert [p["concurrency"] for p in doc["points"]] == [1]
    assert doc["provenance_recheck_error"] == "OSError: head unreachable"  # type: ignore[typeddict-item]
    assert "provenance_changed" not in doc
