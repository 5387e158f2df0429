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
import shlex
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
echo "Starting Ray head node on $HOST_IP (port $MASTER_PORT)"
echo "Ray runtime started. Local node IP: $HOST_IP"
tail -n +1 -F /standin/engine.log 2>/dev/null &
wait"""

WORKER_SCRIPT = """trap 'exit 0' TERM INT
echo "[$NODE_NAME] ray start --address=$HEAD_IP:$MASTER_PORT --node-ip-address=$HOST_IP"
echo "[$NODE_NAME] Ray runtime started."
n=${STANDIN_LOAD_S:-2}; i=0
while [ "$i" -lt "$n" ]; do
  i=$((i+1))
  echo "(RayWorkerWrapper pid=$$, ip=$HOST_IP) Loading safetensors checkpoint shards: $i/$n"
  if [ "$STANDIN_FAIL_NODE" = "$NODE_NAME" ] && [ "$i" -gt "${STANDIN_FAIL_AFTER_S:-1}" ]; then
    printf '%s\\n' "$STANDIN_FAIL_MESSAGE"
    echo "(RayWorkerWrapper pid=$$, ip=$HOST_IP) worker process died, exit code 1"
    exit 1
  fi
  sleep 1
done
echo "(RayWorkerWrapper pid=$$, ip=$HOST_IP) Model loading took 1.23 GiB and $n.0 seconds"
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
    p.add_argument("-e", "--env", action="append", default=[], dest="env_vars")
    p.add_argument("--dry-run", action="store_true")
    args, extra = p.parse_known_args(argv)
    path = Path(args.recipe)
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        say(f"Error: Recipe not found: {args.recipe}")
        return 1
    recipe = yaml.safe_load(path.read_text())
    for key in ("name", "recipe_version", "container", "command"):
        if key not in recipe:
            say(f"Error: Recipe missing required field: {key}")
            return 1
    say(f"Recipe: {recipe['name']}")
    image = args.image or recipe["container"]
    params: dict[str, Any] = {**recipe.get("defaults", {}), "python": read_env(REPO / "standin.env")["PYTHON"],
                              "model": recipe.get("model") or ""}
    for key in ("port", "host"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    try:
        command = recipe["command"].format(**params).strip()
    except KeyError as e:
        say(f"Error: Missing parameter in recipe command: {e}")
        return 1
    if extra and extra[0] == "--":
        extra = extra[1:]
    command = " ".join([command, *map(shlex.quote, extra)])
    if args.dry_run:
        say(f"=== Generated Launch Script ===\n{command}")
        return 0
    if docker("image", "inspect", image).returncode != 0:
        say(f"Container image '{image}' not found locally.\n\nOptions:\n  1. Use --setup to build and run\n"
            f"  2. Build manually: ./build-and-copy.sh -t {image}\n")
        try:
            answer = input("Build now? [y/N] ").strip().lower()
        except EOFError:
            answer = ""
        if answer != "y":
            say("Aborting.")
            return 1
        say("Error: the stand-in cannot build images")
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    script = STATE / "launch-script.sh"
    script.write_text(f"#!/bin/bash\n# Generated from recipe: {recipe['name']}\n{command}\n")
    rec_env = {str(k): str(v) for k, v in (recipe.get("env") or {}).items()}
    rec_env.setdefault("STANDIN_LOAD_S", str(int(float(params.get("load_delay", 2)) + 0.999)))
    if "STANDIN_FAIL_NODE" in rec_env:
        rec_env.setdefault("STANDIN_FAIL_MESSAGE", OOM)
    env = [f"{k}={v}" for k, v in rec_env.items()]
    cmd = [str(REPO / "launch-cluster.sh"), "-t", image, "--launch-script", str(script)]
    for flag, value in (("-n", args.nodes), ("--name", args.container_name), ("--master-port", args.master_port)):
        if value:
            cmd += [flag, str(value)]
    if args.daemon:
        cmd.append("-d")
    say(f"launch-cluster.sh {shlex.join(cmd[1:])} (and {len(env) + len(args.env_vars)} -e variables)")
    for var in [*env, *args.env_vars]:
        cmd += ["-e", var]
    sys.stdout.flush()
    return subprocess.call([*cmd, "start"], stdin=subprocess.DEVNULL)


# -- launch-cluster --------------------------------------------------------------------------
def launch_cluster(argv: list[str]) -> int:
    env = read_env(REPO / ".env")
    p = argparse.ArgumentParser(prog="launch-cluster.sh")
    p.add_argument("-n", "--nodes", default=env.get("CLUSTER_NODES", ""))
    p.add_argument("-t", dest="image", default="vllm-node")
    p.add_argument("--name", default=env.get("CONTAINER_NAME", "vllm_node"))
    p.add_argument("--master-port", "--head-port", type=int, default=29501)
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-d", action="store_true", dest="daemon")
    p.add_argument("--launch-script")
    p.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status"])
    args = p.parse_args(argv)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not nodes:
        say("Error: Nodes argument (-n) is mandatory or could not be auto-detected.")
        return 1
    head, workers = nodes[0], nodes[1:]
    local_ip = env.get("LOCAL_IP", head)
    if local_ip != head:
        say(f"Error: Local IP ({local_ip}) is not the first node ({args.nodes}).")
        return 1
    say(f"Head Node: {head}\nWorker Nodes: {' '.join(workers)}\nContainer Name: {args.name}\n"
        f"Image Name: {args.image}\nAction: {args.action}")
    c = shlex.quote(args.name)
    if args.action == "stop":
        return stop(nodes, args.name)
    is_running = f"docker ps --format '{{{{.Names}}}}' | grep -qx {c}"
    if args.action == "status":
        for i, (node, r) in enumerate(zip(nodes, on_nodes(nodes, is_running), strict=True)):
            say(f"[{'HEAD' if i == 0 else 'WORKER'}] {node}: Container '{args.name}' is "
                f"{'RUNNING' if r.returncode == 0 else 'NOT running'}.")
        return 0
    # one round over ssh: reachability, the image's ID, a running container
    probe = f"echo OK; docker image inspect --format '{{{{.Id}}}}' {shlex.quote(args.image)}; {is_running} && echo RUNNING"
    probed = on_nodes(nodes, probe)
    for w, r in zip(workers, probed[1:], strict=True):
        if not r.stdout.startswith("OK"):
            say(f"Error: Passwordless SSH to {w} failed.")
            return 1
        say(f"  SSH to {w}: OK")
    ids, running = {}, []
    for node, r in zip(nodes, probed, strict=True):
        out = r.stdout.split()[1:]
        ids[node] = out[0].removeprefix("sha256:") if out and out[0] != "RUNNING" else None
        if "RUNNING" in out:
            running.append(node)
    if None in ids.values() or len(set(ids.values())) != 1:
        say(f"Error: image {args.image} is not the same on every node: "
            + ", ".join(f"{n}={(v or 'missing')[:12]}" for n, v in ids.items()))
        return 1
    for node in running:
        say(f"Warning: Container '{args.name}' is already running on {node}.")
    if running:
        say("Cluster containers are already running. Skipping launch.")
        return 0
    env_flags = " ".join(f"-e {shlex.quote(e)}" for e in args.env)
    run = (f"docker run -d --privileged --gpus all --ipc=host --rm --network host --name {c} "
           f"-e NCCL_IGNORE_CPU_AFFINITY=1 {env_flags} -e HEAD_IP={shlex.quote(head)} "
           f"-e MASTER_PORT={args.master_port}")
    state = STATE / args.name
    state.mkdir(parents=True, exist_ok=True)
    log = state / "engine.log"
    log.write_text("")
    say(f"Starting Head Node on {head}...")
    for w in workers:
        say(f"Starting Worker Node on {w}...")
    head_run = (f"{run} -e HOST_IP={shlex.quote(head)} -e NODE_NAME=$(hostname) -v {shlex.quote(str(state))}:/standin "
                f"{shlex.quote(args.image)} sh -c {shlex.quote(HEAD_SCRIPT)}")
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # the real one goes node by node
        started = list(pool.map(lambda i: on_node(nodes[i], i == 0, head_run if i == 0 else (
            f"{run} -e HOST_IP={shlex.quote(nodes[i])} -e NODE_NAME=$(hostname) "
            f"{shlex.quote(args.image)} sh -c {shlex.quote(WORKER_SCRIPT)}")), range(len(nodes))))
    for node, r in zip(nodes, started, strict=True):
        if r.returncode != 0:
            say(f"Error: docker run failed on {node}: {r.stderr.strip()}")
            return 1
    say("Waiting for cluster to be ready...")
    for node, r in zip(nodes, on_nodes(nodes, f"docker inspect --format '{{{{.State.Running}}}}' {c}"), strict=True):
        if r.stdout.strip() != "true":
            say(f"Timeout waiting for cluster to start: {args.name} is not running on {node}.")
            return 1
    say("Cluster head is responsive.")
    if args.launch_script:
        command = Path(args.launch_script).read_text()
        serve = [sys.executable, str(Path(__file__).resolve()), "serve", "--name", args.name,
                 "--log", str(log), "--workers", ",".join(workers), "--script", command]
        with open(state / "supervisor.log", "ab") as supervisor_log:
            subprocess.Popen(serve, stdin=subprocess.DEVNULL, stdout=supervisor_log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        say(f"Executing launch script on head node: {' '.join(command.split(chr(10))[2:]).strip()}")
    if args.daemon:
        say("Cluster started in background (Daemon mode).")
        return 0
    say("Cluster started. Tailing logs from head node...\nPress Ctrl+C to stop the cluster.")
    try:
        return subprocess.call(["docker", "logs", "-f", args.name])
    except KeyboardInterrupt:
        return stop(nodes, args.name)


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
