"""table.md of a repeated run (`--repeats N`): the blog table's columns, each cell the mean ± the
half-width of its 95 % confidence interval over the N repeats (Student's t on the per-repeat
values, `bench.repeats.mean_ci`; docs/metrics.md). A cell measured in one repeat only shows the
bare value; a column no repeat measured is left out, as in the single-run table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench import plots, report
from bench.repeats import load_repeats, mean_ci
from bench.shapes import ResultsDoc


def cell(values: Sequence[float], decimals: int) -> str:
    """'1,234.5 ± 6.7', the bare mean with one value, the table's dash with none."""
    ci = mean_ci([float(v) for v in values if v is not None and v == v])
    if ci["mean"] is None:
        return report.MISSING
    if ci["ci_high"] is None:
        return f"{ci['mean']:,.{decimals}f}"
    return f"{ci['mean']:,.{decimals}f} ± {(ci['ci_high'] - ci['ci_low']) / 2:,.{decimals}f}"


def repeats_markdown(docs: Sequence[ResultsDoc], hardware: str) -> str:
    runs = [report.run_view(d, hardware) for d in docs]
    cols = [c for c in report.COLUMNS
            if c[1] not in report.OPTIONAL_COLUMNS or any(r.has(c[1]) for r in runs)]
    header = ["Concurrency", *(c[0] for c in cols), "Failed"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    for c in sorted({int(x) for r in runs for x in r.frame["concurrency"]}):
        rows = [m.iloc[0] for r in runs if not (m := r.frame[r.frame["concurrency"] == c]).empty]
        failed = sum(int(row["failed"] or 0) for row in rows)
        total = failed + sum(int(row["completed"] or 0) for row in rows)
        lines.append("| " + " | ".join([str(c), *(cell([row[col] for row in rows], d) for _, col, d in cols),
                                        f"{failed}/{total}"]) + " |")
    first = runs[0]
    intro = []
    if first.simulated:
        intro += [f"> **{report.plots.SIM_BANNER.capitalize()}.** These numbers come from the simulated "
                  "endpoint (bench.sim), a test double; do not publish them as results.", ""]
    intro += [f"- **{first.model}** on {first.hardware}; vLLM {first.version}; run {first.date}; "
              f"{first.workload}; {len(runs)} repeats, interleaved (each repeat runs every point "
              "before the next starts).",
              "- Each cell: mean ± half-width of the 95 % confidence interval over the repeats "
              "(Student's t on the per-repeat values; docs/metrics.md). Failed: all repeats together.", ""]
    shown = set(header)
    return "\n".join([*intro, *lines, "",
                      " ".join(t for h, t in report.DEFINITIONS.items() if h in shown)
                      + " Definitions: docs/metrics.md.", ""])


def write_table(folder: str | Path, hardware: str) -> Path:
    """Write `<folder>/table.md` from the repeats under `<folder>/repeats/`; its path."""
    out = Path(folder) / report.TABLE_FILE
    out.write_text(repeats_markdown(load_repeats(folder), hardware))
    return out


def repeats_view(folder: str | Path, hardware: str) -> plots.Run:
    """The figures' view of a repeated run: means, with 95 % bands (`plots.Run.from_repeats`)."""
    docs = load_repeats(folder)
    simulated = report.is_simulated(docs[0])
    return plots.Run.from_repeats(docs, report.SIM_HARDWARE if simulated else hardware, simulated)


def render_repeats(folder: str | Path, hardware: str) -> report.Rendered:
    """table.md (mean ± CI), reproduce.md (one section per repeat) and the figures with their
    95 % bands, into the run's folder."""
    out = Path(folder)
    run = repeats_view(out, hardware)
    rendered = report.render_runs([run], out)
    rendered.markdown = repeats_markdown(load_repeats(out), hardware)
    rendered.table.write_text(rendered.markdown)
    from bench.reproduce import write_reproduce
    write_reproduce(load_repeats(out), out)
    return rendered
