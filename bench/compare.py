"""A/B comparison of two runs: per concurrency, the ratio B/A of a figure with a 95 % CI.

The ratio's interval comes from Welch's t on the logs of the per-repeat values: log B - log A
has mean d and standard error sqrt(sA^2/nA + sB^2/nB), the Welch-Satterthwaite df gives t,
and exp(d +- t * se) is the interval for the ratio of geometric means. Logs make the interval
symmetric for "1.2x faster" and "1/1.2x slower". Where the interval contains 1 the difference
is within noise. Needs at least two repeats per side (`--repeats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.errors import BenchError
from bench.repeats import FIGURES, per_concurrency, t975
from bench.shapes import ResultsDoc


def _mv(values: Sequence[float]) -> tuple[float, float, int]:
    logs = [math.log(v) for v in values]
    n = len(logs)
    m = sum(logs) / n
    var = sum((x - m) ** 2 for x in logs) / (n - 1)
    return m, var, n


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """{ratio, ci_low, ci_high, within_noise} of mean(b)/mean(a) on the log scale."""
    if len(a) < 2 or len(b) < 2:
        raise BenchError("a ratio interval needs at least two repeats per run (--repeats 2+)")
    if min(a) <= 0 or min(b) <= 0:
        raise BenchError("a ratio needs positive values on both sides")
    ma, va, na = _mv(a)
    mb, vb, nb = _mv(b)
    se2 = va / na + vb / nb
    d = mb - ma
    if se2 == 0:
        lo = hi = d
    else:
        df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        half = t975(max(1.0, df)) * math.sqrt(se2)
        lo, hi = d - half, d + half
    return {"ratio": math.exp(d), "ci_low": math.exp(lo), "ci_high": math.exp(hi),
            "within_noise": math.exp(lo) <= 1.0 <= math.exp(hi)}


def compare_runs(a: Sequence[ResultsDoc], b: Sequence[ResultsDoc],
                 figures: Sequence[str] = ("output_tok_s", "tpot_ms_mean", "ttft_ms_p50"),
                 ) -> list[dict[str, Any]]:
    """One row per concurrency both runs measured: {concurrency, figure: ratio_ci(...)}."""
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise BenchError(f"unknown figure(s) {unknown}; known: {', '.join(FIGURES)}")
    pa, pb = per_concurrency(a), per_concurrency(b)
    rows = []
    for c in sorted(set(pa) & set(pb)):
        row: dict[str, Any] = {"concurrency": c}
        for f in figures:
            row[f] = ratio_ci(pa[c][f], pb[c][f])
        rows.append(row)
    if not rows:
        raise BenchError("the two runs share no concurrency point")
    return rows
