"""Test-side helpers for the stand-in launcher: install it on the simulated head with the test
images, reset the cluster to a clean slate, edit recipes, and look at containers and the record.

This file stays on the control node; only `repo/` is copied to the head.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from . import GENERATIONS_DIR, IMAGES_DIR
from . import REPO_DIR as LAUNCHER

PROJECT = LAUNCHER.parents[2]
REPO = "/root/spark-vllm-docker"  # testbeds/clustertool.py's cluster.launcher_repo
RECORD = "/root/.gx10-ops/serving.json"
RECIPES = {"qwen": "recipes/4x-spark-cluster/qwen3.5-397b-a17b-fp8-mtp.yaml",
           "nemotron": "recipes/4x-spark-cluster/nemotron-3-ultra-nvfp4.yaml"}
HF = {"qwen": "Qwen/Qwen3.5-397B-A17B-FP8", "nemotron": "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4"}
IMAGES = {"vllm-node-mimo": "5.0.0", "vllm-node": "4.57.1"}  # image -> transformers it reports
FABRIC_IF, IB_IF = "fab0", "rocep1s0f1"  # the simulated nodes' fabric port; an HCA name (no RDMA here)
PRIVATE = ("/root", "/srv", "/run", "/tmp")  # mounted per node: invisible across nodes
# The commit date each generation's stand-in checkout carries (jan26: the real 74c02c3's).
GENERATION_DATES = {"seed": "2026-06-02T18:04:11+00:00", "jan26": "2026-01-28T13:25:02-08:00",
                    "current": "2026-07-21T09:30:00+00:00"}
GENERATIONS = tuple(GENERATION_DATES)
# which scripts of repo/ a generation's own set replaces or lacks
REPLACED = ("build-and-copy.sh", "launch-cluster.sh", "run-recipe.sh")


class NoNodePython(RuntimeError):
    """No Python the simulated nodes can run with this project importable."""


def node_python() -> tuple[str, str]:
    """(python, PYTHONPATH) for the head. Each node has a private /root, so a venv whose
    interpreter lives there (pyenv) is replaced by the system Python of the same version with
    the venv's site-packages on PYTHONPATH."""
    exe = Path(sys.executable).resolve()
    site = sysconfig.get_paths()["purelib"]
    if not str(exe).startswith(PRIVATE):
        return sys.executable, f"{site}:{PROJECT}"
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        raise NoNodePython(f"no Python the simulated nodes can run ({exe} is under a private mount, "
                           f"and there is no {system})")
    return str(system), f"{site}:{PROJECT}"


def each_node(sim: Any, cmd: str) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(len(sim.node_names)) as pool:
        return dict(zip(sim.node_names, pool.map(lambda n: sim.node_run(n, cmd), sim.node_names), strict=True))


def install(sim: Any, generation: str = "seed") -> None:
    """Both models' test images on every node (one ID each), the stand-in repo on the head with
    its `.env` (nodes by fabric address, head first) and `standin.env` (the Python to run)."""
    node_python()  # raises NoNodePython before anything is built
    for image, transformers in IMAGES.items():
        sim.build_test_image("head", image, transformers=transformers)
        sim.distribute_test_image(image)
    install_repo(sim, generation)


def install_repo(sim: Any, generation: str = "seed", *, interfaces: bool = True) -> None:
    """Only the stand-in repo on the head, with its `.env` and `standin.env` (no images).

    The checkout is one `generation` of the launcher (seed, jan26, current): repo/ (the shared
    Python stand-in, recipes, the seed's relaunch wrappers), the build files of images/, then
    generations/<generation>/ (that generation's scripts), committed as a git checkout dated
    like that generation so the launcher detection reads a commit and a date. `interfaces`:
    `.env` also sets ETH_IF/IB_IF (without them a launch needs ibdev2netdev, as upstream)."""
    if generation not in GENERATION_DATES:
        raise ValueError(f"unknown launcher generation {generation!r}: one of {', '.join(GENERATIONS)}")
    python, pythonpath = node_python()
    nodes = ",".join(sim.nodes[n].fabric for n in sim.node_names)
    own = GENERATIONS_DIR / generation
    date = GENERATION_DATES[generation]
    sim.node_run("head", (
        f"rm -rf {REPO} && cp -r {LAUNCHER} {REPO} && rm -rf {REPO}/__pycache__ && cd {REPO} && "
        f"rm -f {' '.join(REPLACED)} && cp {IMAGES_DIR}/Dockerfile {IMAGES_DIR}/Dockerfile.mimo-runtime "
        f"{IMAGES_DIR}/standin-torch {GENERATIONS_DIR}/standin-build-lib.sh . && cp -p {own}/* . && "
        "printf '.env\nstandin.env\nwheels/\n.wheel-cache/\nstandin-release/\n' > .gitignore && "
        "git init -q && git add -A && "
        f"GIT_AUTHOR_DATE={date} GIT_COMMITTER_DATE={date} git -c user.name=standin "
        f"-c user.email=standin@example.invalid commit -q -m 'stand-in launcher: {generation} generation'"),
        check=True)
    sim.node_run("head", f"cat > {REPO}/.env", check=True, input=(
        f"CLUSTER_NODES={nodes}\nLOCAL_IP={sim.nodes['head'].fabric}\nCONTAINER_NAME=vllm_node\n"
        + (f"ETH_IF={FABRIC_IF}\nIB_IF={IB_IF}\n" if interfaces else "")))
    sim.node_run("head", f"cat > {REPO}/standin.env", check=True,
                 input=f"PYTHON={python}\nexport PYTHONPATH={pythonpath}\n")


