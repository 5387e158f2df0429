"""Stand-in for eugr/spark-vllm-docker's run-recipe / launch-cluster, for the simulated cluster.

It does on the nodes what the real launcher does, with the nodes' real container engine:

* `run-recipe.sh RECIPE [-d] [-n NODES] [--name C] [--master-port P] [--port P] [-t IMAGE] [-e K=V]`
  loads the recipe (name, recipe_version, container, command required), renders `command` with
  `str.format` from `defaults` plus overrides, and, when the image is missing on the head, asks
  `Build now? [y/N]` on stdin like the real one (with stdin closed: "Aborting.", exit 1).
* `launch-cluster.sh [-n NODES] [-t IMAGE] [--name C] [--master-port P] [-e K=V] [-d]
  [--launch-script FILE] start|stop|status` checks every node holds the image with one ID, skips
  the launch when the container already runs somewhere (as the real one does), then
  `docker run -d --privileged --gpus all --ipc=host --rm --network host --name C ...` on the head
  and, over the fabric with `ssh`, on every worker. `stop` is `docker stop C` everywhere.
* The engine: the busybox test images have no Python, so the rendered command (the project's
  simulated vLLM endpoint, or any server such as a real `vllm serve`) runs as a head process
  under a supervisor tied to the containers' life, as `docker exec vllm_node vllm serve` is:
  its output goes to a file the head container tails, so `docker logs C` on the head shows it;
  when the head container goes, the engine is killed; when a worker's container goes, the engine
  logs a Ray-style error and dies while the head container stays up (the real failure mode).
  If the engine dies on its own, the containers stay up, serving nothing (upstream issue #257).

Worker containers print Ray-like loading lines for `STANDIN_LOAD_S` seconds (default: the
recipe's `load_delay`). Fault injection through the recipe's `env`, passed to every container:
`STANDIN_FAIL_NODE=<hostname>` makes that node's container print `STANDIN_FAIL_MESSAGE` (default
a CUDA out-of-memory traceback) after `STANDIN_FAIL_AFTER_S` seconds and exit 1.

Configuration the real launcher keeps in `.env` (CLUSTER_NODES, LOCAL_IP, CONTAINER_NAME) is read
from `.env` beside this file; `standin.env` names the Python that runs this file and the engine.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent
STATE = Path.home() / ".cache" / "gx10-standin"
GEN = os.environ.get("STANDIN_GENERATION", "seed")  # seed | jan26 | current: see docs/launcher.md
SSH = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
OOM = (
    "Traceback (most recent call last):\n"
    '  File "/usr/local/lib/python3.12/dist-packages/vllm/worker/worker.py", line 212, in load_model\n'
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 119.70 GiB of which 1.02 GiB is free."
)

# The containers' main processes. `trap` makes SIGTERM end them at once (PID 1 has no default
# handler), so `docker stop` / `docker rm -f` do not wait for the engine's kill timeout.
HEAD_SCRIPT = """trap 'exit 0' TERM INT
if [ "$STANDIN_BACKEND" = ray ]; then
  echo "Starting Ray head node on $HOST_IP (port $MASTER_PORT)"
  echo "Ray runtime started. Local node IP: $HOST_IP"
else
  echo "torch.distributed rank 0 on $HOST_IP: master $HOST_IP:$MASTER_PORT"
fi
tail -n +1 -F /standin/engine.log 2>/dev/null &
wait"""

WORKER_SCRIPT = """trap 'exit 0' TERM INT
if [ "$STANDIN_BACKEND" = ray ]; then
  echo "[$NODE_NAME] ray start --address=$HEAD_IP:$MASTER_PORT --node-ip-address=$HOST_IP"
  echo "[$NODE_NAME] Ray runtime started."
  who="RayWorkerWrapper pid=$$, ip=$HOST_IP"
else
  echo "[$NODE_NAME] headless worker: torch.distributed master $HEAD_IP:$MASTER_PORT"
  who="Worker_$NODE_NAME pid=$$, ip=$HOST_IP"
