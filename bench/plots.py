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

import dataclasses
import functools
import json
import math
import textwrap
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator
from matplotlib.typing import LineStyleType, RcKeyType

from bench.provenance import image_short
from bench.results import points_frame
from bench.shapes import ResultsDoc

WIDTH_IN = 8.0
AXES_HEIGHT_IN = 4.0
PNG_DPI = 200
SIM_BANNER = "SIMULATED ENDPOINT \u2014 NOT A MEASUREMENT"
# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
CONCURRENCY_LABEL = "concurrency (requests in flight)"
STYLE: dict[RcKeyType, Any] = {
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
    doc: ResultsDoc = field(repr=False)  # the results document itself
    image: str = "unknown"  # the head's image ID prefix (bench.provenance.image_short)
    repeats: int = 1
    # A repeated run's 95 % intervals: frame column -> DataFrame(concurrency, low, high); the
    # figures draw them as bands around the mean (`frame` then holds the per-repeat means).
    bands: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @classmethod
    def from_doc(cls, doc: ResultsDoc, hardware: str, simulated: bool) -> Run:
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
            image=image_short(doc),
        )

    @classmethod
    def from_repeats(cls, docs: Sequence[ResultsDoc], hardware: str, simulated: bool) -> Run:
        """A `--repeats N` run: per concurrency the mean of every numeric column over the
        repeats, and for the drawn figures the 95 % interval (bench.repeats.mean_ci)."""
        from bench.repeats import mean_ci  # bench.repeats imports the sweep (aiohttp): only here

        first = cls.from_doc(docs[0], hardware, simulated)
        every = pd.concat([points_frame(d) for d in docs], ignore_index=True)
        means = every.select_dtypes("number").groupby("concurrency").mean()
        frame = first.frame.set_index("concurrency").reindex(means.index)
        frame[list(means.columns)] = means
        bands = {}
        for col in BAND_COLUMNS:
            rows = []
            for c, vals in every.groupby("concurrency")[col]:
                ci = mean_ci([float(v) for v in vals if v is not None and v == v])
                rows.append({"concurrency": c, "low": ci["ci_low"], "high": ci["ci_high"]})
            band = pd.DataFrame(rows, columns=["concurrency", "low", "high"]).dropna()
            if len(band):
                bands[col] = band
        return dataclasses.replace(first, frame=frame.reset_index(), repeats=len(docs), bands=bands)

    def has(self, column: str) -> bool:
        return bool(self.frame[column].notna().any())


def workload(settings: dict[str, Any]) -> str:
    """'1024 in / 512 out tokens, chat API, temperature 0' from results.json settings."""
    return (f"{settings.get('input_len', '?')} in / {settings.get('output_len', '?')} out tokens per "
            f"request, {settings.get('api', '?')} API, temperature {settings.get('temperature', 0)}")


# The columns a repeated run's figures draw with their 95 % interval as a band.
BAND_COLUMNS = ("output_tok_s", "decode_tok_s_p50", "e2e_tok_s_p50", "ttft_p50_ms", "ttft_p99_ms")
# What each axes drew as bands, for the SVG's description (a filled polygon does not say it).
_BANDS: weakref.WeakKeyDictionary[Axes, list[dict[str, list[float]]]] = weakref.WeakKeyDictionary()


def _band(ax: Axes, r: Run, column: str, color: str) -> None:
    """Shade the 95 % interval of `column` around its line, when `r` is a repeated run."""
    band = r.bands.get(column)
    if band is None:
        return
    x, low, high = (band[k].astype(float).tolist() for k in ("concurrency", "low", "high"))
    ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
    _BANDS.setdefault(ax, []).append({"x": x, "low": low, "high": high})


CAPTION_CHARS = 112  # what fits across 8 in at the caption's 9 pt


