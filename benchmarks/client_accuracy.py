"""How accurate and how cheap is the bench client? Prints tables; run with `python
benchmarks/client_accuracy.py` from the repository root.

The simulated endpoint runs in its own process pinned to core 0, the client under test in one
pinned to core 1, both real-time by default (see SCHED below). The server records what it did,
on CLOCK_MONOTONIC (`perf_counter_ns`, shared by both processes): when each request's last byte
arrived (the kernel's receive stamp) and when each chunk's bytes left its socket (the kernel's
transmit stamp; where there is none, when the write returned, and the header says how many
chunks that was). So per request the true TTFT = first content send - request arrival, the true
per-token ITL of content chunk k = (send_k - send_(k-1)) / n_k, and the true TPOT = (last -
first content send) / (N - 1).

Every error is "client measured minus server actual", paired sample by sample over the requests
the client reported (ours: the measured requests after warm-up; the peer: its requests after its
own `--num-warmups`): TTFT and TPOT per request, ITL per sample (ours: per token; the peer: per
chunk, which is what it reports). `err p50` is the median signed error, `|err| p99` the 99th
percentile of its size. `p99 delta` is the client's reported p99 minus the true p99 over the
same requests: the error of the number people quote. The peer's ITL sample from its role-only
first chunk to the first content chunk has no true counterpart (it is not an inter-token gap);
such samples are counted as `spurious ITL`, left out of the paired errors (which favours the
peer) and kept in its reported p99.

Beside each row: the machine's load during that row's requests (1-minute load average, steal,
CPU that other processes took on the client's and on the server's core, and involuntary context
switches per second of the client's and the server's main thread, and the share of time each
main thread was runnable but waiting for a CPU), so a reader can tell a busy machine from a
bad client. Nothing is excluded or retried to make a number look better.

Cases: one token per 10 ms decode step at C in GX10_ACC_CONCURRENCY (default 1,16,64,256), 128
prompt and 64 output tokens; and an MTP case at C=16 where every decode step of 30 ms emits
3 tokens in one chunk (so per-token latency is 10 ms and per-chunk 30 ms). `vllm bench serve`
runs on the same server in the same run when the venv named by GX10_VLLM_VENV (default
~/.cache/gx10-ops/vllm-cpu/venv) exists; its tokenizer comes from GX10_PEER_TOKENIZER (default
~/.cache/gx10-ops/vllm-cpu/tiny-model).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from bench.results import REQUESTS_FILE, load_results
from bench.sweep import SweepConfig, arun_sweep

REPO = Path(__file__).resolve().parents[1]

CONCURRENCY = [int(c) for c in os.environ.get("GX10_ACC_CONCURRENCY", "1,16,64,256").split(",")]
MTP_CONCURRENCY = 16
INPUT_LEN, OUTPUT_LEN = 128, 64
SERVER_CORE, CLIENT_CORE = 0, 1
MODEL = "acc-sim"
SIM = {"decode_base_s": 0.010, "decode_per_seq_s": 0.0, "prefill_base_s": 0.0,
       "prefill_per_token_s": 0.0, "max_batch": 1024, "spec_tokens": 0}
SIM_MTP = {**SIM, "decode_base_s": 0.030, "spec_tokens": 2, "spec_accept": 1.0}
TARGETS = {"ttft_p99_ms": {c: 1.0 for c in (1, 16, 64)} | {256: 5.0}, "itl_p99_ms": {256: 1.0}}
VENV = Path(os.environ.get("GX10_VLLM_VENV", "~/.cache/gx10-ops/vllm-cpu/venv")).expanduser()
TOKENIZER = Path(os.environ.get("GX10_PEER_TOKENIZER",
                                "~/.cache/gx10-ops/vllm-cpu/tiny-model")).expanduser()
TICK = os.sysconf("SC_CLK_TCK")
# How the clients (GX10_ACC_SCHED) and the server (GX10_ACC_SERVER_SCHED) are scheduled, where
# allowed: "fifo" (real-time, priority 10), "nice" (niceness -10) or "normal". On a machine
# shared with other work, a client that gets the CPU late reads several events of a stream at
# once and they share the newest kernel stamp: hence real-time clients. A real-time server keeps
# its schedule exact, as the peer comparison in the project's METRICS.md assumes; at saturation
# it can starve the softirq work that delivers its loopback sends on its core (seen once at C=256:
# a burst of events delivered 9 ms after they left the socket), which then counts as client
# error, as network delay would. "nice" avoids that, but on a busy machine the server then falls
# behind its schedule (watch "server waiting for CPU").
SCHED = os.environ.get("GX10_ACC_SCHED", "fifo")
SERVER_SCHED = os.environ.get("GX10_ACC_SERVER_SCHED", "fifo")


def _pin(core: int, how: str) -> None:
    """Run the calling process on one core, scheduled as `how` says (best effort)."""
    os.sched_setaffinity(0, {core})
    try:
        if how == "fifo":
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        else:  # children inherit the parent's real-time policy unless told otherwise
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, 0, -10 if how == "nice" else 0)
    except OSError:
        pass


def _sched_name(pid: int) -> str:
    policy = os.sched_getscheduler(pid)
    if policy == os.SCHED_FIFO:
        return f"SCHED_FIFO priority {os.sched_getparam(pid).sched_priority}"
    return f"SCHED_OTHER nice {os.getpriority(os.PRIO_PROCESS, pid)}"


def requests_for(c: int) -> int:
    return {1: 32}.get(c, 2 * c)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def get_json(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


# -- the machine ---------------------------------------------------------------------------------

def _proc_cpu_and_nvcsw(pid: int) -> tuple[float, int, float] | None:
    """CPU seconds (all threads), and of the main thread (which runs the event loop) the
    involuntary context switches and the seconds spent runnable but waiting for a CPU."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
        wait_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    except OSError:
        return None
    nvcsw = next(int(line.split()[1]) for line in status.splitlines()
                 if line.startswith("nonvoluntary_ctxt_switches"))
    return (int(fields[11]) + int(fields[12])) / TICK, nvcsw, wait_ns / 1e9