fi
n=${STANDIN_LOAD_S:-2}; i=0
while [ "$i" -lt "$n" ]; do
  i=$((i+1))
  echo "($who) Loading safetensors checkpoint shards: $i/$n"
  if [ "$STANDIN_FAIL_NODE" = "$NODE_NAME" ] && [ "$i" -gt "${STANDIN_FAIL_AFTER_S:-1}" ]; then
    printf '%s\\n' "$STANDIN_FAIL_MESSAGE"
    echo "($who) worker process died, exit code 1"
    exit 1
  fi
  sleep 1
done
echo "($who) Model loading took 1.23 GiB and $n.0 seconds"
while :; do sleep 1; done"""


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key.strip()] = value.strip().strip("\"'")
    return env


def say(message: str) -> None:
    print(message, flush=True)


def docker(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          stdin=subprocess.DEVNULL)


def on_node(node: str, local: bool, command: str) -> subprocess.CompletedProcess[str]:
    argv = ["sh", "-c", command] if local else [*SSH, node, command]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def on_nodes(nodes: list[str], command: str) -> list[subprocess.CompletedProcess[str]]:
    """The same command on every node (the first is this one, the head), in parallel: the real
    launcher goes node by node; the simulated nodes share two CPUs and every ssh costs ~0.4 s."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(lambda i: on_node(nodes[i], i == 0, command), range(len(nodes))))


# -- run-recipe ------------------------------------------------------------------------------
def out(message: str) -> None:
    """run-recipe.py's own lines: plain print(), block-buffered into a pipe as upstream's are,
    so they land after the child scripts' output unless PYTHONUNBUFFERED is set."""
    print(message)


