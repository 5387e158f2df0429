"""Servers for the command line (``scripts/real-vllm serve|stop|status``) that outlive the
process that started them: one state file per port under the cache."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .server import RealVLLM, pid_alive, stop_group
from .venvsetup import RealVLLMError, cache_dir


def state_dir() -> Path:
    return cache_dir() / "run"


@dataclass(frozen=True)
class ServerState:
    port: int
    pid: int
    log: str
    spec: str | None
    started: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _state_file(port: int) -> Path:
    return state_dir() / f"port-{port}.json"


def running_servers() -> list[ServerState]:
    if not state_dir().exists():
        return []
    return [
        ServerState(**json.loads(p.read_text())) for p in sorted(state_dir().glob("port-*.json"))
    ]


def serve_detached(
    port: int,
    spec: str | None,
    enforce_eager: bool,
    extra_args: Sequence[str],
    timeout: float = 600.0,
) -> tuple[ServerState, float]:
    """Start a server that outlives this process; record it under ``state_dir()``."""
    f = _state_file(port)
    if f.exists() and not pid_alive(ServerState(**json.loads(f.read_text())).pid):
        f.unlink()  # it died on its own; the record is stale
    if f.exists():
        raise RealVLLMError(
            f"a real-vllm server is recorded on port {port}; `stop --port {port}` first"
        )
    srv = RealVLLM(
        port=port,
        spec=spec,
        enforce_eager=enforce_eager,
        extra_args=extra_args,
        startup_timeout=timeout,
    )
    state_dir().mkdir(parents=True, exist_ok=True)
    srv.log_path = state_dir() / f"port-{port}.log"
    try:
        took = srv.start()
    except BaseException:
        srv.stop()  # a crashed API server can leave engine processes behind in its group
        raise
    assert srv.proc is not None
    state = ServerState(port, srv.proc.pid, str(srv.log_path), spec, time.time())
    _state_file(port).write_text(json.dumps(state.__dict__))
    return state, took


def stop_detached(port: int, grace: float = 20.0) -> bool:
    f = _state_file(port)
    if not f.exists():
        return False
    state = ServerState(**json.loads(f.read_text()))
    stop_group(state.pid, grace)
    f.unlink()
    return True


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total_kib, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024