def wheel_dir(generation: str, wheel: str) -> str:
    """Where a generation's build looks for `wheel`, relative to the repo."""
    if generation == "current":
        kind = "flashinfer" if wheel.startswith("flashinfer") else "vllm"
        return f".wheel-cache/{kind}/regular"
    return "wheels"


def install_wheels(sim: Any, generation: str, wheels: list[str]) -> None:
    """Stand-in wheel files (a line of text each) where `generation` keeps them: `wheels/` for
    seed and jan26, `.wheel-cache/{flashinfer,vllm}/regular/` with `.PREFIX-commit` markers for
    current; whatever wheels were there before are gone."""
    cmds = [f"cd {REPO}", "rm -rf wheels .wheel-cache standin-release"]
    for w in wheels:
        d = wheel_dir(generation, w)
        # dated like the seed's pin (d20260603), before any release a test publishes
        cmds.append(f"mkdir -p {d} && echo stand-in {w} > {d}/{w} && touch -d '2026-06-03 12:00' {d}/{w}")
    if generation == "current":
        cmds += ["mkdir -p .wheel-cache/flashinfer/regular .wheel-cache/vllm/regular",
                 "echo 0f1e2d3 > .wheel-cache/flashinfer/regular/.flashinfer-commit",
                 "echo ace95c9cf > .wheel-cache/vllm/regular/.vllm-commit"]
    sim.node_run("head", " && ".join(cmds), check=True)


def publish_release(sim: Any, prefix: str, wheels: list[str], *, newer: bool = True) -> None:
    """Make the stand-in's "GitHub release" for `prefix` (flashinfer, vllm) hold `wheels`,
    last modified after (`newer`) or before the local wheels: what the real script downloads."""
    tag = f"prebuilt-{prefix}-current"
    stamp = "1 minute ago" if newer else "2026-01-01 00:00"  # a release is never from the future
    cmds = [f"cd {REPO}", f"rm -rf standin-release/{tag}", f"mkdir -p standin-release/{tag}"]
    for w in wheels:
        cmds.append(f"echo release {w} > standin-release/{tag}/{w} && touch -d '{stamp}' standin-release/{tag}/{w}")
    sim.node_run("head", " && ".join(cmds), check=True)


def uninstall(sim: Any) -> None:
    """Remove what `install`, the launches and staging left: containers, images, weights, repo."""
    reset(sim)
    each_node(sim, "podman rmi -f " + " ".join(IMAGES) + " >/dev/null 2>&1; rm -rf "
              + " ".join(f"/srv/models/{h}" for h in HF) + "; true")
    sim.node_run("head", f"rm -rf {REPO} /root/.gx10-ops /root/.cache/gx10-standin")


def containers(sim: Any, status: bool = True) -> dict[str, list[str]]:
    """node -> `name image [status]` of every container there."""
    fmt = "{{.Names}} {{.Image}}" + (" {{.Status}}" if status else "")
    out = each_node(sim, f"podman ps -a --format '{fmt}'")
    return {n: [line for line in r.stdout.splitlines() if line.strip()] for n, r in out.items()}


def record(sim: Any) -> dict[str, Any] | None:
    r = sim.node_run("head", f"cat {RECORD}")
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None


def api_listener(sim: Any) -> int | None:
    """The pid holding port 8000 on the head, if any."""
    out = sim.node_run("head", "ss -Hltnp 'sport = :8000'").stdout
    if "pid=" not in out:
        return None
    return int(out.split("pid=", 1)[1].split(",", 1)[0])


def set_recipe(sim: Any, model: str, *, load_delay: float | None = None, env: dict[str, Any] | None = None,
               drop: str | None = None) -> None:
    """Write the head's recipe for `model`: the pristine one with these changes."""
    data = yaml.safe_load((LAUNCHER / RECIPES[model]).read_text())
    if load_delay is not None:
        data["defaults"]["load_delay"] = load_delay
    if env:
        data["env"] = env
    if drop:
        del data[drop]
    sim.node_run("head", f"cat > {REPO}/{RECIPES[model]}", input=yaml.safe_dump(data), check=True)


def reset(sim: Any) -> None:
    """No serving container anywhere, no launch record, pristine recipes, port 8000 free."""
    # one name per call: podman 4.3 removes nothing when one of several names is missing
    each_node(sim, "podman rm -f -t 0 vllm_node >/dev/null 2>&1; podman rm -f -t 0 stray >/dev/null 2>&1; true")
    sim.node_run("head", f"rm -f {RECORD}; cp {LAUNCHER}/recipes/4x-spark-cluster/*.yaml "
                 f"{REPO}/recipes/4x-spark-cluster/ 2>/dev/null; true")
    deadline = time.monotonic() + 10
    while api_listener(sim) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
