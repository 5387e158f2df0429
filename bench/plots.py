"""Blog figures from sweep results: one function per figure, each taking one run or several.

Library code so the notebooks stay thin: bench.ipynb draws one run, compare.ipynb overlays
several with the same functions. Every figure carries a caption naming the model, the hardware
label, the vLLM version, the run date and the workload, and figures drawn from the simulated
endpoint carry a red banner and a watermark, so a test double is never mistaken for a result.

Sized for a blog column: 8 in wide at 100 dpi is 800 px; PNGs are saved at 2x (1600 px) for
high-density screens, SVGs beside them.

Public: `Run` (one run's frame plus what the caption needs), `throughput`, `per_user`, `ttft`,
`tradeoff`, `mtp` and `errors` (the last two return None when there is nothing to draw),
`FIGURES` (name -> function, in blog order), `save(fig, folder, name) -> [png, svg]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from bench.results import points_frame

WIDTH_IN = 8.0
AXES_HEIGHT_IN = 4.0
PNG_DPI = 200
SIM_BANNER = "SIMULATED ENDPOINT \u2014 NOT A MEASUREMENT"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
CONCURRENCY_LABEL = "concurrency (requests in flight)"
STYLE: dict[str, Any] = {
    "font.size": 10.5,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.8,
    "lines.linewidth": 2.0,
    "lines.markersize": 6,
    "svg.hashsalt": "gx10-ops",
}


@dataclass(frozen=True, eq=False)
class Run:
    """One model's sweep as the figures need it."""

    name: str  # legend and title: the served model name without its organisation
    model: str  # the served model name
    hardware: str
    version: str
    date: str
    workload: str
    simulated: bool
    frame: pd.DataFrame  # bench.results.points_frame
    failures: pd.DataFrame  # index concurrency, one column per failure kind, counts
    doc: dict[str, Any] = field(repr=False)  # the results document itself

    @classmethod
    def from_doc(cls, doc: dict[str, Any], hardware: str, simulated: bool) -> Run:
        model = str(doc.get("model") or doc.get("label") or "unknown model")
        settings = doc.get("settings") or {}
        kinds = pd.DataFrame(
            [{"concurrency": p["concurrency"], **(p.get("failures") or {})} for p in doc["points"]]
        ).set_index("concurrency").sort_index().fillna(0)
        return cls(
            name=model.rsplit("/", 1)[-1],
            model=model,
            hardware=hardware,
            version=str(doc.get("server_version") or "unknown"),
            date=str(doc.get("started_at") or "unknown date")[:10],
            workload=workload(settings),
            simulated=simulated,
            frame=points_frame(doc),
            failures=kinds.astype(int),
            doc=doc,
        )

    def has(self, column: str) -> bool:
        return bool(self.frame[column].notna().any())


def workload(settings: dict[str, Any]) -> str:
    """'1024 in / 512 out tokens, chat API, temperature 0' from results.json settings."""
    return (f"{settings.get('input_len', '?')} in / {settings.get('output_len', '?')} out tokens per "
            f"request, {settings.get('api', '?')} API, temperature {settings.get('temperature', 0)}")


def caption_lines(runs: Sequence[Run]) -> list[str]:
    """What every figure states about where its numbers come from."""
    if len(runs) == 1:
        r = runs[0]
        return [f"Model: {r.model}  \u00b7  Hardware: {r.hardware}",
                f"vLLM {r.version}  \u00b7  run {r.date}  \u00b7  {r.workload}"]
    lines = []
    hardware = {r.hardware for r in runs}
    if len(hardware) == 1:
        lines.append(f"Hardware: {runs[0].hardware}")
    for r in runs:
        where = "" if len(hardware) == 1 else f" on {r.hardware}"
        lines.append(f"{r.model}{where}: vLLM {r.version}, run {r.date}, {r.workload}")
    return lines


