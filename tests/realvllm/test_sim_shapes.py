"""The simulated endpoint (bench/sim/) answers like the real vLLM 0.32 server, field by
field, on every path the harness and the cluster tasks use: `/health`, `/version`, `/v1/models`,
`/tokenize`, chat and completions streams (role chunk, content chunk with running usage,
finishing chunk, final usage chunk, `[DONE]`, and their order), whole answers, error answers,
and the `/metrics` families with their labels, speculative decoding included.

The real side is the recording in `real_vllm_shapes.json` (made from the live server by
`test_real_shapes.py`), so this module needs no server and runs in every test run. Values that
depend on the model or its tokenizer (text, token ids, prompt token counts, the version string)
are compared by type only; see `testbeds.realvllm.value_diff`. Key order inside JSON objects is
not compared (the simulator follows vLLM's anyway).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import servermetrics
from bench.sim import BackgroundSim, SimConfig
from testbeds.realvllm import NGRAM_DRAFT_TOKENS, SERVED_MODEL_NAME, compare_fingerprints, fingerprint

SHAPES_FILE = Path(__file__).with_name("real_vllm_shapes.json")
ASPECTS = ["shapes", "values", "sequences", "http", "metrics", "spec_metrics", "usage"]


def sim_fingerprint() -> dict[str, Any]:
    """The simulator's fingerprint, configured like the real test server (name, context)."""
    plain = SimConfig(model=SERVED_MODEL_NAME, max_model_len=2048)
    spec = SimConfig(model=SERVED_MODEL_NAME, max_model_len=2048, spec_tokens=NGRAM_DRAFT_TOKENS)
    with BackgroundSim(plain) as sim, BackgroundSim(spec) as sim_spec:
        return fingerprint(sim.base_url, SERVED_MODEL_NAME, spec_base_url=sim_spec.base_url)


@pytest.fixture(scope="module")
def differences() -> dict[str, list[str]]:
    recorded = json.loads(SHAPES_FILE.read_text())
    return compare_fingerprints(recorded, sim_fingerprint())


@pytest.mark.parametrize("aspect", ASPECTS)
def test_simulator_answers_like_the_real_server(
    differences: dict[str, list[str]], aspect: str
) -> None:
    assert differences[aspect] == []


def test_the_harness_reads_metrics_the_simulator_exports() -> None:
    """Every family the harness reads is exported by the real server and by the simulator."""
    recorded = json.loads(SHAPES_FILE.read_text())
    fp = sim_fingerprint()
    gauges = [names[0] for names in servermetrics.GAUGES.values()]
    for name in [*servermetrics.COUNTERS.values(), servermetrics.PER_POS, *gauges]:
        real = recorded["spec_metrics"] if name.startswith("vllm:spec_") else recorded["metrics"]
        sim = fp["spec_metrics"] if name.startswith("vllm:spec_") else fp["metrics"]
        assert name in real, f"the real server does not export {name}"
        assert sim.get(name) == real[name], name


def test_comparison_catches_a_difference() -> None:
    """The comparison is not vacuous: one wrong value, one missing key, one extra label."""
    recorded = json.loads(SHAPES_FILE.read_text())
    fp = json.loads(json.dumps(recorded))
    fp["examples"]["chat_stream"]["finishing"]["choices"][0]["finish_reason"] = "stop"
    del fp["shapes"]["completions"]["choices"][0]["stop_reason"]
    fp["metrics"]["vllm:num_requests_running"]["labels"].append("extra")
    fp["sequences"]["chat_stream_usage"] = ["role", "usage", "finish", "[DONE]"]
    found = compare_fingerprints(recorded, fp)
    assert found["values"] == [
        '$.chat_stream.finishing.choices[0].finish_reason: expected "length", got "stop"'
    ]
    assert found["shapes"] == ['$.completions.choices[].stop_reason: missing (expected "null")']
    assert len(found["metrics"]) == 1 and len(found["sequences"]) == 1
