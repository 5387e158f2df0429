"""A soak: 100,000 requests at C=64 with short outputs against the embedded simulated endpoint,
in one process (like `python -m bench --demo`), with faults injected every few thousand requests.
Prints a table; run with `python benchmarks/soak.py` from the repository root.

The requests run as consecutive points of GX10_SOAK_SEGMENT (default 5,000) requests through the
sweep's own pieces in the sweep's order (`run_point`, `append_lines` to requests.jsonl,
`write_json_atomic` of results.json), into one results folder, so results.json grows by one point
per segment as a long sweep's does. A point keeps its own results in memory until it ends (by
design: the summary needs them), so a soak is many bounded points, not one endless one.

Reported: the process's RSS at the start, after the first 10 % (the warm-up: imports, pools, the
simulator's truth records filling to `truth_keep`) and at the end, and the growth from 10 % to the
end (target: within 5 %); requests lost (every request must be in requests.jsonl exactly once,
and results.json's per-point totals must equal it: 0 lost); the slowest results.json rewrite;
the failures by kind against the faults the simulator injected (HTTP 500s, cut streams, stalled
streams that end on the client's read timeout); and open file descriptors and asyncio tasks at the
start and the end (a leaked socket or task per fault would show). GX10_SOAK_REQUESTS changes the
total (CI runs a short one: tests/bench/test_soak.py).

Measured 2026-12-02 on the shared 2-core machine (load 4-6, other sessions' tests running):
100,000 requests in 425 s (235 req/s); RSS 86.8 MB at start, 119.9 MB at 10 %, 120.5 MB at the
end (+0.5 %); 0 lost (100,000 lines, 100,000 distinct, results.json 100,000); results.json
rewrite slowest 469.5 ms (median 11.0 ms, 94 KiB, 20 points: the slowest is an fsync on a
busy disk); 33 HTTP 500s, 28 cut streams and 20 stalls injected and exactly those failures
seen; open fds 11 -> 10, asyncio tasks 3 -> 1.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench import results
from bench.connection import Timeouts
from bench.prompts import calibrate_words
from bench.sim import SimConfig, SimServer
from bench.sweep import SweepConfig, preflight, run_point

TOTAL = int(os.environ.get("GX10_SOAK_REQUESTS", "100000"))
SEGMENT = int(os.environ.get("GX10_SOAK_SEGMENT", "5000"))
C = 64
INPUT_LEN, OUTPUT_LEN = 16, 8
READ_TIMEOUT_S = 1.0
FAULTS = {"fail_every": 2999, "cut_every": 3499, "stall_every": 4999}
SIM = SimConfig(model="soak", max_batch=256, decode_base_s=0.002, decode_per_seq_s=0.0,
                prefill_base_s=0.0005, prefill_per_token_s=0.0, stall_s=READ_TIMEOUT_S * 3,
                fault_after_tokens=2, fail_every=FAULTS["fail_every"], cut_every=FAULTS["cut_every"],
                stall_every=FAULTS["stall_every"])
RSS_GROWTH_TARGET = 0.05


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def expected_faults(arrivals: int) -> Counter[str]:
    """What the simulator injected over `arrivals` requests (its per-Nth rule, app.py)."""
    got: Counter[str] = Counter()
    for n in range(1, arrivals + 1):
        if n % FAULTS["fail_every"] == 0:
            got["http_500"] += 1
        elif n % FAULTS["cut_every"] == 0:
            got["cut"] += 1
        elif n % FAULTS["stall_every"] == 0:
            got["stall"] += 1
    return got


async def soak(folder: Path) -> dict[str, Any]:
    async with SimServer(SIM) as sim:
        cfg = SweepConfig(base_url=sim.base_url, model=SIM.model, label="soak", concurrency=[C],
                          input_len=INPUT_LEN, output_len=OUTPUT_LEN, requests_per_point=SEGMENT,
                          warmup=0, results_dir=folder, rerun=True,
                          timeouts=Timeouts(connect_s=5.0, read_s=READ_TIMEOUT_S, total_s=60.0))
        version = await preflight(cfg)
        words, fitted = await calibrate_words(cfg)
        out = cfg.folder
        out.mkdir(parents=True, exist_ok=True)
        req_path, res_path = out / results.REQUESTS_FILE, out / results.RESULTS_FILE
        req_path.unlink(missing_ok=True)
        doc: dict[str, Any] = {"schema_version": results.SCHEMA_VERSION, "label": "soak", "model": cfg.model,
                               "base_url": cfg.base_url, "server_version": version, "settings": cfg.settings(),
                               "points": []}
        gc.collect()
        fds0, tasks0, rss0 = open_fds(), len(asyncio.all_tasks()), rss_mb()
        samples = [(0, rss0)]
        rewrites: list[float] = []
        failures: Counter[str] = Counter()
        done = 0
        t0 = time.perf_counter_ns()
        start = time.monotonic()
        segment = 0
        while done < TOTAL:
            cfg.requests_per_point = min(SEGMENT, TOTAL - done)
            run_id = f"soak{segment:03d}"
            point, rows = await run_point(cfg, C, words, run_id, t0, progress=False, fit=fitted)
            for r in rows:
                r["run_id"] = run_id
            point["run_id"] = run_id
            results.append_lines(req_path, rows)
            doc["points"].append(point)
            w = time.perf_counter()
            results.write_json_atomic(res_path, doc)  # type: ignore[arg-type]
            rewrites.append(time.perf_counter() - w)
            failures.update(point["failures"])
            done += len(rows)
            segment += 1
            del rows, point
            samples.append((done, rss_mb()))
            print(f"  {done:>7} requests  {time.monotonic() - start:6.0f} s  RSS {samples[-1][1]:.1f} MB", flush=True)
        wall = time.monotonic() - start
        arrivals = sim._arrivals  # noqa: SLF001 - the simulator's own count of what it was sent
        truth_kept = len(sim.truth)
    await asyncio.sleep(0.2)  # let closed transports finish closing
    gc.collect()
    fds1, tasks1 = open_fds(), len(asyncio.all_tasks())
    return {"samples": samples, "rewrites": rewrites, "failures": failures, "wall": wall, "arrivals": arrivals,
            "truth_kept": truth_kept, "fds": (fds0, fds1), "tasks": (tasks0, tasks1), "req_path": req_path,
            "res_path": res_path}


def check_lost(req_path: Path, res_path: Path) -> tuple[int, int, int, int]:
    """(lines, distinct rids, results.json total, lost = requests sent but not exactly once)."""
    rids: Counter[str] = Counter()
    with req_path.open() as f:
        for line in f:
            rids[json.loads(line)["rid"]] += 1
    doc = json.loads(res_path.read_text())
    total = sum(p["warmup"] + p["completed"] + p["failed"] for p in doc["points"])
    lines = sum(rids.values())
    lost = (TOTAL - len(rids)) + sum(n - 1 for n in rids.values() if n > 1)
    return lines, len(rids), total, lost


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gx10-soak-") as tmp:
        r = asyncio.run(soak(Path(tmp)))
        lines, distinct, total, lost = check_lost(r["req_path"], r["res_path"])
        size_kb = r["res_path"].stat().st_size / 1024
    samples = r["samples"]
    rss_start = samples[0][1]
    at10 = next(rss for n, rss in samples if n >= TOTAL * 0.1)
    rss_end = samples[-1][1]
    growth = (rss_end - at10) / at10
    expected = expected_faults(r["arrivals"])
    seen = {k: v for k, v in sorted(r["failures"].items())}
    rows = [
        ["requests", f"{TOTAL:,} at C={C}, {INPUT_LEN} in / {OUTPUT_LEN} out tokens, {len(r['rewrites'])} points",
         f"{r['wall']:.0f} s, {TOTAL / r['wall']:.0f} req/s"],
        ["RSS start / 10 % / end", f"{rss_start:.1f} / {at10:.1f} / {rss_end:.1f} MB",
         f"10 % -> end {growth * 100:+.1f} % (target within {RSS_GROWTH_TARGET * 100:.0f} %): "
         + ("ok" if abs(growth) <= RSS_GROWTH_TARGET else "FAIL")],
        ["requests lost", f"{lost} (requests.jsonl {lines:,} lines, {distinct:,} distinct; results.json {total:,})",
         "ok" if lost == 0 and lines == distinct == total == TOTAL else "FAIL"],
        ["results.json rewrite", f"slowest {max(r['rewrites']) * 1000:.1f} ms, median "
         f"{sorted(r['rewrites'])[len(r['rewrites']) // 2] * 1000:.1f} ms", f"final size {size_kb:.0f} KiB"],
        ["faults injected", ", ".join(f"{k} {v}" for k, v in sorted(expected.items())), f"{r['arrivals']:,} arrivals"],
        ["failures seen", ", ".join(f"{k} {v}" for k, v in seen.items()) or "none",
         "ok" if sum(seen.values()) == sum(expected.values()) else "FAIL"],
        ["open fds start / end", f"{r['fds'][0]} / {r['fds'][1]}", "ok" if r["fds"][1] <= r["fds"][0] else "FAIL"],
        ["asyncio tasks start / end", f"{r['tasks'][0]} / {r['tasks'][1]}",
         "ok" if r["tasks"][1] <= r["tasks"][0] else "FAIL"],
        ["simulator truth records kept", f"{r['truth_kept']:,} (truth_keep {SIM.truth_keep:,})", ""],
    ]
    print()
    print(tabulate(rows, headers=["soak", "measured", "verdict"], tablefmt="github"))
    print()
    print("RSS by requests done: " + ", ".join(f"{n // 1000}k {rss:.0f}" for n, rss in samples[:: max(1, len(samples) // 10)]))
    bad = [row[0] for row in rows if str(row[2]).endswith("FAIL")]
    if bad:
        print(f"soak: FAILED: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