def _cpu_ticks() -> dict[str, list[int]]:
    """/proc/stat cpu lines: name -> [user, nice, system, idle, iowait, irq, softirq, steal]."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *vals = line.split()
            out[name] = [int(v) for v in vals[:8]]
    return out


class LoadWatch:
    """Samples, every 0.1 s, the CPU counters of the machine and of the watched processes."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[int, dict[str, list[int]],
                                 dict[str, tuple[float, int, float] | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loadwatch")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = {role: _proc_cpu_and_nvcsw(pid) for role, pid in list(self.pids.items())}
            self.samples.append((time.perf_counter_ns(), _cpu_ticks(), procs))
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, t0: int, t1: int) -> dict[str, float]:
        """Load figures over [t0, t1] (perf_counter ns), from the samples just outside it."""
        while self._thread.is_alive() and self.samples[-1][0] < t1:
            time.sleep(0.05)
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        if not before or not after:
            return {}
        (ta, ca, pa), (tb, cb, pb) = before[-1], after[0]
        wall = (tb - ta) / 1e9

        def busy_and_steal(name: str) -> tuple[float, float, float]:
            d = [b - a for a, b in zip(ca[name], cb[name], strict=True)]
            total = sum(d) or 1
            busy = (d[0] + d[1] + d[2] + d[5] + d[6]) / TICK
            return busy, d[7] / TICK, total / TICK

        def proc(role: str) -> tuple[float, float, float]:
            a, b = pa.get(role), pb.get(role)
            if a is None or b is None:
                return float("nan"), float("nan"), float("nan")
            return b[0] - a[0], (b[1] - a[1]) / wall, 100 * (b[2] - a[2]) / wall

        c_cpu, c_nv, c_wait = proc("client")
        s_cpu, s_nv, s_wait = proc("server")
        c_busy, _, _ = busy_and_steal(f"cpu{CLIENT_CORE}")
        s_busy, _, _ = busy_and_steal(f"cpu{SERVER_CORE}")
        _, steal, total = busy_and_steal("cpu")
        return {
            "client_cpu_pct": 100 * c_cpu / wall,
            "others_client_core_pct": max(0.0, 100 * (c_busy - c_cpu) / wall),
            "others_server_core_pct": max(0.0, 100 * (s_busy - s_cpu) / wall),
            "steal_pct": 100 * steal / total,
            "nvcsw_client_s": c_nv, "nvcsw_server_s": s_nv,
            "runq_client_pct": c_wait, "runq_server_pct": s_wait,
            "load1": os.getloadavg()[0],
        }