def caption_lines(runs: Sequence[Run]) -> list[str]:
    """What every figure states about where its numbers come from, wrapped to the figure width.

    What all runs share is said once; what differs is said per model.
    """
    fields = {"Hardware": [r.hardware for r in runs], "vLLM": [r.version for r in runs],
              "image": [r.image for r in runs], "repeats": [str(r.repeats) for r in runs],
              "run": [r.date for r in runs], "": [r.workload for r in runs]}
    shared = {k: v[0] for k, v in fields.items() if len(set(v)) == 1}
    lines = []
    if len(runs) == 1:
        lines.append(f"Model: {runs[0].model}  \u00b7  Hardware: {runs[0].hardware}")
        shared.pop("Hardware")
    elif "Hardware" in shared:
        lines.append(f"Hardware: {shared.pop('Hardware')}")
    if shared:
        lines.append("  \u00b7  ".join(f"{k} {v}".strip() for k, v in shared.items()))
    if len(runs) > 1:
        for r in runs:
            own = [f"{k} {v[runs.index(r)]}".strip() for k, v in fields.items() if k not in shared
                   and not (k == "Hardware" and lines[0].startswith("Hardware"))]
            lines.append(f"{r.model}: {', '.join(own)}" if own else r.model)
        if all(len(set(v)) == 1 for v in fields.values()):
            lines[-len(runs):] = ["Models: " + ", ".join(r.model for r in runs)]
    return [part for line in lines for part in textwrap.wrap(line, CAPTION_CHARS, subsequent_indent="    ")]


def _styled(fn: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _figure(runs: Sequence[Run], title: str, ncols: int = 1,
            note: str = "") -> tuple[Figure, list[Axes]]:
    """A blog-width figure: banner (if simulated), title, axes, caption (+ `note`); heights in inches."""
    simulated = any(r.simulated for r in runs)
    lines = caption_lines(runs) + textwrap.wrap(note, CAPTION_CHARS, subsequent_indent="    ")
    caption_in = 0.12 + 0.2 * len(lines)
    banner_in = 0.38 if simulated else 0.0
    title_in = 0.42
    height = AXES_HEIGHT_IN + caption_in + banner_in + title_in
    engine = ConstrainedLayoutEngine()
    fig = Figure(figsize=(WIDTH_IN, height), layout=engine)
    top = 1 - (banner_in + title_in) / height
    bottom = caption_in / height
    engine.set(rect=(0.0, bottom, 1.0, top - bottom), w_pad=0.08, h_pad=0.06)
    axes = list(np.atleast_1d(fig.subplots(1, ncols)))
    fig.text(0.015, 1 - (banner_in + 0.08) / height, title, ha="left", va="top",
             fontsize=13, fontweight="bold")
    fig.text(0.015, 0.08 / height, "\n".join(lines), ha="left", va="bottom", fontsize=9,
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


def _legend(ax: Axes, runs: Sequence[Run], styles: Sequence[tuple[LineStyleType, str, str]] = ()) -> None:
    """One legend row above the axes: a coloured line per model (when several), then what each
    line style means (`styles`: (linestyle, marker, meaning)), drawn in neutral grey."""
    handles: list[Line2D] = []
    if len(runs) > 1:
        handles += [Line2D([], [], color=_color(i), marker="o", label=r.name) for i, r in enumerate(runs)]
    handles += [Line2D([], [], color="#555555" if len(runs) > 1 else _color(0), linestyle=ls, marker=m,
                       label=meaning) for ls, m, meaning in styles]
    _legend_row(ax, handles)


def _legend_row(ax: Axes, handles: Sequence[Any]) -> None:
    """Legend above the axes, off the data, in one row when it fits and two columns when not."""
    if not handles:
        return
    chars = sum(len(str(h.get_label())) + 6 for h in handles)
    ncols = len(handles) if chars <= 95 else min(len(handles), 2)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=ncols, frameon=False,
              borderaxespad=0.0, handlelength=2.6)


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


def _against_concurrency(runs: Sequence[Run], title: str, solid: str,
                         dashed: str | None = None) -> tuple[Figure, Axes]:
    """One or two series per run against concurrency: `solid` (circles), `dashed` (squares)."""
    fig, (ax,) = _figure(runs, _title(runs, title))
    for i, r in enumerate(runs):
        ax.plot(r.frame["concurrency"], r.frame[solid], marker="o", color=_color(i))
        _band(ax, r, solid, _color(i))
        if dashed is not None:
            _band(ax, r, dashed, _color(i))
            ax.plot(r.frame["concurrency"], r.frame[dashed], marker="s", linestyle="--",
                    color=_color(i), alpha=0.75)
    _concurrency_axis(ax, runs)
    return fig, ax


@_styled
def throughput(runs: Sequence[Run]) -> Figure:
    """Aggregate output tokens/s against concurrency."""
    fig, ax = _against_concurrency(runs, "aggregate output throughput", "output_tok_s")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("output tokens/s, all users together")
    _legend(ax, runs)
    return fig


@_styled
def per_user(runs: Sequence[Run]) -> Figure:
    """Per-user speed against concurrency: decode speed (solid) and including TTFT (dashed)."""
    fig, ax = _against_concurrency(runs, "speed each user sees", "decode_tok_s_p50", "e2e_tok_s_p50")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("output tokens/s per user")
    _legend(ax, runs, [("-", "o", "decode speed after the first token (p50)"),
                       ("--", "s", "including the wait for the first token (p50)")])
    return fig


@_styled
def ttft(runs: Sequence[Run]) -> Figure:
    """Time to first token, p50 (solid) and p99 (dashed), against concurrency."""
    fig, ax = _against_concurrency(runs, "time to first token", "ttft_p50_ms", "ttft_p99_ms")
    both = pd.concat([r.frame[c] for r in runs for c in ("ttft_p50_ms", "ttft_p99_ms")])
    _log_if_wide(ax, both, "time to first token (ms)")
    _legend(ax, runs, [("-", "o", "median (p50)"), ("--", "s", "p99")])
    return fig


@_styled
def tradeoff(runs: Sequence[Run]) -> Figure:
    """Per-user speed against aggregate throughput, one labelled point per concurrency."""
    fig, (ax,) = _figure(runs, _title(runs, "interactivity vs throughput"))
    frames = [r.frame.dropna(subset=["output_tok_s", "decode_tok_s_p50"]) for r in runs]
    xmax = max([float(f["output_tok_s"].max()) for f in frames if len(f)] or [1.0]) * 1.12
    ymax = max([float(f["decode_tok_s_p50"].max()) for f in frames if len(f)] or [1.0]) * 1.15
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, ymax)
    for i, f in enumerate(frames):
        ax.plot(f["output_tok_s"], f["decode_tok_s_p50"], marker="o", color=_color(i))
        for x, y, label in _point_labels(f, xmax, ymax):
            right = x > 0.75 * xmax
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(-4 if right else 7, 8),
                        ha="right" if right else "left", fontsize=9, color=_color(i),
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none",
                              "alpha": 0.8})
    ax.set_xlabel("aggregate output tokens/s (all users)")
    ax.set_ylabel("decode tokens/s per user (p50)")
    ax.text(0.99, 0.98, "up and right is better;\nC = requests in flight", transform=ax.transAxes,
            ha="right", va="top", fontsize=9, color="#555555")
    _legend(ax, runs)
    return fig