def _styled(fn: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _figure(runs: Sequence[Run], title: str, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A blog-width figure: banner (if simulated), title, axes, caption; heights in inches."""
    simulated = any(r.simulated for r in runs)
    lines = caption_lines(runs)
    caption_in = 0.12 + 0.19 * len(lines)
    banner_in = 0.38 if simulated else 0.0
    title_in = 0.42
    height = AXES_HEIGHT_IN + caption_in + banner_in + title_in
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    engine = fig.get_layout_engine()
    top = 1 - (banner_in + title_in) / height
    bottom = caption_in / height
    engine.set(rect=(0.0, bottom, 1.0, top - bottom), w_pad=0.08, h_pad=0.06)  # type: ignore[call-arg]
    axes = list(np.atleast_1d(fig.subplots(1, ncols)))
    fig.text(0.015, 1 - (banner_in + 0.08) / height, title, ha="left", va="top",
             fontsize=13, fontweight="bold")
    fig.text(0.015, 0.08 / height, "\n".join(lines), ha="left", va="bottom", fontsize=8.5,
             color="#444444", linespacing=1.45)
    if simulated:
        fig.text(0.5, 1 - 0.06 / height, SIM_BANNER, ha="center", va="top", fontsize=12,
                 fontweight="bold", color="white",
                 bbox={"boxstyle": "square,pad=0.35", "facecolor": "#c0392b", "edgecolor": "none"})
        for ax in axes:
            mark = ax.text(0.5, 0.5, "SIMULATED", transform=ax.transAxes, ha="center",
                           va="center", rotation=22, fontsize=54 if ncols == 1 else 36,
                           fontweight="bold", color="#c0392b", alpha=0.10, zorder=0, clip_on=True)
            mark.set_in_layout(False)
    return fig, axes


def _title(runs: Sequence[Run], what: str) -> str:
    return f"{runs[0].name}: {what}" if len(runs) == 1 else what[0].upper() + what[1:]


def _concurrency_axis(ax: Axes, runs: Sequence[Run]) -> None:
    """Log2 concurrency with a tick at every measured point, labelled as plain integers."""
    points = sorted({int(c) for r in runs for c in r.frame["concurrency"]})
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(points))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if points:
        ax.set_xlim(points[0] / 1.3, points[-1] * 1.3)
    ax.set_xlabel(CONCURRENCY_LABEL)


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _legend(ax: Axes, runs: Sequence[Run], force: bool = False) -> None:
    if len(runs) > 1 or force:
        ax.legend(frameon=False, loc="best")


def _log_if_wide(ax: Axes, values: pd.Series, label: str) -> None:
    """Log scale when values span more than 30x (queueing makes TTFT do that), else from zero."""
    v = values.dropna()
    v = v[v > 0]
    if len(v) and v.max() / v.min() > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylabel(label + ", log scale")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel(label)


@_styled
def throughput(runs: Sequence[Run]) -> Figure:
    """Aggregate output tokens/s against concurrency."""
    fig, (ax,) = _figure(runs, _title(runs, "aggregate output throughput"))
    for i, r in enumerate(runs):
        ax.plot(r.frame["concurrency"], r.frame["output_tok_s"], marker="o", color=_color(i),
                label=r.name)
    _concurrency_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("output tokens/s, all users together")
    _legend(ax, runs)
    return fig


@_styled
def per_user(runs: Sequence[Run]) -> Figure:
    """Per-user speed against concurrency: decode speed (solid) and including TTFT (dashed)."""
    fig, (ax,) = _figure(runs, _title(runs, "speed each user sees"))
    for i, r in enumerate(runs):
        prefix = f"{r.name}: " if len(runs) > 1 else ""
        ax.plot(r.frame["concurrency"], r.frame["decode_tok_s_p50"], marker="o", color=_color(i),
                label=f"{prefix}decode speed after the first token (p50)")
        ax.plot(r.frame["concurrency"], r.frame["e2e_tok_s_p50"], marker="s", linestyle="--",
                color=_color(i), alpha=0.75, label=f"{prefix}including time to first token (p50)")
    _concurrency_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("output tokens/s per user")
    _legend(ax, runs, force=True)
    return fig


@_styled
def ttft(runs: Sequence[Run]) -> Figure:
    """Time to first token, p50 (solid) and p99 (dashed), against concurrency."""
    fig, (ax,) = _figure(runs, _title(runs, "time to first token"))
    for i, r in enumerate(runs):
        prefix = f"{r.name}: " if len(runs) > 1 else ""
        ax.plot(r.frame["concurrency"], r.frame["ttft_p50_ms"], marker="o", color=_color(i),
                label=f"{prefix}p50")
        ax.plot(r.frame["concurrency"], r.frame["ttft_p99_ms"], marker="s", linestyle="--",
                color=_color(i), alpha=0.75, label=f"{prefix}p99")
    _concurrency_axis(ax, runs)
    both = pd.concat([r.frame[c] for r in runs for c in ("ttft_p50_ms", "ttft_p99_ms")])
    _log_if_wide(ax, both, "time to first token (ms)")
    _legend(ax, runs, force=True)
    return fig


@_styled
def tradeoff(runs: Sequence[Run]) -> Figure:
    """Per-user speed against aggregate throughput, one labelled point per concurrency."""
    fig, (ax,) = _figure(runs, _title(runs, "interactivity vs throughput"))
    for i, r in enumerate(runs):
        f = r.frame.dropna(subset=["output_tok_s", "decode_tok_s_p50"])
        ax.plot(f["output_tok_s"], f["decode_tok_s_p50"], marker="o", color=_color(i), label=r.name)
        for _, row in f.iterrows():
            ax.annotate(f"C={int(row['concurrency'])}", (row["output_tok_s"], row["decode_tok_s_p50"]),
                        textcoords="offset points", xytext=(6, 5), fontsize=9, color=_color(i))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("aggregate output tokens/s (all users)")
    ax.set_ylabel("decode tokens/s per user (p50)")
    ax.text(0.99, 0.98, "up and right is better;\nC = requests in flight", transform=ax.transAxes,
            ha="right", va="top", fontsize=9, color="#555555")
    _legend(ax, runs)
    return fig


@_styled
def mtp(runs: Sequence[Run]) -> Figure | None:
    """MTP / speculative decoding: acceptance length and rate; None when no run reported them."""
    with_spec = [r for r in runs if r.has("acceptance_length") or r.has("acceptance_rate")]
    if not with_spec:
        return None
    fig, (left, right) = _figure(with_spec, _title(with_spec, "MTP draft acceptance"), ncols=2)
    for i, r in enumerate(with_spec):
        left.plot(r.frame["concurrency"], r.frame["acceptance_length"], marker="o", color=_color(i),
                  label=r.name)
        right.plot(r.frame["concurrency"], 100 * r.frame["acceptance_rate"], marker="o",
                   color=_color(i), label=r.name)
    for ax in (left, right):
        _concurrency_axis(ax, with_spec)
    lengths = pd.concat([r.frame["acceptance_length"] for r in with_spec]).dropna()
    left.set_ylim(1, max(2.0, 1.1 * float(lengths.max())) if len(lengths) else 2.0)
    left.set_ylabel("acceptance length (tokens per step)")
    left.set_title("1 + accepted drafts per step", fontsize=9.5, color="#555555")
    right.set_ylim(0, 100)
    right.set_ylabel("draft tokens accepted (%)")
    right.set_title("accepted / proposed draft tokens", fontsize=9.5, color="#555555")
    _legend(left, with_spec)
    return fig


@_styled
def errors(runs: Sequence[Run]) -> Figure | None:
    """Failed requests per concurrency (by kind for one run); None when nothing failed."""
    failing = [r for r in runs if r.frame["failed"].fillna(0).sum() > 0]
    if not failing:
        return None
    fig, (ax,) = _figure(runs, _title(runs, "failed requests"))
    points = sorted({int(c) for r in runs for c in r.frame["concurrency"]})
    x = np.arange(len(points))
    if len(runs) == 1:
        r = runs[0]
        kinds = r.failures.reindex(points).fillna(0)
        bottom = np.zeros(len(points))
        for i, kind in enumerate(kinds.columns):
            ax.bar(x, kinds[kind], bottom=bottom, color=_color(i), label=kind, width=0.6)
            bottom += kinds[kind].to_numpy()
        f = r.frame.set_index("concurrency").reindex(points)
        for xi, (failed, total) in enumerate(zip(f["failed"], f["failed"] + f["completed"], strict=True)):
            if pd.notna(total) and total:
                ax.annotate(f"{int(failed)}/{int(total)}", (xi, bottom[xi]), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=9)
        ax.set_ylabel("failed requests (count)")
        ax.legend(frameon=False, title="kind", loc="upper left")
    else:
        width = 0.8 / len(runs)
        for i, r in enumerate(runs):
            rate = r.frame.set_index("concurrency")["error_rate"].reindex(points) * 100
            ax.bar(x - 0.4 + width * (i + 0.5), rate.fillna(0), width=width, color=_color(i), label=r.name)
        ax.set_ylabel("failed requests (% of measured)")
        ax.legend(frameon=False)
    ax.set_xticks(x, [str(c) for c in points])
    ax.set_xlabel(CONCURRENCY_LABEL)
    ax.grid(axis="x", visible=False)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    return fig


FIGURES: dict[str, Callable[[Sequence[Run]], Figure | None]] = {
    "throughput": throughput,
    "per_user": per_user,
    "ttft": ttft,
    "tradeoff": tradeoff,
    "mtp": mtp,
    "errors": errors,
}


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write `<name>.png` (2x) and `<name>.svg`; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    with mpl.rc_context(STYLE):
        fig.savefig(png, dpi=PNG_DPI, facecolor="white", metadata={"Software": None})
        # The layout is in figure fractions, so the PNG's holds for the SVG: skip solving it again.
        fig.set_layout_engine("none")
        fig.savefig(svg, facecolor="white", metadata={"Date": None})
    return [png, svg]