class Sim:
    """The simulated endpoint in a subprocess pinned to the server core."""

    def __init__(self, cfg: dict[str, Any], watch: LoadWatch) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sim", "--port", "0", "--model", MODEL,
             "--config", json.dumps(cfg)], cwd=REPO, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=lambda: _pin(SERVER_CORE, SERVER_SCHED))
        self.sched = ""
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()
        watch.pids["server"] = self.proc.pid
        self.sched = _sched_name(self.proc.pid)

    def truth(self) -> dict[str, Any]:
        data: dict[str, Any] = get_json(self.base + "/sim/truth")
        return data

    def reset(self) -> None:
        get_json(self.base + "/sim/reset", "POST")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- pairing measured against true ---------------------------------------------------------------

@dataclass
class Row:
    """One client at one concurrency: paired errors, reported and true numbers, load, phases."""

    client: str
    c: int
    requests: int = 0
    failed: int = 0
    ttft_err: list[float] = field(default_factory=list)
    itl_err: list[float] = field(default_factory=list)
    tpot_err: list[float] = field(default_factory=list)
    true_ttft: list[float] = field(default_factory=list)
    true_itl: list[float] = field(default_factory=list)
    true_icl: list[float] = field(default_factory=list)
    true_tpc: list[float] = field(default_factory=list)
    reported: dict[str, float] = field(default_factory=dict)
    phases: dict[str, list[float]] = field(default_factory=dict)
    spurious_itl: int = 0
    unpaired: int = 0
    coalesced: int = 0
    truth_requests: int = 0
    truth_write_stamped: int = 0
    load: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, value_ms: float) -> None:
        self.phases.setdefault(name, []).append(value_ms)


def _content(rec: dict[str, Any]) -> list[list[Any]]:
    return [c for c in rec["chunks"] if c[2] == "content"]


def _add_truth(row: Row, rec: dict[str, Any]) -> list[list[Any]]:
    ch = _content(rec)
    row.truth_requests += 1
    row.truth_write_stamped += rec.get("send_source") != "kernel"
    row.true_ttft.append((ch[0][0] - rec["t_recv_ns"]) / 1e6)
    for a, b in itertools.pairwise(ch):
        row.true_itl.extend([(b[0] - a[0]) / 1e6 / b[1]] * b[1])
        row.true_icl.append((b[0] - a[0]) / 1e6)
        row.true_tpc.append(b[1])
    return ch


def _true_tpot(ch: list[list[Any]]) -> float:
    n = sum(c[1] for c in ch)
    return (ch[-1][0] - ch[0][0]) / 1e6 / (n - 1)


