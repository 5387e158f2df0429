"""``vllm serve`` of the tiny model on loopback: the command and environment, ``RealVLLM`` (start,
wait for ``/health`` while watching the process, stop the whole process group), and the small
stdlib HTTP helpers the checks use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..ports import free_port
from .tinymodel import SERVED_MODEL_NAME, build_model
from .venvsetup import RealVLLMError, setup, tcmalloc_path, venv_bin

NGRAM_DRAFT_TOKENS = 3
NGRAM_SPEC_CONFIG = {
    "method": "ngram",
    "num_speculative_tokens": NGRAM_DRAFT_TOKENS,
    "prompt_lookup_max": 4,
    "prompt_lookup_min": 2,
}
SPEC_CONFIGS = {"ngram": NGRAM_SPEC_CONFIG}
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class ServerDied(RealVLLMError):
    """The vllm serve process exited before it became healthy."""


class ServerTimeout(RealVLLMError):
    """The vllm serve process did not become healthy before the deadline."""


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post_json(url: str, payload: dict[str, Any], timeout: float = 120.0) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def sse_events(url: str, payload: dict[str, Any], timeout: float = 120.0) -> list[str]:
    """POST a streaming request; return every ``data:`` payload in order, ``[DONE]`` included."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                events.append(line[len("data:") :].strip())
    return events


def healthy(base_url: str) -> bool:
    try:
        return http_get(f"{base_url}/health", timeout=2.0)[0] == 200
    except OSError:
        return False


def serve_command(
    venv: Path,
    model: Path,
    *,
    host: str,
    port: int,
    spec: str | None,
    enforce_eager: bool,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [
        str(venv_bin(venv, "vllm")),
        "serve",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--served-model-name",
        SERVED_MODEL_NAME,
    ]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if spec is not None:
        if spec not in SPEC_CONFIGS:
            raise RealVLLMError(f"unknown --spec {spec!r}; known: {', '.join(SPEC_CONFIGS)}")
        cmd += ["--speculative-config", json.dumps(SPEC_CONFIGS[spec])]
    return cmd + list(extra_args)


def server_env() -> dict[str, str]:
    env = {**os.environ, **SERVER_ENV}
    lib = tcmalloc_path()
    if lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def stop_group(pid: int, grace: float = 20.0) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``grace`` s; True if it was alive."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class Endpoint:
    """What a client needs: the base URL (no trailing slash) and the served model name."""

    base_url: str
    model: str


@dataclass
class RealVLLM:
    """``vllm serve`` of the tiny model on loopback, as a context manager.

    ``with RealVLLM(spec="ngram") as srv: srv.endpoint.base_url`` sets up (cached), builds the
    model (cached), starts the server, waits for ``/health``, and stops the whole process group
    on exit.
    """

    port: int | None = None
    spec: str | None = None
    host: str = "127.0.0.1"
    enforce_eager: bool = True
    extra_args: Sequence[str] = ()
    startup_timeout: float = 600.0
    log_path: Path | None = None
    venv: Path | None = None
    model: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    time_to_healthy: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.base_url, SERVED_MODEL_NAME)

    def start(self) -> float:
        """Start the server and return the seconds it took to answer ``/health`` with 200."""
        venv = setup(self.venv)
        model = build_model(self.model, venv=venv)
        if self.port is None:
            self.port = free_port(self.host)
        if healthy(self.base_url):
            raise RealVLLMError(f"something already answers on {self.base_url}; pick another port")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"real-vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        cmd = serve_command(
            venv,
            model,
            host=self.host,
            port=self.port,
            spec=self.spec,
            enforce_eager=self.enforce_eager,
            extra_args=self.extra_args,
        )
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            # Its own session, so stop() can signal vLLM's engine-core children with it.
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env(),
                start_new_session=True,
            )
        self.time_to_healthy = wait_healthy(
            self.base_url,
            self.proc.pid,
            self.log_path,
            self.startup_timeout,
            t0,
            poll=self.proc.poll,
        )
        return self.time_to_healthy

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is not None:
            stop_group(self.proc.pid, grace)
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> RealVLLM:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(
    base_url: str,
    pid: int,
    log_path: Path,
    timeout: float,
    t0: float,
    poll: Any = None,
) -> float:
    """Poll ``/health`` while watching the process; return seconds since ``t0``."""
    deadline = t0 + timeout
    while True:
        if healthy(base_url):
            return time.monotonic() - t0
        exited = poll() is not None if poll else not pid_alive(pid)
        if exited:
            raise ServerDied(
                f"vllm serve (pid {pid}) for {base_url} exited before it was healthy; "
                f"log {log_path}, last lines:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop_group(pid)
            raise ServerTimeout(
                f"vllm serve (pid {pid}) for {base_url} not healthy after {timeout:.0f} s; "
                f"stopped it. Log {log_path}, last lines:\n{log_tail(log_path)}"
            )
        time.sleep(0.5)


