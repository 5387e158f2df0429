"""vLLM's own benchmark, ``vllm bench serve``, as a peer for cross-checks: one run per call
(``bench_peer``) or loaded once in a child process for many runs (``PeerBench``, whose child is
``foreign.py _peer-driver``)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import foreign
from .foreign import PEER_DONE
from .server import log_tail
from .tinymodel import SERVED_MODEL_NAME, build_model
from .venvsetup import RealVLLMError, setup, venv_bin

PEER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
PEER_RESULT = "result.json"


def peer_args(
    base_url: str, args: Sequence[str], *, endpoint: str, backend: str, model: Path, result_dir: str
) -> list[str]:
    """``vllm bench serve`` arguments: ours (target, model, where to save), then ``args``."""
    return [
        "--backend",
        backend,
        "--endpoint",
        endpoint,
        "--base-url",
        base_url,
        "--model",
        str(model),
        "--tokenizer",
        str(model),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--save-result",
        "--result-dir",
        result_dir,
        "--result-filename",
        PEER_RESULT,
        *args,
    ]


def bench_peer(
    base_url: str,
    args: Sequence[str] = (),
    *,
    endpoint: str = "/v1/chat/completions",
    backend: str = "openai-chat",
    venv: Path | None = None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Run ``vllm bench serve`` against ``base_url`` and return the JSON it saved.

    ``args`` go to ``vllm bench serve`` after ours (dataset, lengths, concurrency, ...), so they
    can override them. Each call starts the CLI anew (about 20 s of imports here); ``PeerBench``
    keeps one loaded for several runs.
    """
    venv = setup(venv)
    model = build_model(model, venv=venv)
    with tempfile.TemporaryDirectory(prefix="real-vllm-bench-") as tmp:
        cmd = [
            str(venv_bin(venv, "vllm")),
            "bench",
            "serve",
            *peer_args(base_url, args, endpoint=endpoint, backend=backend, model=model, result_dir=tmp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **PEER_ENV})
        result = Path(tmp) / PEER_RESULT
        if proc.returncode != 0 or not result.exists():
            raise RealVLLMError(
                f"`vllm bench serve` against {base_url} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        data: dict[str, Any] = json.loads(result.read_text())
        return data


@dataclass
class PeerBench:
    """``vllm bench serve`` loaded once in a child process, run as often as asked.

    Importing vLLM's benchmark takes about 20 s here, longer than a small run; with one process
    a cross-check can alternate short runs of ours and the peer's, so both see the same machine
    load. ``with PeerBench() as peer: peer.run(base_url, [...])`` returns the JSON it saved, as
    ``bench_peer`` does. The child calls ``vllm.benchmarks.serve.main`` with the same arguments
    the CLI would parse.
    """

    venv: Path | None = None
    model: Path | None = None
    proc: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    log_path: Path | None = field(default=None, init=False)

    def start(self) -> None:
        venv = setup(self.venv)
        self.model = build_model(self.model, venv=venv)
        fd, name = tempfile.mkstemp(prefix="real-vllm-peer-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(venv_bin(venv, "python")), "-P", foreign.__file__, "_peer-driver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **PEER_ENV},
            )

    def run(
        self,
        base_url: str,
        args: Sequence[str] = (),
        *,
        endpoint: str = "/v1/chat/completions",
        backend: str = "openai-chat",
    ) -> dict[str, Any]:
        if self.proc is None or self.model is None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout and self.model
        with tempfile.TemporaryDirectory(prefix="real-vllm-bench-") as tmp:
            argv = peer_args(
                base_url, args, endpoint=endpoint, backend=backend, model=self.model, result_dir=tmp
            )
            self.proc.stdin.write(json.dumps(argv) + "\n")
            self.proc.stdin.flush()
            status = None
            for line in self.proc.stdout:
                if line.startswith(PEER_DONE):
                    status = line[len(PEER_DONE) :].strip()
                    break
            result = Path(tmp) / PEER_RESULT
            if status != "ok" or not result.exists():
                tail = log_tail(self.log_path) if self.log_path else ""
                raise RealVLLMError(
                    f"`vllm bench serve` against {base_url} failed ({status or 'the process died'})"
                    f"; log {self.log_path}, last lines:\n{tail}"
                )
            data: dict[str, Any] = json.loads(result.read_text())
            return data

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> PeerBench:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