def run_ours(sim: Sim, c: int, tmp: Path, watch: LoadWatch) -> Row:
    label = f"ours-{c}-{len(list(tmp.iterdir()))}"
    cfg = SweepConfig(base_url=sim.base, model=MODEL, label=label, concurrency=[c],
                      input_len=INPUT_LEN, output_len=OUTPUT_LEN,
                      requests_per_point=requests_for(c), results_dir=tmp)
    watch.pids["client"] = os.getpid()
    asyncio.run(arun_sweep(cfg, progress=False))
    point = load_results(tmp / label)["points"][0]
    rows = [json.loads(x) for x in (tmp / label / REQUESTS_FILE).read_text().splitlines()]
    rows = [r for r in rows if not r["warmup"]]
    truth = sim.truth()
    t0 = point["t0_perf_ns"]
    out = Row("bench", c, requests=len(rows), failed=point["failed"],
              coalesced=point["client"]["coalesced_events"])
    for r in (r for r in rows if r["ok"]):
        rec = truth[r["rid"]]
        ch = _add_truth(out, rec)
        arrive = [t0 + s * 1e9 for s in r["chunk_t_s"]]
        t_send = t0 + r["t_send_s"] * 1e9
        out.ttft_err.append(r["ttft_ms"] - out.true_ttft[-1])
        out.tpot_err.append(r["tpot_ms"] - _true_tpot(ch))
        for k in range(1, len(ch)):
            n = ch[k][1]
            err = ((arrive[k] - arrive[k - 1]) - (ch[k][0] - ch[k - 1][0])) / 1e6 / n
            out.itl_err.extend([err] * n)
        out.phase("client call->write", (t_send - (t0 + r["t_call_s"] * 1e9)) / 1e6)
        out.phase("write->server arrival", (rec["t_recv_ns"] - t_send) / 1e6)
        out.phase("server arrival->read", (rec["t_read_ns"] - rec["t_recv_ns"]) / 1e6)
        out.phase("server read->handler", (rec["t_handler_ns"] - rec["t_read_ns"]) / 1e6)
        out.phase("1st send->client arrival", (arrive[0] - ch[0][0]) / 1e6)
        out.phase("client arrival->read", (r["t_first_read_s"] - r["t_first_s"]) * 1e3)
        out.phase("client read->parse", (r["t_first_parse_s"] - r["t_first_read_s"]) * 1e3)
        # What the same request would have shown with stamps taken when the request was handed to
        # aiohttp and when this process read the first event (the previous client's stamps).
        old_ttft = (r["t_first_read_s"] - r["t_call_s"]) * 1e3
        out.phase("|TTFT err| with call/read stamps", abs(old_ttft - out.true_ttft[-1]))
    out.reported = {"ttft_p99": point["ttft_ms"]["p99"], "itl_p99": point["itl_ms"]["p99"],
                    "itl_p50": point["itl_ms"]["p50"], "icl_p50": point["icl_ms"]["p50"],
                    "tpot_p50": point["tpot_ms"]["p50"]}
    recs = [truth[r["rid"]] for r in rows]
    out.load = watch.window(min(x["t_recv_ns"] for x in recs),
                            max(x["chunks"][-1][0] for x in recs if x["chunks"]))
    return out


def peer_available() -> str | None:
    """None when `vllm bench serve` can run, else why not."""
    if not (VENV / "bin" / "vllm").exists():
        return f"no vllm-cpu venv at {VENV} (set GX10_VLLM_VENV)"
    if not (TOKENIZER / "tokenizer.json").exists():
        return f"no tokenizer at {TOKENIZER} (set GX10_PEER_TOKENIZER)"
    return None


def run_peer(sim: Sim, c: int, tmp: Path, watch: LoadWatch) -> Row:
    prefix = f"peer-c{c}-{len(list(tmp.iterdir()))}-"
    out_file = tmp / f"{prefix}result.json"
    cmd = [str(VENV / "bin" / "vllm"), "bench", "serve", "--backend", "openai-chat",
           "--endpoint", "/v1/chat/completions", "--base-url", sim.base, "--model", MODEL,
           "--tokenizer", str(TOKENIZER), "--dataset-name", "random",
           "--random-input-len", str(INPUT_LEN), "--random-output-len", str(OUTPUT_LEN),
           "--num-prompts", str(requests_for(c)), "--max-concurrency", str(c),
           "--num-warmups", str(c), "--ignore-eos", "--temperature", "0",
           "--request-id-prefix", prefix, "--save-result", "--save-detailed",
           "--result-dir", str(tmp), "--result-filename", out_file.name,
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: _pin(CLIENT_CORE, SCHED))
    watch.pids["client"] = proc.pid
    log, _ = proc.communicate(timeout=900)
    if proc.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"vllm bench serve failed (rc {proc.returncode}): {log[-800:]}")
    res = json.loads(out_file.read_text())
    truth = sim.truth()
    out = Row("vllm bench serve", c, requests=len(res["ttfts"]), failed=res.get("failed") or 0)
    recs = []
    for i, (ttft, itls, start, err) in enumerate(zip(res["ttfts"], res["itls"],
                                                      res["start_times"], res["errors"],
                                                      strict=True)):
        rec = truth.get(f"{prefix}{i}")
        if rec is None or err or ttft is None:
            out.unpaired += 1
            continue
        recs.append(rec)
        ch = _add_truth(out, rec)
        events = [c for c in rec["chunks"] if c[2] in ("role", "content")]
        if len(events) != len(itls) + 1:
            out.unpaired += 1
            continue
        arrive = list(itertools.accumulate([start + ttft, *itls]))
        out.ttft_err.append(ttft * 1e3 - out.true_ttft[-1])
        out.tpot_err.append(sum(itls) * 1e3 / (sum(c[1] for c in ch) - 1) - _true_tpot(ch))
        for j in range(1, len(events)):
            prev, cur = events[j - 1], events[j]
            if prev[2] != "content":
                out.spurious_itl += 1
                continue
            out.itl_err.append(itls[j - 1] * 1e3 - (cur[0] - prev[0]) / 1e6 / cur[1])
        first = next(j for j, e in enumerate(events) if e[2] == "content")
        out.phase("client call->server arrival", (rec["t_recv_ns"] - start * 1e9) / 1e6)
        out.phase("1st send->client parse", (arrive[first] * 1e9 - events[first][0]) / 1e6)
    out.reported = {"ttft_p99": res["p99_ttft_ms"], "itl_p99": res["p99_itl_ms"],
                    "itl_p50": res["median_itl_ms"], "icl_p50": float("nan"),
                    "tpot_p50": res["median_tpot_ms"]}
    if recs:
        out.load = watch.window(min(x["t_recv_ns"] for x in recs),
                                max(x["chunks"][-1][0] for x in recs if x["chunks"]))
    return out


