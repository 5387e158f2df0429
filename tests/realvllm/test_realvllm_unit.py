"""real-vllm helpers that need no server: fingerprints, /metrics parsing, commands, lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbeds import realvllm
from testbeds.checks import timing
from testbeds.realvllm import (
    NGRAM_SPEC_CONFIG,
    RealVLLMError,
    metric_shapes,
    metric_values,
    redact,
    serve_command,
    shape_diff,
    shape_of,
    stop_group,
    write_vllm_dist_info,
)

METRICS = """\
# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny"} 4.0
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="0"} 4.0
vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="tiny",position="1"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 2.0
# TYPE python_info gauge
python_info{implementation="CPython",major="3"} 1.0
"""


def test_shape_of_keeps_types_and_list_unions() -> None:
    value = {"b": [1, 2, None], "a": {"x": 1.5, "y": True, "z": "s"}, "c": []}
    assert shape_of(value) == {
        "a": {"x": "float", "y": "bool", "z": "str"},
        "b": ["int", "null"],
        "c": [],
    }


def test_shape_diff_names_each_path() -> None:
    real = shape_of({"choices": [{"delta": {"role": "a", "content": ""}}], "usage": {"n": 1}})
    sim = shape_of({"choices": [{"delta": {"content": ""}}], "usage": {"n": 1.0}, "extra": 1})
    assert shape_diff(real, sim) == [
        '$.choices[].delta.role: missing (expected "str")',
        '$.extra: unexpected (got "int")',
        '$.usage.n: expected "int", got "float"',
    ]
    assert shape_diff(real, real) == []


def test_metric_shapes_types_and_label_names() -> None:
    got = metric_shapes(METRICS)
    assert got["vllm:spec_decode_num_drafts_total"] == {
        "type": "counter",
        "labels": ["engine", "model_name"],
    }
    assert got["vllm:spec_decode_num_accepted_tokens_per_pos_total"]["labels"] == [
        "engine",
        "model_name",
        "position",
    ]
    assert got["vllm:time_to_first_token_seconds_bucket"] == {
        "type": "histogram",
        "labels": ["engine", "le", "model_name"],
    }
    assert "python_info" not in got


def test_metric_values_by_labels() -> None:
    got = metric_values(METRICS, "vllm:spec_decode_num_accepted_tokens_per_pos_total")
    assert {dict(k)["position"]: v for k, v in got.items()} == {"0": 4.0, "1": 3.0}
    assert metric_values(METRICS, "vllm:spec_decode_num_drafts") == {}


def test_redact_hides_per_run_values_only() -> None:
    chunk = {
        "id": "chatcmpl-844dc2d4c37b1d95",
        "created": 1795718210,
        "system_fingerprint": "vllm-0.32.0-c1549101",
        "choices": [{"index": 0, "delta": {"content": "x"}}],
    }
    assert redact(chunk) == {
        "id": "chatcmpl-<hex>",
        "created": "<unix seconds>",
        "system_fingerprint": "vllm-0.32.0-<hex>",
        "choices": [{"index": 0, "delta": {"content": "x"}}],
    }


def test_serve_command_flags() -> None:
    cmd = serve_command(
        Path("/v"),
        Path("/m"),
        host="127.0.0.1",
        port=8123,
        spec="ngram",
        enforce_eager=True,
        extra_args=["--seed", "1"],
    )
    assert cmd[:3] == ["/v/bin/vllm", "serve", "/m"]
    assert "--enforce-eager" in cmd and cmd[-2:] == ["--seed", "1"]
    assert json.loads(cmd[cmd.index("--speculative-config") + 1]) == NGRAM_SPEC_CONFIG
    assert cmd[cmd.index("--served-model-name") + 1] == "tiny"
    plain = serve_command(
        Path("/v"), Path("/m"), host="127.0.0.1", port=1, spec=None, enforce_eager=False
    )
    assert "--enforce-eager" not in plain and "--speculative-config" not in plain
    with pytest.raises(RealVLLMError, match="unknown --spec"):
        serve_command(Path("/v"), Path("/m"), host="h", port=1, spec="eagle", enforce_eager=True)


def test_dist_info_answers_importlib_metadata(tmp_path: Path) -> None:
    write_vllm_dist_info(tmp_path)
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    # "+cpu" is what vLLM's platform detection looks for.
    assert out.stdout.strip() == "0.32.0+cpu"


def test_stop_group_kills_children_that_ignore_sigterm() -> None:
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('up', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    t0 = time.monotonic()
    assert stop_group(proc.pid, grace=1.0)
    # -9, or 0 when stop_group's own reaping of its child won the race with Popen.wait.
    assert proc.wait(timeout=5) in (-9, 0)
    timing(time.monotonic() - t0, 5, "stop_group of a TERM-ignoring group")
    assert _group_gone(proc.pid, within=5.0)
    assert not stop_group(proc.pid, grace=1.0)


def _group_gone(pgid: int, within: float) -> bool:
    # The orphaned grandchild is reaped by init a moment after the SIGKILL.
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text("line 1\nboom: bad flag\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    with pytest.raises(realvllm.ServerDied, match="boom: bad flag"):
        realvllm.wait_healthy(
            f"http://127.0.0.1:{realvllm.free_port()}",
            proc.pid,
            log,
            30,
            time.monotonic(),
            poll=proc.poll,
        )