def run_recipe(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run-recipe.sh")
    p.add_argument("recipe")
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-n", "--nodes")
    p.add_argument("-t", "--container", dest="image")
    p.add_argument("--name", dest="container_name")
    p.add_argument("--master-port", "--head-port", type=int, dest="master_port")
    p.add_argument("--port", type=int)
    p.add_argument("--host")
    p.add_argument("--eth-if")
    p.add_argument("--ib-if")
    p.add_argument("-e", "--env", action="append", default=[], dest="env_vars")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--setup", action="store_true")
    if GEN == "current":
        p.add_argument("--ray", action="store_true")
    p.add_argument("--no-ray", action="store_true")
    args, extra = p.parse_known_args(argv)
    path = Path(args.recipe)
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        out(f"Error: Recipe not found: {args.recipe}")
        return 1
    recipe = yaml.safe_load(path.read_text())
    for key in ("name", "recipe_version", "container", "command"):
        if key not in recipe:
            out(f"Error: Recipe missing required field: {key}")
            return 1
    out(f"Recipe: {recipe['name']}")
    image = args.image or recipe["container"]  # container = args.container_override or recipe["container"]
    params: dict[str, Any] = {**recipe.get("defaults", {}), "python": read_env(REPO / "standin.env")["PYTHON"],
                              "model": recipe.get("model") or ""}
    for key in ("port", "host"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    try:
        command = recipe["command"].format(**params).strip()
    except KeyError as e:
        out(f"Error: Missing parameter in recipe command: {e}")
        return 1
    if extra and extra[0] == "--":
        extra = extra[1:]
    command = " ".join([command, *map(shlex.quote, extra)])
    rec_env = {str(k): str(v) for k, v in (recipe.get("env") or {}).items()}
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in rec_env.items())
    if args.dry_run:
        out(f"=== Generated Launch Script ===\n{exports}{command}")
        return 0
    if docker("image", "inspect", image).returncode != 0:
        out(f"Container image '{image}' not found locally.\n\nOptions:\n  1. Use --setup to build and run\n"
            f"  2. Build manually: ./build-and-copy.sh -t {image}\n")
        if not args.setup:
            sys.stdout.flush()
            answer = input("Build now? [y/N] ")  # bare input(), as upstream: closed stdin is an EOFError
            if answer.strip().lower() != "y":
                out("Aborting.")
                return 1
        out("Error: the stand-in cannot build images")
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    script = STATE / "launch-script.sh"
    script.write_text(f"#!/bin/bash\n# Generated from recipe: {recipe['name']}\n{exports}{command}\n")
    rec_env.setdefault("STANDIN_LOAD_S", str(int(float(params.get("load_delay", 2)) + 0.999)))
    if "STANDIN_FAIL_NODE" in rec_env:
        rec_env.setdefault("STANDIN_FAIL_MESSAGE", OOM)
    env = [f"{k}={v}" for k, v in rec_env.items()]
    cmd = [str(REPO / "launch-cluster.sh"), "-t", image, "--launch-script", str(script)]
    for flag, value in (("-n", args.nodes), ("--name", args.container_name), ("--master-port", args.master_port),
                        ("--eth-if", args.eth_if), ("--ib-if", args.ib_if)):
        if value:  # --name only when given: launch-cluster.sh then decides (its .env CONTAINER_NAME)
            cmd += [flag, str(value)]
    for mod in recipe.get("mods") or []:
        cmd += ["--apply-mod", str(REPO / mod)]
    if getattr(args, "ray", False):
        cmd.append("--ray")
    if args.no_ray:
        cmd.append("--no-ray")
    if args.daemon:
        cmd.append("-d")
    out(f"launch-cluster.sh {shlex.join(cmd[1:])} (and {len(env) + len(args.env_vars)} -e variables)")
    for var in [*env, *args.env_vars]:
        cmd += ["-e", var]
    return subprocess.call([*cmd, "exec"], stdin=subprocess.DEVNULL)


# -- launch-cluster --------------------------------------------------------------------------
# where the launch script is copied inside every container (upstream: $CONTAINER_EXEC_SCRIPT)
EXEC_SCRIPT = "/workspace/launch-script.sh"
# a process in each container whose command line is what that node received (busybox has no
# `exec -a`; `; :` keeps sh from exec'ing away its arguments)
HOLD = "sleep 2147483647; :"
_DIST_ARGS = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+|--(?:nnodes|node-rank|master-addr|master-port)"
                        r"(?:=|\s+)\S+|--headless")
_BACKEND_ARG = re.compile(r"--distributed-executor-backend(?:=|\s+)\S+")


def local_addresses() -> set[str]:
    r = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True)
    return {f.split("/")[0] for line in r.stdout.splitlines() for f in line.split()[3:4]}


def detect_interfaces(eth_if: str, ib_if: str) -> bool:
    """autodiscover.sh: nothing to do when both are set, else it needs ibdev2netdev."""
    if eth_if and ib_if:
        return True
    if shutil.which("ibdev2netdev") is None:
        say("Error: ibdev2netdev not found. Cannot auto-detect interfaces.")
        return False
    return True


def node_command(base: str, backend: str, nnodes: int, rank: int, head: str, port: int) -> str:
    """What one node's container runs. no-Ray: the backend flag stripped, then `--nnodes N
    --node-rank R --master-addr HEAD --master-port P` (`--headless` on workers); Ray: the head
    gets `--distributed-executor-backend ray` when a `vllm serve` line names no backend."""
    if backend == "no-ray":
        lines = [ln for ln in _BACKEND_ARG.sub("", base).splitlines() if ln.strip(" \\")]
        extra = f"--nnodes {nnodes} --node-rank {rank} --master-addr {head} --master-port {port}"
        if rank > 0:
            extra += " --headless"
        lines[-1] = lines[-1].rstrip(" \\") + " " + extra
        return "\n".join(lines)
    if re.search(r"(^|\s)vllm\s+serve(\s|$)", base) and not _BACKEND_ARG.search(base):
        return base.rstrip(" \\\n") + " --distributed-executor-backend ray"
    return base


