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


RATIOS_FILE = "ratios.md"


def _acceptance(docs: Sequence[ResultsDoc], c: int) -> str:
    vals = [p.get("server", {}).get("acceptance_length")  # type: ignore[union-attr]
            for d in docs for p in d["points"] if p["concurrency"] == c]
    present = [float(v) for v in vals if v is not None]
    return f"{sum(present) / len(present):.2f}" if present else "-"


def _cell(x: dict[str, Any]) -> str:
    verdict = "noise" if x["within_noise"] else ("higher" if x["ratio"] > 1 else "lower")
    return f"{x['ratio']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}] {verdict}"


def ratios_markdown(name_a: str, name_b: str, a: Sequence[ResultsDoc],
                    b: Sequence[ResultsDoc]) -> str:
    """The comparison table: B/A per concurrency with its 95 % CI and a verdict, and each side's
    acceptance length beside the real decode speedup (acceptance alone is not the speedup)."""
    rows = compare_runs(a, b, figures=("output_tok_s", "decode_tok_s_mean", "ttft_ms_p50"))
    head = (f"{name_b} / {name_a}, {len(b)} vs {len(a)} repeats; 95 % CI (Welch on logs, "
            "docs/metrics.md); 'noise' where the interval contains 1.\n\n"
            "| C | output tok/s | decode tok/s per user (real speedup) | TTFT p50 | "
            f"accept len {name_a} | accept len {name_b} |\n|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        c = r["concurrency"]
        lines.append(f"| {c} | {_cell(r['output_tok_s'])} | {_cell(r['decode_tok_s_mean'])} | "
                     f"{_cell(r['ttft_ms_p50'])} | {_acceptance(a, c)} | {_acceptance(b, c)} |")
    return "\n".join(lines) + "\n"


def write_ratios(names: str, results_dir: str, out_dir: str) -> str:
    """For `compare.ipynb`: ratios.md of the first two names when both have repeats; otherwise
    a note saying how to get them. Returns the text written."""
    from pathlib import Path

    from bench.repeats import load_repeats
    parts = [n.strip() for n in names.split(",") if n.strip()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        a, b = (load_repeats(Path(results_dir) / n) for n in parts[:2])
        text = ratios_markdown(parts[0], parts[1], a, b)
    except (BenchError, ValueError) as exc:
        text = f"No ratios: {exc} (both runs need `--repeats 2` or more).\n"
    (out / RATIOS_FILE).write_text(text)
    return text