def _point_labels(f: pd.DataFrame, xmax: float, ymax: float) -> list[tuple[float, float, str]]:
    """'C=n' per point; points closer than a label's size (saturation piles them up) share one
    label, 'C=16, 32, 64', above the highest of them."""
    width_in, height_in = 0.85 * WIDTH_IN, 0.85 * AXES_HEIGHT_IN
    groups: list[list[tuple[float, float, int]]] = []
    for x, y, c in zip(f["output_tok_s"], f["decode_tok_s_p50"], f["concurrency"], strict=True):
        if groups:
            x0, y0, _ = groups[-1][0]
            if abs(x - x0) / xmax * width_in < 0.55 and abs(y - y0) / ymax * height_in < 0.2:
                groups[-1].append((x, y, int(c)))
                continue
        groups.append([(x, y, int(c))])
    return [(max(g, key=lambda p: p[1])[0], max(p[1] for p in g), "C=" + ", ".join(str(c) for _, _, c in g))
            for g in groups]


@_styled
def mtp(runs: Sequence[Run]) -> Figure | None:
    """MTP / speculative decoding: acceptance length and rate; None when no run reported them."""
    with_spec = [r for r in runs if r.has("acceptance_length") or r.has("acceptance_rate")]
    if not with_spec:
        return None
    left_out = [r.model for r in runs if r not in with_spec]
    note = f"Not shown, no speculative-decoding counters on the server: {', '.join(left_out)}" if left_out else ""
    fig, (left, right) = _figure(with_spec, _title(with_spec, "MTP draft acceptance"), ncols=2, note=note)
    for i, r in enumerate(with_spec):
        left.plot(r.frame["concurrency"], r.frame["acceptance_length"], marker="o", color=_color(i))
        right.plot(r.frame["concurrency"], 100 * r.frame["acceptance_rate"], marker="o", color=_color(i))
    for ax in (left, right):
        _concurrency_axis(ax, with_spec)
    lengths = pd.concat([r.frame["acceptance_length"] for r in with_spec]).dropna()
    left.set_ylim(1, max(2.0, 1.1 * float(lengths.max())) if len(lengths) else 2.0)
    left.set_ylabel("acceptance length (tokens per step)")
    right.set_ylim(0, 100)
    right.set_ylabel("draft tokens accepted (%)")
    _legend(left, with_spec)
    return fig