def launch_cluster(argv: list[str]) -> int:
    reads_env = GEN != "jan26"  # 74c02c3 reads no .env (autodiscover.sh only)
    env = read_env(REPO / ".env") if reads_env else {}
    p = argparse.ArgumentParser(prog="launch-cluster.sh")
    p.add_argument("-n", "--nodes", default="")
    p.add_argument("-t", dest="image", default="vllm-node")
    p.add_argument("--name", default="")
    p.add_argument("--master-port", "--head-port", type=int, default=29501)
    p.add_argument("--eth-if", default="")
    p.add_argument("--ib-if", default="")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--apply-mod", action="append", default=[], dest="mods")
    p.add_argument("-d", action="store_true", dest="daemon")
    p.add_argument("--launch-script")
    if GEN != "jan26":
        p.add_argument("--no-ray", action="store_true")
    if GEN == "current":
        p.add_argument("--ray", action="store_true")
    p.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status", "exec"])
    args = p.parse_args(argv)
    ray_flag, no_ray_flag = getattr(args, "ray", False), getattr(args, "no_ray", False)
    if ray_flag and no_ray_flag:
        say("Error: --ray and --no-ray are mutually exclusive.")
        return 1
    backend = ("ray" if ray_flag else "no-ray") if GEN == "current" else ("no-ray" if no_ray_flag else "ray")
    nodes_arg = args.nodes or env.get("CLUSTER_NODES", "")  # CLI wins
    name = args.name if args.name not in ("", "vllm_node") else env.get("CONTAINER_NAME") or "vllm_node"
    port = args.master_port
    if port == 29501 and env.get("MASTER_PORT"):
        port = int(env["MASTER_PORT"])
    eth_if, ib_if = args.eth_if or env.get("ETH_IF", ""), args.ib_if or env.get("IB_IF", "")
    for mod in args.mods:
        if not Path(mod).exists():
            say(f"Error: Mod path '{mod}' does not exist.")
            return 1
        if Path(mod).is_dir() and not (Path(mod) / "run.sh").is_file():
            say(f"Error: Mod directory '{mod}' must contain 'run.sh'.")
            return 1
    if not detect_interfaces(eth_if, ib_if):
        return 1
    nodes = [n.strip() for n in nodes_arg.split(",") if n.strip()]
    if not nodes:
        say("Error: Nodes argument (-n) is mandatory or could not be auto-detected.")
        return 1
    local_ip = env.get("LOCAL_IP") or next((n for n in nodes if n in local_addresses()), "")
    if local_ip not in nodes:
        say(f"Error: Local IP ({local_ip}) is not in the list of nodes ({nodes_arg}).")
        return 1
    head, workers = local_ip, [n for n in nodes if n != local_ip]  # order free: head = LOCAL_IP
    nodes = [head, *workers]
    say(f"Head Node: {head}\nWorker Nodes: {' '.join(workers)}\nContainer Name: {name}\n"
        f"Image Name: {args.image}\nAction: {args.action}")
    c = shlex.quote(name)
    if args.action == "stop":
        return stop(nodes, name)
    is_running = f"docker ps --format '{{{{.Names}}}}' | grep -qx {c}"
    if args.action == "status":
        for i, (node, r) in enumerate(zip(nodes, on_nodes(nodes, is_running), strict=True)):
            say(f"[{'HEAD' if i == 0 else 'WORKER'}] {node}: Container '{name}' is "
                f"{'RUNNING' if r.returncode == 0 else 'NOT running'}.")
        return 0
    # one round over ssh: reachability, the image's ID, a running container
    probe = f"echo OK; docker image inspect --format '{{{{.Id}}}}' {shlex.quote(args.image)}; {is_running} && echo RUNNING"
    probed = on_nodes(nodes, probe)
    say("Checking SSH connectivity to worker nodes...")
    for w, r in zip(workers, probed[1:], strict=True):
        if not r.stdout.startswith("OK"):
            say(f"Error: Passwordless SSH to {w} failed.")
            return 1
        say(f"  SSH to {w}: OK")
    ids, running = {}, []
    for node, r in zip(nodes, probed, strict=True):
        words = r.stdout.split()[1:]
        ids[node] = words[0] if words and words[0] != "RUNNING" else None
        if "RUNNING" in words:
            running.append(node)
    for node in running:
        where = f"head node ({node})" if node == head else f"worker node ({node})"
        say(f"Warning: Container '{name}' is already running on {where}.")
    script = Path(args.launch_script).read_text() if args.launch_script else ""
    if running:
        # start_cluster returns at once; the exec below still runs: the script already in the container
        say("Cluster containers are already running. Skipping launch.")
        old = docker("exec", name, "cat", EXEC_SCRIPT)
        script = old.stdout if old.returncode == 0 else script
    else:
        if GEN == "current" and workers and not image_consistent(args.image, head, workers, ids):
            return 1
        if not start_containers(args, nodes, name, port, backend, eth_if, ib_if):
            return 1
        if script:  # no-Ray: each node its own patched script; Ray: the head only
            targets = nodes if backend == "no-ray" else [head]
            copied = [copy_script(node, i == 0, name, node_command(script, backend, len(nodes), i, head, port))
                      for i, node in enumerate(targets)]
            if not all(copied):
                return 1
    if args.action == "start" and not script:
        if args.daemon:
            say("Cluster started in background (Daemon mode).")
            return 0
        say("Cluster started. Tailing logs from head node...\nPress Ctrl+C to stop the cluster.")
        return subprocess.call(["docker", "logs", "-f", name])
    return exec_command(nodes, name, script, backend, port, args.daemon)


