"""Drive the real tool against the simulated cluster: write its config, run `inv` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parent.parent


def tool_config(sim: Any, tmp: Path, **overrides: Any) -> Path:
    """A site config for the simulated cluster (what an operator writes for the real one)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "workspace").mkdir(exist_ok=True)
    cluster: dict[str, Any] = {
        "head": {"name": "head", "mgmt": sim.nodes["head"].mgmt, "fabric": sim.nodes["head"].fabric},
        "workers": [{"name": w, "mgmt": sim.nodes[w].mgmt, "fabric": sim.nodes[w].fabric} for w in sim.workers],
        "ssh": {"user": "root", "key": str(sim.control_key), "known_hosts": str(sim.known_hosts),
                "connect_timeout": 3},
        "model_root": "/srv/models",
        "launcher_repo": "/root/spark-vllm-docker",
        "disk": {"reserve_gib": 0},
    }
    data: dict[str, Any] = {
        "cluster": cluster,
        "control": {"workspace": str(tmp / "workspace"), "image_backup_dir": str(tmp / "backups"),
                    "results_dir": str(tmp / "results"), "ops_log": str(tmp / "results" / "operations.log")},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        target = data.setdefault(section, {})
        if name:
            target[name] = value
        else:
            data[section] = value
    path = tmp / "gx10.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def inv(config: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`inv -f CONFIG ARGS...` in the project, as a subprocess; stdout and stderr captured."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(PROJECT), "-f", str(config), *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL,
    )


def make_model(root: Path, hf_id: str, files: int = 40, big: tuple[int, ...] = (3_000_000, 2_000_000)) -> Path:
    """A small model folder: many small config/index files and a few large random shards."""
    d = root / hf_id
    (d / "nested").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (d / ("nested" if i % 5 == 0 else ".") / f"config-{i}.json").write_text(f'{{"i": {i}}}\n')
    for i, size in enumerate(big):
        (d / f"model-{i:05d}.safetensors").write_bytes(os.urandom(size))
    return d


def procs_on(sim: Any, node: str, *words: bytes) -> list[str]:
    """Command lines of the processes inside simulated `node` (its network namespace) whose
    arguments contain every one of `words`: what is still running there."""
    ns = os.stat(f"/run/netns/{sim.layout.netns(node)}").st_ino
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != ns:
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(any(w in a for a in argv) for w in words):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def gone_soon(sim: Any, nodes: list[str], *words: bytes, within: float) -> list[str]:
    """Wait up to `within` s for no process matching `words` on `nodes`; return what is left."""
    deadline = time.monotonic() + within
    while True:
        left = [p for n in nodes for p in procs_on(sim, n, *words)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)