# -- tables ----------------------------------------------------------------------------------------

def abs_p99(values: list[float]) -> float:
    return pct([abs(v) for v in values], 99)


def accuracy_row(m: Row) -> list[Any]:
    return [m.client, m.c, m.requests, m.failed + m.unpaired,
            pct(m.ttft_err, 50), abs_p99(m.ttft_err), pct(m.itl_err, 50), abs_p99(m.itl_err),
            abs_p99(m.tpot_err), m.reported["ttft_p99"] - pct(m.true_ttft, 99),
            m.reported["itl_p99"] - pct(m.true_itl, 99), m.spurious_itl,
            m.coalesced if m.client == "bench" else None]


def load_row(m: Row) -> list[Any]:
    ld = m.load
    return [m.client, m.c, ld.get("client_cpu_pct"), ld.get("load1"), ld.get("steal_pct"),
            ld.get("others_client_core_pct"), ld.get("others_server_core_pct"),
            ld.get("nvcsw_client_s"), ld.get("nvcsw_server_s"), ld.get("runq_client_pct"),
            ld.get("runq_server_pct")]


def phase_rows(rows: list[Row]) -> list[list[Any]]:
    out = []
    for m in rows:
        for name, values in m.phases.items():
            out.append([m.client, m.c, name, pct(values, 50), pct(values, 99)])
    return out


def mtp_row(m: Row) -> list[Any]:
    return [m.client, m.c, m.reported["itl_p50"], pct(m.true_itl, 50), pct(m.itl_err, 50),
            m.reported["icl_p50"], pct(m.true_icl, 50), pct(m.true_tpc, 50),
            m.reported["tpot_p50"]]


def verdicts(rows: list[Row]) -> tuple[list[str], list[str]]:
    """(a line per concurrency, the targets missed); the peer ratio is reported, not a target."""
    lines, missed = [], []
    ours = {m.c: m for m in rows if m.client == "bench"}
    peer = {m.c: m for m in rows if m.client != "bench"}
    for c, m in sorted(ours.items()):
        checks = []
        for key, errs, reported, true in (
                ("ttft_p99_ms", m.ttft_err, "ttft_p99", m.true_ttft),
                ("itl_p99_ms", m.itl_err, "itl_p99", m.true_itl)):
            bound = TARGETS[key].get(c)
            if bound is None:
                continue
            worst = max(abs_p99(errs), abs(m.reported[reported] - pct(true, 99)))
            check = f"{key.split('_')[0].upper()} p99 error {worst:.3f} ms {'<=' if worst <= bound else '>'} {bound} ms"
            checks.append(check)
            if not worst <= bound:  # NaN (no samples) misses too
                missed.append(f"C={c}: {check}")
        if c in peer:
            p = peer[c]
            for name, a, b in (("TTFT", m.ttft_err, p.ttft_err), ("ITL", m.itl_err, p.itl_err)):
                ratio = abs_p99(b) / max(abs_p99(a), 1e-9)
                checks.append(f"{name} |err| p99 peer/ours {ratio:.1f}x "
                              f"({'>=' if ratio >= 10 else '<'} 10x)")
        lines.append(f"C={c}: " + "; ".join(checks))
    return lines, missed


