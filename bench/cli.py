"""`python -m bench`: run a concurrency sweep and print a summary table.

Every option has an environment variable (shown in `--help`) so wrappers and notebooks set the
model and sweep points without editing anything. `--demo` (or `--model demo` without a URL)
starts the simulated endpoint in this process on a free 127.0.0.1 port and runs a small sweep
against it: the embedded default anyone can run on a laptop.

Exit codes: 0 done, 1 run failed (message on one line), 2 bad arguments, 3 engine stalled (the
stall watchdog; finished points kept), 130 interrupted (every finished point is already on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tabulate import tabulate

from bench import arrivals, client
from bench.errors import BenchError
from bench.openloop import RateLoad, arun_rate_sweep
from bench.ratetable import rate_table
from bench.results import points_frame
from bench.shapes import ResultsDoc
from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, arun_sweep, parse_concurrency

T = TypeVar("T")

DEMO_MODEL = "demo"
DEMO_SIM = SimConfig(model=DEMO_MODEL, spec_tokens=2, spec_accept=0.7, max_batch=8)
DEMO_CONCURRENCY = "1,4,8"
DEMO_INPUT_LEN = 64
DEMO_OUTPUT_LEN = 32


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"GX10_BENCH_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="Closed-loop concurrency "
                                "sweep against a vLLM OpenAI-compatible server.")
    p.add_argument("--base-url", default=_env("URL"),
                   help="server URL, e.g. http://127.0.0.1:8000 [GX10_BENCH_URL]")
    p.add_argument("--model", default=_env("MODEL"),
                   help="served model name as /v1/models lists it [GX10_BENCH_MODEL]")
    p.add_argument("--label", default=_env("LABEL"),
                   help="results folder name under --results-dir (default: model) "
                        "[GX10_BENCH_LABEL]")
    p.add_argument("--concurrency", default=_env("CONCURRENCY"),
                   help="comma list, e.g. 1,2,4,8 (default 1,2,4,8; demo 1,4,8) "
                        "[GX10_BENCH_CONCURRENCY]")
    p.add_argument("--input-len", type=int, default=None,
                   help="prompt tokens (default 128; demo 64) [GX10_BENCH_INPUT_LEN]")
    p.add_argument("--output-len", type=int, default=None,
                   help="output tokens (max_tokens, ignore_eos) (default 128; demo 32) "
                        "[GX10_BENCH_OUTPUT_LEN]")
    p.add_argument("--requests", type=int, default=None,
                   help="measured requests per point (default max(8, 4 x C)) "
                        "[GX10_BENCH_REQUESTS]")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up requests per point, excluded (default C) [GX10_BENCH_WARMUP]")
    p.add_argument("--api", choices=("chat", "completions"), default=_env("API", "chat"),
                   help="endpoint [GX10_BENCH_API]")
    p.add_argument("--results-dir", type=Path, default=Path(_env("RESULTS_DIR", "results") or
                                                             "results"),
                   help="[GX10_BENCH_RESULTS_DIR]")
    p.add_argument("--rerun", action="store_true",
                   help="replace existing results instead of skipping points already there")
    p.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput bound on TTFT")
    p.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput bound on TPOT")
    p.add_argument("--read-timeout", type=float, default=300.0,
                   help="seconds without a byte before a request fails as timeout")
    p.add_argument("--stall-s", type=float, default=120.0,
                   help="stop the sweep when requests are in flight and no stream got a byte for this "
                        "long (engine stalled; 0: off)")
    p.add_argument("--demo", action="store_true",
                   help="run against the embedded simulated endpoint (same as --model demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # -- open loop (bench/openloop.py) --
    p.add_argument("--request-rate", default=_env("REQUEST_RATE"),
                   help="open loop: comma list of arrival rates in requests/s, e.g. 1,2,4 "
                        "(instead of --concurrency) [GX10_BENCH_REQUEST_RATE]")
    p.add_argument("--burstiness", default=_env("BURSTINESS", "1"),
                   help="open loop: gamma shape of the gaps; 1 = Poisson, <1 burstier, inf = even "
                        "[GX10_BENCH_BURSTINESS]")
    p.add_argument("--goodput", default=_env("GOODPUT"),
                   help="SLOs for goodput, like vllm bench serve: ttft:500,tpot:50 (ms; also "
                        "500ms, 0.5s; keys ttft tpot e2el) [GX10_BENCH_GOODPUT]")
    p.add_argument("--goodput-target", type=float, default=0.95,
                   help="open loop: a rate meets the SLOs when this fraction of requests does")
    p.add_argument("--find-max-rate", action="store_true",
                   help="open loop: then bisect for the highest rate meeting the SLOs")
    p.add_argument("--search-probes", type=int, default=6, help="max-rate search: most probes")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure each point N times, interleaved (N sweeps under <label>/"
                        "repeats/); prints mean ± 95%% CI and writes repeats.json")
    return p


def _int_opt(value: int | None, env: str, default: int | None) -> int | None:
    if value is not None:
        return value
    raw = _env(env)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BenchError(f"GX10_BENCH_{env}={raw!r} is not an integer") from None


class UsageError(BenchError):
    """A flag with a value of the wrong kind (argparse's exit code)."""

    exit_code = 2


def int_flag(flag: str, value: object) -> int | None:
    """A flag's value as an integer, for callers that get flags as text (Invoke tasks)."""
    if value is None or isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise UsageError(f"argument --{flag}: invalid int value: {value!r}") from None


def concurrency_list(text: str) -> list[int]:
    """`parse_concurrency`, its ValueError as the BenchError the user sees."""
    try:
        return parse_concurrency(text)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def rate_load(args: argparse.Namespace) -> RateLoad | None:
    """The open-loop settings from the flags (None: closed loop); UsageError when malformed."""
    if args.request_rate in (None, ""):
        if args.find_max_rate:
            raise UsageError("--find-max-rate needs --request-rate (the rates to start from)")
        return None
    try:
        load = RateLoad(rates=arrivals.parse_rates(args.request_rate),
                        burstiness=arrivals.parse_burstiness(args.burstiness),
                        goodput_target=args.goodput_target, search=args.find_max_rate,
                        search_probes=args.search_probes)
        load.validate()
    except ValueError as exc:
        raise UsageError(f"argument --request-rate/--burstiness: {exc}") from None
    except BenchError as exc:
        raise UsageError(str(exc)) from None
    if args.find_max_rate and not args.goodput and args.slo_ttft_ms is None \
            and args.slo_tpot_ms is None:
        raise UsageError("--find-max-rate needs SLOs: --goodput ttft:500,tpot:50")
    return load


def goodput_slos(args: argparse.Namespace) -> dict[str, float]:
    """--goodput parsed (ms per key); --slo-ttft-ms / --slo-tpot-ms still work."""
    if args.goodput in (None, ""):
        return {}
    try:
        return arrivals.parse_goodput(args.goodput)
    except ValueError as exc:
        raise UsageError(f"argument --goodput: {exc}") from None


def config_from_args(args: argparse.Namespace, demo: bool) -> SweepConfig:
    """Turn parsed arguments (+ environment) into a SweepConfig; BenchError when unusable."""
    slos = goodput_slos(args)
    conc = concurrency_list(args.concurrency or (DEMO_CONCURRENCY if demo else "1,2,4,8"))
    if not demo and not args.base_url:
        raise BenchError("no server URL: pass --base-url (or GX10_BENCH_URL), or --demo")
    if not demo and not args.model:
        raise BenchError("no model: pass --model (or GX10_BENCH_MODEL)")
    return SweepConfig(
        base_url=args.base_url or "http://127.0.0.1:0",
        model=DEMO_MODEL if demo else args.model,
        label=args.label or (DEMO_MODEL if demo else None),
        concurrency=conc,
        input_len=_int_opt(args.input_len, "INPUT_LEN", DEMO_INPUT_LEN if demo else 128) or 0,
        output_len=_int_opt(args.output_len, "OUTPUT_LEN", DEMO_OUTPUT_LEN if demo else 128) or 0,
        requests_per_point=_int_opt(args.requests, "REQUESTS", None),
        warmup=_int_opt(args.warmup, "WARMUP", None),
        api=args.api,
        results_dir=args.results_dir,
        rerun=args.rerun,
        slo_ttft_ms=slos.get("ttft", args.slo_ttft_ms),
        slo_tpot_ms=slos.get("tpot", args.slo_tpot_ms),
        slo_e2el_ms=slos.get("e2el"),
        timeouts=client.Timeouts(read_s=args.read_timeout),
        stall_s=args.stall_s or None,
    )


def summary_table(doc: ResultsDoc) -> str:
    df = points_frame(doc)
    if df.empty:
        return "(no points)"
    cols = {
        "concurrency": "C", "completed": "ok", "failed": "failed", "request_s": "req/s",
        "output_tok_s": "out tok/s", "ttft_p50_ms": "TTFT p50", "ttft_p99_ms": "TTFT p99",
        "tpot_p50_ms": "TPOT p50", "itl_p50_ms": "ITL p50", "itl_p99_ms": "ITL p99",
        "decode_tok_s_p50": "tok/s/user", "acceptance_length": "accept len",
    }
    if df["ttfr_p50_ms"].notna().any():  # a reasoning model (bench/reasoning.py)
        cols.update({"ttfr_p50_ms": "TTFR p50", "ttfa_p50_ms": "TTFA p50",
                     "reasoning_tokens_mean": "reasoning tok", "answer_tokens_mean": "answer tok"})
    shown = df[list(cols)].rename(columns=cols).astype(object)
    return tabulate(shown, headers="keys", tablefmt="github", floatfmt=".1f", showindex=False,
                    missingval="-")


async def _run(cfg: SweepConfig, demo: bool, progress: bool) -> ResultsDoc:
    if not demo:
        return await arun_sweep(cfg, progress)
    async with SimServer(DEMO_SIM) as sim:
        cfg.base_url = sim.base_url
        return await arun_sweep(cfg, progress)


def demo_config(results_dir: Path, concurrency: str | None = None, requests: int | None = None,
                rerun: bool = False) -> SweepConfig:
    """The demo sweep against the embedded simulated endpoint (its URL is set when it starts)."""
    return SweepConfig(base_url="http://127.0.0.1:0", model=DEMO_MODEL, label=DEMO_MODEL,
                       concurrency=concurrency_list(concurrency or DEMO_CONCURRENCY),
                       input_len=DEMO_INPUT_LEN, output_len=DEMO_OUTPUT_LEN,
                       requests_per_point=requests, results_dir=results_dir, rerun=rerun)


def attempt(make_config: Callable[[], SweepConfig], go: Callable[[SweepConfig], T],
            kept: str) -> tuple[SweepConfig, T] | int:
    """Build and check the config, then `go(cfg)`. A BenchError or Ctrl-C becomes one line on
    stderr and its exit code is returned instead; `kept` says what Ctrl-C leaves on disk."""
    try:
        cfg = make_config()
        cfg.validate()
        return cfg, go(cfg)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"bench: interrupted; {kept}", file=sys.stderr)
        return 130