def image_consistent(image: str, head: str, workers: list[str], ids: dict[str, str | None]) -> bool:
    """verify_cluster_image_consistency (current generation only)."""
    say("Verifying Docker image consistency across cluster nodes...")
    if not ids[head]:
        say(f"Error: Could not inspect image '{image}' on head node ({head}).")
        return False
    say(f"  [HEAD] {head}: {ids[head]}")
    bad = False
    for w in workers:
        if not ids[w]:
            say(f"Error: Could not inspect image '{image}' on worker node ({w}).")
            bad = True
        elif ids[w] != ids[head]:
            say(f"Error: Docker image mismatch on worker node ({w}):\n       Head:   {ids[head]}\n       Worker: {ids[w]}")
            bad = True
        else:
            say(f"  [WORKER] {w}: {ids[w]} (match)")
    if bad:
        say(f"Error: Cluster launch aborted because image '{image}' is not in sync.")
        return False
    say("Docker image consistency check passed.")
    return True


def env_flags(node: str, eth_if: str, ib_if: str) -> str:
    """get_env_flags: the node's own address and the interfaces NCCL/Gloo use."""
    pairs = [f"VLLM_HOST_IP={node}", f"RAY_NODE_IP_ADDRESS={node}", f"NCCL_SOCKET_IFNAME={eth_if}",
             f"NCCL_IB_HCA={ib_if}", f"GLOO_SOCKET_IFNAME={eth_if}", f"HOST_IP={node}"]
    return " ".join(f"-e {shlex.quote(x)}" for x in pairs)


