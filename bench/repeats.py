"""Repeated sweeps: each point measured N times, interleaved, summarized as mean and 95 % CI.

Interleaving: repeat i runs every concurrency point once before repeat i+1 starts, so a slow
drift of the server (clocks, heat, caches) spreads over all points instead of landing on one.
Each repeat is an ordinary sweep in `<folder>/repeats/r<i>`, so it resumes like any sweep.

The interval is Student's t on the N per-repeat values of a figure (mean +- t(0.975, N-1) *
s / sqrt(N), s the sample standard deviation); docs/metrics.md says why. No scipy: the t
quantiles are tabulated below (df > 30 uses 1.96, error < 2.5 %).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.shapes import ResultsDoc
from bench.sweep import SweepConfig, run_sweep

# t(0.975, df) for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

# The summary figures that get an interval: (name in the output, path in a point summary).
FIGURES: dict[str, tuple[str, ...]] = {
    "output_tok_s": ("output_tok_s",),
    "request_s": ("request_s",),
    "ttft_ms_p50": ("ttft_ms", "p50"),
    "tpot_ms_mean": ("tpot_ms", "mean"),
    "tpot_ms_p50": ("tpot_ms", "p50"),
    "e2el_ms_p50": ("e2el_ms", "p50"),
    "decode_tok_s_mean": ("decode_tok_s", "mean"),
}


def t975(df: float) -> float:
    """Two-sided 95 % Student t quantile; a fractional df (Welch) rounds down (wider, safe)."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df} must be at least 1")
    d = int(math.floor(df))
    return _T975[d - 1] if d <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """{n, mean, sd, ci_low, ci_high}; the interval is None with fewer than two values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    mean = sum(values) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def figure(point: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = point
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is None else float(value)


def per_concurrency(docs: Sequence[ResultsDoc]) -> dict[int, dict[str, list[float]]]:
    """{C: {figure: [value of repeat 1, repeat 2, ...]}} over the repeats' results docs."""
    out: dict[int, dict[str, list[float]]] = {}
    for doc in docs:
        for p in doc["points"]:
            row = out.setdefault(p["concurrency"], {name: [] for name in FIGURES})
            for name, path in FIGURES.items():
                v = figure(dict(p), path)
                if v is not None:
                    row[name].append(v)
    return out


def summarize_repeats(docs: Sequence[ResultsDoc]) -> list[dict[str, Any]]:
    """One row per concurrency: every figure as {n, mean, sd, ci_low, ci_high}."""
    return [{"concurrency": c, **{name: mean_ci(vals) for name, vals in figs.items()}}
            for c, figs in sorted(per_concurrency(docs).items())]


def repeat_config(cfg: SweepConfig, i: int) -> SweepConfig:
    """The sweep of repeat `i` (1-based): same settings, its own folder under the run's."""
    return dataclasses.replace(cfg, results_dir=cfg.folder / "repeats", label=f"r{i}")


def run_repeats(cfg: SweepConfig, n: int, progress: bool = True) -> list[ResultsDoc]:
    """Run `n` interleaved repeats of the sweep; return their results docs in order."""
    if n < 1:
        raise BenchError(f"--repeats {n} must be at least 1")
    return [run_sweep(repeat_config(cfg, i), progress) for i in range(1, n + 1)]


def load_repeats(folder: str | Path) -> list[ResultsDoc]:
    """The repeats' results docs under a run folder, in repeat order."""
    from bench.results import RESULTS_FILE, load_results
    base = Path(folder) / "repeats"
    dirs = sorted((d for d in base.glob("r*") if (d / RESULTS_FILE).exists()),
                  key=lambda d: int(d.name[1:]) if d.name[1:].isdigit() else 0)
    if not dirs:
        raise BenchError(f"{base} holds no repeats; run the sweep with --repeats N first")
    return [load_results(d) for d in dirs]


REPEATS_FILE = "repeats.json"


def write_summary(cfg: SweepConfig, docs: Sequence[ResultsDoc]) -> Path:
    """`<folder>/repeats.json`: the per-concurrency means and intervals, and the repeats' folders."""
    import json
    path = cfg.folder / REPEATS_FILE
    body = {"repeats": len(docs), "method": "student-t 95% on per-repeat values",
            "folders": [str(repeat_config(cfg, i).folder) for i in range(1, len(docs) + 1)],
            "points": summarize_repeats(docs)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def pm(ci: dict[str, Any], digits: int = 1) -> str:
    """"12.3 ± 0.4" (half-width of the 95 % CI), or the bare mean with one repeat."""
    if ci["mean"] is None:
        return "-"
    if ci["ci_high"] is None:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} ± {(ci['ci_high'] - ci['ci_low']) / 2:.{digits}f}"


def repeats_table(rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub table of the summary rows, each figure as mean ± CI half-width."""
    names = ("output_tok_s", "request_s", "ttft_ms_p50", "tpot_ms_mean", "e2el_ms_p50")
    lines = ["| C | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | " + " | ".join(pm(r[n]) for n in names) + " |")
    return "\n".join(lines)


def run_cli(make_config: Any, n: int, progress: bool = True) -> int:
    """`python -m bench --repeats N`: run, print the ± table, write repeats.json, table.md
    (mean ± 95 % CI per cell), reproduce.md and the figures with 95 % bands
    (bench/repeatstable.py); exit code."""
    from bench.cli import attempt
    got = attempt(make_config, lambda cfg: run_repeats(cfg, n, progress),
                  "finished repeats are kept under repeats/")
    if isinstance(got, int):
        return got
    cfg, docs = got
    from bench.repeatstable import render_repeats  # it imports bench.report, which this must not
    print(repeats_table(summarize_repeats(docs)))
    print(f"repeats: {write_summary(cfg, docs)}")
    rendered = render_repeats(cfg.folder, "hardware not recorded")
    print(f"table: {rendered.table}; figures with 95 % bands (PNG, SVG) and reproduce.md beside it")
    return 0
