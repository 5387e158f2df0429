"""Figures of an open-loop run (bench/openloop.py) against the request rate: goodput (and the
achieved arrival rate) vs rate, and latency (TTFT p50/p99, TPOT p50) vs rate. Same frame,
caption, banner and colours as `bench.plots`; points whose sends ran late are drawn hollow.

Public: `goodput_vs_rate`, `latency_vs_rate`, `FIGURES`, `is_rate_run(run)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.plots import Run, _color, _figure, _legend, _styled, _title

RATE_LABEL = "request rate asked (requests/s, open loop)"


def is_rate_run(run: Run) -> bool:
    return (run.doc.get("settings") or {}).get("mode") == "rate"


def _rate_axis(ax: Axes, runs: Sequence[Run]) -> None:
    rates = sorted({float(x) for r in runs for x in r.frame["request_rate"]})
    if len(rates) > 1 and rates[-1] / rates[0] >= 8:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(RATE_LABEL)


def _late_marks(ax: Axes, run: Run, column: str, color: str) -> None:
    late = run.frame[run.frame["send_late"].fillna(False).astype(bool)]
    if not late.empty:
        ax.plot(late["request_rate"], late[column], linestyle="none", marker="o", markersize=11,
                markerfacecolor="none", markeredgecolor=color)


@_styled
def goodput_vs_rate(runs: Sequence[Run]) -> Figure | None:
    """Goodput (requests/s within every SLO) and the achieved arrival rate against the rate."""
    runs = [r for r in runs if is_rate_run(r)]
    if not runs:
        return None
    fig, (ax,) = _figure(runs, _title(runs, "goodput against request rate"),
                         note="Solid: goodput (requests/s meeting every SLO); dashed: requests "
                              "sent per second. Hollow rings: the client's sends ran late.")
    for i, r in enumerate(runs):
        f = r.frame.sort_values("request_rate")
        ax.plot(f["request_rate"], f["goodput"], marker="o", color=_color(i))
        ax.plot(f["request_rate"], f["achieved_rate"], marker="s", linestyle="--", color=_color(i))
        _late_marks(ax, r, "goodput", _color(i))
    _rate_axis(ax, runs)
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    _legend(ax, runs, [("-", "o", "goodput"), ("--", "s", "sent per second")])
    return fig


@_styled
def latency_vs_rate(runs: Sequence[Run]) -> Figure | None:
    """TTFT p50 and p99 (left) and TPOT p50 (right) against the rate."""
    runs = [r for r in runs if is_rate_run(r)]
    if not runs:
        return None
    fig, (left, right) = _figure(runs, _title(runs, "latency against request rate"), ncols=2,
                                 note="Left: TTFT p50 (solid) and p99 (dashed); right: TPOT p50.")
    for i, r in enumerate(runs):
        f = r.frame.sort_values("request_rate")
        left.plot(f["request_rate"], f["ttft_p50_ms"], marker="o", color=_color(i))
        left.plot(f["request_rate"], f["ttft_p99_ms"], marker="s", linestyle="--", color=_color(i))
        right.plot(f["request_rate"], f["tpot_p50_ms"], marker="o", color=_color(i))
        _late_marks(left, r, "ttft_p50_ms", _color(i))
    for ax, label in ((left, "TTFT (ms)"), (right, "TPOT (ms)")):
        _rate_axis(ax, runs)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    _legend(left, runs, [("-", "o", "p50"), ("--", "s", "p99")])
    return fig


FIGURES = {"goodput_vs_rate": goodput_vs_rate, "latency_vs_rate": latency_vs_rate}