def start_containers(args: argparse.Namespace, nodes: list[str], name: str, port: int, backend: str,
                     eth_if: str, ib_if: str) -> bool:
    head, workers = nodes[0], nodes[1:]
    c = shlex.quote(name)
    extra = " ".join(f"-e {shlex.quote(e)}" for e in args.env)
    run = (f"docker run -d --privileged --gpus all --ipc=host --rm --network host --name {c} "
           f"-e NCCL_IGNORE_CPU_AFFINITY=1 {extra} -e HEAD_IP={shlex.quote(head)} "
           f"-e MASTER_PORT={port} -e STANDIN_BACKEND={backend}")
    state = STATE / name
    state.mkdir(parents=True, exist_ok=True)
    (state / "engine.log").write_text("")
    say(f"Starting Head Node on {head}...")
    for w in workers:
        say(f"Starting Worker Node on {w}...")
    head_run = (f"{run} {env_flags(head, eth_if, ib_if)} -e NODE_NAME=$(hostname) "
                f"-v {shlex.quote(str(state))}:/standin {shlex.quote(args.image)} sh -c {shlex.quote(HEAD_SCRIPT)}")
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # the real one goes node by node
        started = list(pool.map(lambda i: on_node(nodes[i], i == 0, head_run if i == 0 else (
            f"{run} {env_flags(nodes[i], eth_if, ib_if)} -e NODE_NAME=$(hostname) "
            f"{shlex.quote(args.image)} sh -c {shlex.quote(WORKER_SCRIPT)}")), range(len(nodes))))
    for node, r in zip(nodes, started, strict=True):
        if r.returncode != 0:
            say(f"Error: docker run failed on {node}: {r.stderr.strip()}")
            return False
    if args.mods:
        say("Applying modifications to cluster nodes...")
        for i, node in enumerate(nodes):
            for mod in args.mods:
                if not apply_mod(node, i == 0, name, Path(mod)):
                    stop(nodes, name)
                    return False
    if backend == "ray":
        say(f"Starting Ray HEAD node on {head}...")
        for w in workers:
            say(f"Starting Ray WORKER node on {w}...")
        say("Waiting for cluster to be ready...")
    for node, r in zip(nodes, on_nodes(nodes, f"docker inspect --format '{{{{.State.Running}}}}' {c}"), strict=True):
        if r.stdout.strip() != "true":
            say(f"Timeout waiting for cluster to start: {name} is not running on {node}.")
            return False
    if backend == "ray":
        say("Cluster head is responsive.")
    return True


def apply_mod(node: str, local: bool, name: str, mod: Path) -> bool:
    """apply_mod_to_container: the mod's files into /workspace/mods/<name>, then its run.sh."""
    dest = f"/workspace/mods/{mod.name}"
    say(f"Applying mod {mod.name} to {node}...")
    files = "".join(f"mkdir -p {shlex.quote(dest)}/$(dirname {shlex.quote(str(f.relative_to(mod)))}) && "
                    f"printf %s {shlex.quote(f.read_text())} > {shlex.quote(dest + '/' + str(f.relative_to(mod)))} && "
                    for f in sorted(mod.rglob("*")) if f.is_file())
    inner = f"{files}export WORKSPACE_DIR=$PWD && cd {shlex.quote(dest)} && chmod +x run.sh && ./run.sh"
    r = on_node(node, local, f"docker exec {shlex.quote(name)} sh -c {shlex.quote(inner)}")
    for line in (r.stdout + r.stderr).splitlines():
        say(f"  {line}")
    if r.returncode != 0:
        say(f"Error: Patch script failed on {node}")
        return False
    return True


def copy_script(node: str, local: bool, name: str, script: str) -> bool:
    """copy_script_to_container / copy_script_to_worker: the node's own script, inside it."""
    cmd = f"docker exec -i {shlex.quote(name)} sh -c {shlex.quote(f'mkdir -p /workspace && cat > {EXEC_SCRIPT}')}"
    argv = ["sh", "-c", cmd] if local else [*SSH, node, cmd]
    r = subprocess.run(argv, input=script, capture_output=True, text=True)
    if r.returncode != 0:
        say(f"Error: docker cp to {node} failed")
        return False
    return True


def serve_argv(script: str) -> list[str]:
    """The command line of a launch script: its lines without comments and exports."""
    body = [ln.rstrip(" \\") for ln in script.splitlines()
            if ln.strip() and not ln.startswith("#") and not ln.startswith("export ")]
    return shlex.split(" ".join(body))


