"""Figures from node telemetry: energy per output token against concurrency (every run that has
telemetry), and one sweep's per-node power / SM clock / temperature timeline with the point
boundaries. Flagged points (a node throttled, swapped or lost) are ringed in red and the node
named, as the table marks them. Drawn with bench.plots' page style; registered in `FIGURES`
(runs -> figure) and `timeline(series, doc)` (needs telemetry.csv)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench import plots
from bench.plots import Run

FLAG_COLOR = "#c0392b"


def _flagged(ax: Any, r: Run, column: str) -> None:
    f = r.frame[r.frame["node_flags"].map(lambda v: isinstance(v, str))]
    for _, row in f.iterrows():
        if row[column] is None or not np.isfinite(row[column]):
            continue
        ax.scatter([row["concurrency"]], [row[column]], s=180, facecolors="none", edgecolors=FLAG_COLOR,
                   linewidths=1.8, zorder=5)
        ax.annotate(row["node_flags"], (row["concurrency"], row[column]), xytext=(6, 8),
                    textcoords="offset points", fontsize=8, color=FLAG_COLOR)


@plots._styled  # noqa: SLF001 - the page style of the sibling module
def energy(runs: Sequence[Run]) -> Figure | None:
    """Joules per output token against concurrency (lower is better); None without telemetry."""
    have = [r for r in runs if "joules_per_token" in r.frame and r.has("joules_per_token")]
    if not have:
        return None
    note = ("Energy: GPU power.draw of every node integrated over the point / output tokens. "
            "Red ring: a node throttled, swapped or was lost (named).")
    fig, (ax,) = plots._figure(have, plots._title(have, "energy per output token"), note=note)  # noqa: SLF001
    for i, r in enumerate(have):
        ax.plot(r.frame["concurrency"], r.frame["joules_per_token"], marker="o", color=plots._color(i))  # noqa: SLF001
        _flagged(ax, r, "joules_per_token")
    plots._concurrency_axis(ax, have)  # noqa: SLF001
    ax.set_ylim(bottom=0)
    ax.set_ylabel("joules per output token (all nodes)")
    plots._legend(ax, have)  # noqa: SLF001
    return fig


FIGURES: dict[str, Callable[[Sequence[Run]], Figure | None]] = {"energy": energy}
# bench.plots' figures against concurrency whose flagged points are ringed too: figure -> column
MARKED = {"throughput": "output_tok_s", "per_user": "decode_tok_s_p50", "ttft": "ttft_p50_ms"}


def mark_flagged(name: str, fig: Figure, runs: Sequence[Run]) -> None:
    """Ring the flagged points (node named) on one of bench.plots' figures, in place."""
    column = MARKED.get(name)
    if column is None or not fig.axes:
        return
    for r in runs:
        if "node_flags" in r.frame and r.frame["node_flags"].map(lambda v: isinstance(v, str)).any():
            _flagged(fig.axes[0], r, column)

PANELS = (("power_w", "GPU power (W)"), ("sm_clock_mhz", "SM clock (MHz)"), ("temp_c", "temperature (\u00b0C)"))


@plots._styled  # noqa: SLF001
def timeline(series: Mapping[str, Sequence[Mapping[str, Any]]], run: Run) -> Figure | None:
    """Per-node power, SM clock and temperature across the sweep; point boundaries as shaded spans
    labelled C=N (red when the point is flagged). None when no GPU samples."""
    gpu = {n: [s for s in ss if s.get("source") == "gpu"] for n, ss in series.items()}
    gpu = {n: ss for n, ss in gpu.items() if ss}
    if not gpu:
        return None
    t0 = min(s["t"] for ss in gpu.values() for s in ss)
    fig, axes = plots._figure([run], plots._title([run], "node power, clock and temperature during the sweep"),  # noqa: SLF001
                              ncols=3)
    points = [p for p in run.doc.get("points", []) if (p.get("telemetry") or {}).get("start")]
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        for i, (node, ss) in enumerate(sorted(gpu.items())):
            xs = [s["t"] - t0 for s in ss if key in s]
            ys = [s[key] for s in ss if key in s]
            ax.plot(xs, ys, color=plots._color(i), linewidth=1.0, label=node)  # noqa: SLF001
        for p in points:
            tel = p["telemetry"]
            bad = bool(tel.get("flagged_nodes"))
            ax.axvspan(tel["start"] - t0, tel["end"] - t0, color=FLAG_COLOR if bad else "#888888",
                       alpha=0.12 if bad else 0.07, linewidth=0)
            ax.text((tel["start"] + tel["end"]) / 2 - t0, 1.0, f"C={p['concurrency']}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color=FLAG_COLOR if bad else "#555555")
        ax.set_xlabel("seconds into the sweep")
        ax.set_ylabel(label)
    axes[0].legend(loc="lower left", fontsize=7, frameon=False)
    return fig