@_styled
def errors(runs: Sequence[Run]) -> Figure | None:
    """Failed requests per concurrency (by kind for one run); None when nothing failed."""
    if not any(r.frame["failed"].fillna(0).sum() > 0 for r in runs):
        return None
    fig, (ax,) = _figure(runs, _title(runs, "failed requests"))
    ax.set_axisbelow(True)
    points = sorted({int(c) for r in runs for c in r.frame["concurrency"]})
    x = np.arange(len(points))
    if len(runs) == 1:
        kinds = runs[0].failures.reindex(points).fillna(0)
        bottom = np.zeros(len(points))
        for i, kind in enumerate(kinds.columns):
            ax.bar(x, kinds[kind], bottom=bottom, color=_color(i), width=0.6)
            bottom += kinds[kind].to_numpy()
        _failed_of_total(ax, runs[0], points, x, bottom)
        ax.set_ylabel("failed requests (count)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_row(ax, [Patch(color=_color(i), label=f"failed: {kind}") for i, kind in enumerate(kinds.columns)])
    else:
        width = 0.8 / len(runs)
        for i, r in enumerate(runs):
            rate = (r.frame.set_index("concurrency")["error_rate"].reindex(points) * 100).fillna(0)
            xs = x - 0.4 + width * (i + 0.5)
            ax.bar(xs, rate, width=width, color=_color(i))
            _failed_of_total(ax, r, points, xs, rate.to_numpy())
        ax.set_ylabel("failed requests (% of measured)")
        _legend_row(ax, [Patch(color=_color(i), label=r.name) for i, r in enumerate(runs)])
    ax.set_xticks(x, [str(c) for c in points])
    ax.set_xlabel(CONCURRENCY_LABEL)
    ax.grid(axis="x", visible=False)
    ax.set_ylim(bottom=0)
    ax.margins(y=0.15)
    return fig


def _failed_of_total(ax: Axes, r: Run, points: list[int], xs: np.ndarray, tops: np.ndarray) -> None:
    """'failed/measured' above each bar that has failures."""
    f = r.frame.set_index("concurrency").reindex(points)
    for xi, top, failed, ok in zip(xs, tops, f["failed"], f["completed"], strict=True):
        if pd.notna(failed) and failed > 0:
            ax.annotate(f"{int(failed)}/{int(failed + ok)}", (xi, top), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=9)


FIGURES: dict[str, Callable[[Sequence[Run]], Figure | None]] = {
    "throughput": throughput,
    "per_user": per_user,
    "ttft": ttft,
    "tradeoff": tradeoff,
    "mtp": mtp,
    "errors": errors,
}


def drawn_series(fig: Figure) -> list[dict[str, list[Any]]]:
    """Per axes, the data each line draws ({"x": [...], "y": [...]}), each bar ([x centre,
    bottom, height]) and each 95 % band ({"x", "low", "high"}), in data units, NaN as None:
    saved in the SVG's description so anyone (the tests too) can check that a figure shows the
    numbers it claims to."""

    def nums(values: Any) -> list[float | None]:
        return [None if math.isnan(v) else v for v in np.asarray(values, dtype=float).tolist()]

    return [{"lines": [{"x": nums(line.get_xdata()), "y": nums(line.get_ydata())} for line in ax.lines],
             "bars": [nums([b.get_x() + b.get_width() / 2, b.get_y(), b.get_height()])
                      for b in ax.patches if isinstance(b, Rectangle)],
             "bands": [{k: nums(v) for k, v in b.items()} for b in _BANDS.get(ax, [])]}
            for ax in fig.axes]


def save(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write `<name>.png` (2x) and `<name>.svg` (with `drawn_series` as its description)."""
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    with mpl.rc_context(STYLE):
        fig.savefig(png, dpi=PNG_DPI, facecolor="white", metadata={"Software": None})
        # The layout is in figure fractions, so the PNG's holds for the SVG: skip solving it again.
        fig.set_layout_engine("none")
        fig.savefig(svg, facecolor="white",
                    metadata={"Date": None, "Description": json.dumps({"drawn": drawn_series(fig)})})
    return [png, svg]