def run(make_config: Callable[[], SweepConfig], demo: bool, progress: bool = True) -> int:
    """Build the config, run the sweep (`demo`: on the embedded endpoint), print the summary;
    return the exit code. Errors are one line on stderr; Ctrl-C keeps the finished points."""
    got = attempt(make_config, lambda cfg: asyncio.run(_run(cfg, demo, progress)),
                  "finished points are kept in results.json")
    if isinstance(got, int):
        return got
    cfg, doc = got
    print(summary_table(doc))
    print(f"results: {cfg.folder / 'results.json'}")
    failed = sum(p.get("failed", 0) for p in doc["points"])
    if failed:
        print(f"note: {failed} request(s) failed; see failures in results.json", file=sys.stderr)
    return 0


def run_rate(args: argparse.Namespace, demo: bool, progress: bool) -> int:
    """The open-loop sweep: check every flag first (exit 2 before anything is sent), run, print."""
    try:
        load = rate_load(args)
        assert load is not None  # noqa: S101 - only called with --request-rate
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code

    async def go(cfg: SweepConfig) -> ResultsDoc:
        if not demo:
            return await arun_rate_sweep(cfg, load, progress)
        async with SimServer(DEMO_SIM) as sim:
            cfg.base_url = sim.base_url
            return await arun_rate_sweep(cfg, load, progress)

    got = attempt(lambda: config_from_args(args, demo), lambda cfg: asyncio.run(go(cfg)),
                  "finished points are kept in results.json")
    if isinstance(got, int):
        return got
    cfg, doc = got
    print(rate_table(doc))
    search = doc.get("max_rate_search")
    if isinstance(search, dict):
        print(f"max rate meeting the SLOs: {search['max_rate']} req/s (bracket "
              f"{search['bracket']}, {len(search['probes'])} probes; {search['stopped']})")
    print(f"results: {cfg.folder / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    demo = bool(args.demo or (args.model == DEMO_MODEL and not args.base_url))
    if args.request_rate not in (None, ""):
        return run_rate(args, demo, progress=not args.no_progress)
    if args.repeats != 1:
        from bench.repeats import run_cli
        if not demo:
            return run_cli(lambda: config_from_args(args, demo), args.repeats,
                           progress=not args.no_progress)
        from bench.sim import BackgroundSim
        with BackgroundSim(DEMO_SIM) as sim:  # one endpoint for every repeat (the sweeps are sync)
            def demo_cfg() -> SweepConfig:
                cfg = config_from_args(args, demo)
                cfg.base_url = sim.base_url
                return cfg
            return run_cli(demo_cfg, args.repeats, progress=not args.no_progress)
    return run(lambda: config_from_args(args, demo), demo, progress=not args.no_progress)