def exec_command(nodes: list[str], name: str, script: str, backend: str, port: int, daemon: bool) -> int:
    """The exec: no-Ray runs every node's own script (workers first, head last); Ray runs the
    script on the head only. In each container a process carries that node's command line; the
    engine itself (the recipe's server) runs beside the head, tied to the containers' life."""
    head, workers = nodes[0], nodes[1:]
    received = {node: node_command(script, backend, len(nodes), i, head, port) for i, node in enumerate(nodes)}
    runs_on = nodes[::-1] if backend == "no-ray" and workers else [head]
    for node in runs_on:
        argv = serve_argv(received[node])
        label = "Executing command on head node (rank 0)" if node == head else f"Launching worker on {node}"
        say(f"{label}: {' '.join(argv)}")
        hold = f"docker exec -d {shlex.quote(name)} sh -c {shlex.quote(HOLD)} {shlex.join(argv)}"
        on_node(node, node == head, hold)
    state = STATE / name
    # the engine beside the head is the recipe's server: vLLM's distributed flags are not its
    command = _DIST_ARGS.sub("", "\n".join(line for line in script.splitlines() if not line.startswith("#")))
    serve = [sys.executable, str(Path(__file__).resolve()), "serve", "--name", name,
             "--log", str(state / "engine.log"), "--workers", ",".join(workers), "--script", command]
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "supervisor.log", "ab") as supervisor_log:
        subprocess.Popen(serve, stdin=subprocess.DEVNULL, stdout=supervisor_log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    if daemon:
        say(f"Command dispatched in background (Daemon mode). Container: {name}")
        say("Cluster started in background (Daemon mode).")
        return 0
    try:
        return subprocess.call(["docker", "logs", "-f", name])
    except KeyboardInterrupt:
        return stop(nodes, name)


def stop(nodes: list[str], name: str) -> int:
    say("Stopping cluster...")
    on_nodes(nodes, f"docker stop {shlex.quote(name)}")
    say("Cluster stopped.")
    return 0


# -- the engine, tied to the containers' life ---------------------------------------------------
def serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="standin.py serve")
    p.add_argument("--name", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--workers", default="")
    p.add_argument("--script", required=True)
    args = p.parse_args(argv)
    log = open(args.log, "ab", buffering=0)  # noqa: SIM115 - held for the supervisor's life

    def note(line: str) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        log.write(f"ERROR {stamp} [standin] {line}\n".encode())

    engine = subprocess.Popen(["bash", "-c", args.script], stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    c = shlex.quote(args.name)
    head_wait = subprocess.Popen(["docker", "wait", args.name], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = {w: subprocess.Popen([*SSH, w, f"docker wait {c}"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for w in args.workers.split(",") if w}

    def kill_engine() -> None:
        try:
            os.killpg(engine.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        engine.wait()

    engine_done = False
    while True:
        if head_wait.poll() is not None:
            kill_engine()
            break
        for w, proc in list(watch.items()):
            rc = proc.poll()
            if rc is None:
                continue
            if rc == 255:  # ssh itself failed: look again
                time.sleep(1)
                watch[w] = subprocess.Popen([*SSH, w, f"docker wait {c}"], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                continue
            del watch[w]
            if not engine_done:
                note(f"Ray node {w} died unexpectedly: its container {args.name} exited")
                note("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task "
                     f"(RayWorkerWrapper on {w})")
                note("EngineCore failed to start / died; shutting down the API server")
                kill_engine()
        if not engine_done and engine.poll() is not None:
            engine_done = True
            note(f"engine process exited with code {engine.returncode}; the containers stay up")
        time.sleep(0.1)
    for proc in watch.values():
        proc.kill()
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run-recipe", "launch-cluster", "serve"):
        say("usage: standin.py run-recipe|launch-cluster|serve ARGS...")
        return 2
    return {"run-recipe": run_recipe, "launch-cluster": launch_cluster, "serve": serve}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