def main() -> int:
    _pin(CLIENT_CORE, SCHED)
    watch = LoadWatch()
    skip = peer_available()
    measured: list[Row] = []
    mtp: list[Row] = []
    load_before = os.getloadavg()
    server_sched = "not started"
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            for cfg, points, sink in ((SIM, CONCURRENCY, measured),
                                      (SIM_MTP, [MTP_CONCURRENCY], mtp)):
                sim = Sim(cfg, watch)
                server_sched = sim.sched
                try:
                    for c in points:
                        sink.append(run_ours(sim, c, tmp, watch))
                        sim.reset()
                        if skip is None:
                            try:
                                sink.append(run_peer(sim, c, tmp, watch))
                            except (RuntimeError, KeyError, subprocess.TimeoutExpired) as exc:
                                skip = f"vllm bench serve failed at C={c}: {exc}"
                            sim.reset()
                finally:
                    sim.stop()
    finally:
        watch.stop()
    load_after = os.getloadavg()
    print(f"Machine: {os.cpu_count()} cores; load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.1f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.1f}' for x in load_after)}.")
    print(f"Simulated server on core {SERVER_CORE} ({server_sched}), clients on core {CLIENT_CORE} "
          f"({_sched_name(0)}); {INPUT_LEN} in / "
          f"{OUTPUT_LEN} out tokens, one token per 10 ms step. Errors in ms = client measured - "
          "server actual, paired per request (TTFT, TPOT) or per sample (ITL).\n")
    rows = [*measured, *mtp]
    fallback = sum(m.truth_write_stamped for m in rows)
    print(f"Truth: kernel transmit stamps for every chunk of {sum(m.truth_requests for m in rows) - fallback}"
          f" requests; {fallback} requests had a chunk timed by its write returning instead.")
    print(tabulate([accuracy_row(m) for m in measured], tablefmt="github", floatfmt=".3f",
                   missingval="-",
                   headers=["client", "C", "requests", "failed", "TTFT err p50", "TTFT |err| p99",
                            "ITL err p50", "ITL |err| p99", "TPOT |err| p99", "TTFT p99 delta",
                            "ITL p99 delta", "spurious ITL", "coalesced events"]))
    print("\nMachine load during each row's requests:\n")
    print(tabulate([load_row(m) for m in [*measured, *mtp]], tablefmt="github", floatfmt=".1f",
                   missingval="-",
                   headers=["client", "C", "client CPU %", "load avg 1m", "steal %",
                            "others on client core %", "others on server core %",
                            "client invol. cs/s", "server invol. cs/s", "client waiting for CPU %",
                            "server waiting for CPU %"]))
    print("\nWhere the time goes between the client's stamps and the server's (ms, first content "
          "event):\n")
    print(tabulate(phase_rows(measured), tablefmt="github", floatfmt=".3f",
                   headers=["client", "C", "phase", "p50", "p99"]))
    if mtp:
        print(f"\nMTP: one {SIM_MTP['decode_base_s'] * 1e3:.0f} ms step emits "
              f"{SIM_MTP['spec_tokens'] + 1} tokens in one chunk (true per-token latency "
              f"{SIM_MTP['decode_base_s'] * 1e3 / (SIM_MTP['spec_tokens'] + 1):.0f} ms):\n")
        print(tabulate([mtp_row(m) for m in mtp], tablefmt="github", floatfmt=".2f",
                       missingval="-",
                       headers=["client", "C", "reported ITL p50", "true per-token ITL p50",
                                "ITL err p50", "reported ICL p50", "true ICL p50",
                                "tokens/chunk p50", "reported TPOT p50"]))
    print("\nTargets (TTFT p99 error <= 1 ms up to C=64, <= 5 ms at C=256; ITL p99 error <= 1 ms "
          "at C=256; the larger of |err| p99 and |p99 delta| counts) and the peer ratio:")
    lines, missed = verdicts(measured)
    for line in lines:
        print("  " + line)
    if skip is not None:
        print(f"peer rows skipped: {skip}")
    failed = sum(m.failed for m in measured)
    if failed:
        missed.append(f"{failed} requests failed (every request must succeed)")
    if missed:
        print(f"MISSED {len(missed)} target(s) (load average now "
              f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}):")
        for line in missed:
            print("  " + line)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
