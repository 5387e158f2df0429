"""What the notebooks call: choose the target, run or load the sweep, write the table and figures.

bench.ipynb: `plan(model, ...)` gives a `Target`: the embedded simulated endpoint for model "demo"
(or while the config still describes no cluster), else the head's API from config. Then
`measure(target)` runs the sweep, or `load(folder)` reads results.json, and `render(doc, folder,
hardware)` writes `table.md` and the figures beside it. compare.ipynb: `load_runs(names,
results_dir)` and `render_runs(runs, folder)`. `execute(notebook, output, parameters)` runs a
notebook through papermill for `inv report`, the tests and benchmarks/render.py.

A results document from the simulated endpoint is recognised by its server version ("+sim") or
its model name ("demo") and always rendered as simulated, whatever label the caller passes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import export, nodeplots, plots, rateplots, reproduce
from bench.configview import ClusterConfig
from bench.hooks import TELEMETRY_FILE
from bench.results import ResultsError, load_results
from bench.shapes import ResultsDoc
from bench.telemetry import read_telemetry_csv

# bench.sweep and bench.sim (aiohttp) are imported where a sweep is about to run, so
# re-rendering from results.json starts quickly.
if TYPE_CHECKING:
    from bench.sweep import SweepConfig

PROJECT_DIR = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_DIR / "notebooks"
DEMO = "demo"
FROM_CONFIG = "from config"
SIM_HARDWARE = "simulated endpoint (bench.sim), no GPU"
TABLE_FILE = "table.md"
# The demo endpoint: MTP with 2 draft tokens so the acceptance figure has data; a per-sequence
# step cost so per-user speed falls as the batch grows, as on a GPU; a batch cap of 16 so the
# last demo point (C=32) queues and TTFT climbs. The sweep takes about 15 s on 2 cores.
DEMO_SIM: dict[str, Any] = {"spec_tokens": 2, "spec_accept": 0.7, "max_batch": 16, "decode_per_seq_s": 0.0015}
DEMO_CONCURRENCY = (1, 2, 4, 8, 16, 32)
DEMO_INPUT_LEN = 128
DEMO_OUTPUT_LEN = 48
DEMO_REQUESTS_MULTIPLIER = 2
MISSING = "\u2013"
CLIENT_BOUND_MARK = "\u2020"


@dataclass(frozen=True)
class Target:
    """Where a sweep runs and where its results go. `base_url` is None for the embedded
    simulated endpoint (`simulated`) and when only loading (nothing to reach)."""

    label: str
    model: str
    base_url: str | None
    simulated: bool
    hardware: str
    results_dir: Path
    concurrency: tuple[int, ...]
    input_len: int
    output_len: int
    requests: int | None
    requests_multiplier: int = 4
    api: str = "chat"
    note: str = ""

    @property
    def folder(self) -> Path:
        return self.results_dir / self.label

    def sweep_config(self, base_url: str, rerun: bool) -> SweepConfig:
        from bench.sweep import SweepConfig

        return SweepConfig(base_url=base_url, model=self.model, label=self.label,
                           concurrency=list(self.concurrency), input_len=self.input_len,
                           output_len=self.output_len, requests_per_point=self.requests,
                           requests_multiplier=self.requests_multiplier, api=self.api,
                           results_dir=self.results_dir, rerun=rerun)

    def describe(self) -> str:
        where = ("the embedded simulated endpoint" if self.simulated else self.base_url
                 or "(loading only)")
        lines = [f"model {self.model!r} at {where}; results in {self.folder}",
                 f"concurrency {', '.join(map(str, self.concurrency))}; {self.input_len} in / "
                 f"{self.output_len} out tokens; hardware label: {self.hardware}"]
        return "\n".join(([f"note: {self.note}"] if self.note else []) + lines)


def _concurrency(value: Any, default: Iterable[int]) -> tuple[int, ...]:
    """None -> default; 8, "1,2,4" or [1, 2, 4] -> a validated tuple (papermill passes any)."""
    if value is None or value == "":
        return tuple(default)
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    from bench.sweep import parse_concurrency

    return tuple(parse_concurrency(text))


def _demo_target(results_dir: Path, concurrency: Any, input_len: int | None,
                 output_len: int | None, requests: int | None, note: str = "") -> Target:
    return Target(label=DEMO, model=DEMO, base_url=None, simulated=True, hardware=SIM_HARDWARE,
                  results_dir=results_dir, concurrency=_concurrency(concurrency, DEMO_CONCURRENCY),
                  input_len=input_len or DEMO_INPUT_LEN, output_len=output_len or DEMO_OUTPUT_LEN,
                  requests=requests, requests_multiplier=DEMO_REQUESTS_MULTIPLIER, note=note)


def plan(model: str, base_url: str | None = FROM_CONFIG, concurrency: Any = None,
         input_len: int | None = None, output_len: int | None = None, requests: int | None = None,
         results_dir: str | Path = "results", run: bool = True,
         settings: ClusterConfig | None = None) -> Target:
    """Resolve the notebook's parameters against the config into a `Target`.

    `model` is a name under `models:` (its served name is what the requests carry; results go to
    `results/<name>/`), "demo", or with an explicit `base_url` any served model name. Loading
    only (`run=False`) needs no cluster. `settings` is the cluster config as `inv` reads it
    (`cluster.config.load()`, which the caller does: the harness imports no cluster code); every
    model but "demo" needs it. Raises cluster.config.ConfigError for an unknown model.
    """
    results = Path(results_dir)
    if model == DEMO:
        return _demo_target(results, concurrency, input_len, output_len, requests)
    explicit = base_url not in (None, "", FROM_CONFIG)
    s = _needs(settings)
    if model in s.models or (run and not explicit):
        spec = s.model(model)  # raises ConfigError naming the configured models
        label, served = spec.name, spec.served_name
    else:
        label, served = re.sub(r"[^A-Za-z0-9_.-]", "_", model), model
    if run and not explicit and not s.configured:
        note = (f"no cluster is configured yet (the config still has placeholders), so the embedded "
                f"simulated endpoint stands in for {model!r}; results go to {results / DEMO}")
        return _demo_target(results, concurrency, input_len, output_len, requests, note)
    url = str(base_url) if explicit else None if not run else s.api_url
    b = s.bench
    return Target(label=label, model=served, base_url=url, simulated=False, hardware=s.hardware_label,
                  results_dir=results, concurrency=_concurrency(concurrency, b.concurrency),
                  input_len=input_len or b.input_len, output_len=output_len or b.output_len,
                  requests=requests or b.requests_per_point, api=b.api)


def measure(target: Target, rerun: bool = False,
            gather: Callable[[], dict[str, Any]] | None = None) -> ResultsDoc:
    """Run the sweep (resuming unless `rerun`); the demo always measures afresh on a new endpoint.

    `gather` returns the provenance card's cluster facts (the notebook hands in
    `cluster.provenance.gather_for`; bench/ opens no SSH): called before the first point and
    again after the last, as `inv bench` does. Not used for the simulated endpoint."""
    from bench.sim import BackgroundSim, SimConfig
    from bench.sweep import run_sweep

    if target.simulated:
        with BackgroundSim(SimConfig(model=target.model, **DEMO_SIM)) as sim:
            return run_sweep(target.sweep_config(sim.base_url, rerun=True), progress=False)
    if target.base_url is None:
        raise ValueError(f"{target.label}: planned for loading only (run=False); nothing to measure")
    cfg = target.sweep_config(target.base_url, rerun)
    if gather is not None:
        cfg.cluster_facts = gather()
        cfg.hooks.regather = gather
    return run_sweep(cfg, progress=False)


def load(folder: str | Path) -> ResultsDoc:
    """results.json of a folder, checked enough to draw; ResultsError says what is wrong."""
    hint = ("; run the sweep first (`inv report --model NAME` without --load-only, `inv bench`, "
            "or this notebook with run=True)")
    try:
        doc = load_results(folder)
    except ResultsError as exc:
        raise ResultsError(f"{exc}{hint}") from None
    path = Path(folder)
    if not doc["points"]:
        raise ResultsError(f"{path} has no finished points yet{hint}")
    for i, p in enumerate(doc["points"]):
        if not isinstance(p, dict) or not isinstance(p.get("concurrency"), int) or (
                p["concurrency"] < 1 and p.get("mode") != "rate"):
            raise ResultsError(f"{path}: point {i} has no positive integer concurrency; the file is "
                               "damaged or not from this harness")
    return doc


def is_simulated(doc: ResultsDoc) -> bool:
    return "+sim" in str(doc.get("server_version") or "") or doc.get("model") == DEMO


def run_view(doc: ResultsDoc, hardware: str) -> plots.Run:
    """The figures' view of a results document; simulated results get the simulator's label."""
    simulated = is_simulated(doc)
    return plots.Run.from_doc(doc, SIM_HARDWARE if simulated else hardware, simulated)


def _needs(settings: ClusterConfig | None) -> ClusterConfig:
    if settings is None:
        raise ValueError("the cluster settings are needed here: pass settings=cluster.config.load(CONFIG_FILE)")
    return settings


def load_runs(names: str | Sequence[str], results_dir: str | Path = "results",
              settings: ClusterConfig | None = None) -> list[plots.Run]:
    """Load `results_dir/<name>/results.json` for each name (comma list or sequence); a folder
    holding only `repeats/` (`--repeats N`) loads as its repeats' means with 95 % bands."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    wanted = [n for n in wanted if n]
    if len(wanted) < 2:
        raise ValueError(f"compare needs two or more result folders, got {wanted}")
    folders = [Path(results_dir) / n for n in wanted]
    repeated = [not (f / "results.json").exists() and (f / "repeats").is_dir() for f in folders]
    from bench.repeats import load_repeats
    docs = [load_repeats(f)[0] if rep else load(f) for f, rep in zip(folders, repeated, strict=True)]
    hardware = SIM_HARDWARE
    if not all(is_simulated(d) for d in docs):
        hardware = _needs(settings).hardware_label
    from bench.repeatstable import repeats_view  # a `--repeats N` run: means with 95 % bands
    runs = [repeats_view(f, hardware) if rep else run_view(d, hardware)
            for f, rep, d in zip(folders, repeated, docs, strict=True)]
    short = [r.name for r in runs]
    if len(set(short)) < len(short):
        runs = [dataclasses.replace(r, name=f"{n} ({r.name})") for n, r in zip(wanted, runs, strict=True)]
    return runs


# -- the table -----------------------------------------------------------------------------

# (header, points_frame column, decimals); the blog table, in this order.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Output tok/s (all users)", "output_tok_s", 1),
    ("Tok/s per user (p50)", "decode_tok_s_p50", 1),
    ("TTFT p50 (ms)", "ttft_p50_ms", 1),
    ("TTFT p99 (ms)", "ttft_p99_ms", 1),
    ("TPOT p50 (ms)", "tpot_p50_ms", 2),
    ("ITL p99 (ms)", "itl_p99_ms", 2),
    ("Accept. length", "acceptance_length", 2),
    ("TTFR p50 (ms)", "ttfr_p50_ms", 1),
    ("TTFA p50 (ms)", "ttfa_p50_ms", 1),
    ("Reasoning tok", "reasoning_tokens_mean", 1),
    ("Answer tok", "answer_tokens_mean", 1),
    ("J / output token", "joules_per_token", 2),
    ("Tok/s per W", "tokens_per_s_per_watt", 3),
)
OPTIONAL_COLUMNS = ("acceptance_length", "joules_per_token", "tokens_per_s_per_watt",
                    "ttfr_p50_ms", "ttfa_p50_ms", "reasoning_tokens_mean", "answer_tokens_mean")  # shown when measured
NODE_FLAG_MARK = "\u2021"


def _flag(value: Any) -> bool:
    """True only for a real true flag; None and NaN (not recorded) are not."""
    return isinstance(value, bool | np.bool_) and bool(value)


def _fmt(value: Any, decimals: int) -> str:
    if value is None or value != value:  # None or NaN: not measured
        return MISSING
    return f"{float(value):,.{decimals}f}"


def _requests_text(settings: dict[str, Any]) -> str:
    n = settings.get("requests_per_point")
    measured = (f"{n}" if n else f"max({settings.get('min_requests', 8)}, "
                f"{settings.get('requests_multiplier', 4)} \u00d7 C)")
    warm = settings.get("warmup")
    return f"{measured} measured requests per point after {'C' if warm is None else warm} warm-up"


DEFINITIONS = {
    "Output tok/s (all users)": "Output tok/s: output tokens of all requests / wall time of the point.",
    "Tok/s per user (p50)": "Tok/s per user: (N \u2212 1) / (last token \u2212 first token), median over requests.",
    "TTFT p50 (ms)": "TTFT: request sent to first generated token.",
    "TPOT p50 (ms)": "TPOT: (last \u2212 first token) / (N \u2212 1).",
    "ITL p99 (ms)": "ITL: gaps between tokens (a chunk of k tokens gives k gaps of 1/k of its gap).",
    "Accept. length": "Accept. length: 1 + accepted / drafts (MTP, from the server's counters).",
    "TTFR p50 (ms)": "TTFR / TTFA: request sent to the first reasoning / first answer token.",
    "Reasoning tok": "Reasoning / Answer tok: mean tokens of each kind per request.",
    "J / output token": "J / output token: GPU energy of all nodes over the point (nvidia-smi power.draw, "
                        "trapezoid rule) / output tokens of all its requests.",
    "Tok/s per W": "Tok/s per W: output tokens / joules.",
    "Failed": "Failed: failed / measured requests.",
}


def parse_header(table: str) -> list[str]:
    return [c.strip() for c in table.splitlines()[0].strip("|").split("|")]


def markdown_table(runs: Sequence[plots.Run]) -> str:
    """One row per concurrency (and model, when several), numbers rounded for reading."""
    cols = [c for c in COLUMNS if c[1] not in OPTIONAL_COLUMNS or any(r.has(c[1]) for r in runs)]
    many = len(runs) > 1
    header = ["Concurrency", *(["Model"] if many else []), *(c[0] for c in cols), "Failed"]
    rows = []
    points = sorted({int(c) for r in runs for c in r.frame["concurrency"]})
    for c in points:
        for r in runs:
            match = r.frame[r.frame["concurrency"] == c]
            if match.empty:
                continue
            row = match.iloc[0]
            mark = f" {CLIENT_BOUND_MARK}" if _flag(row["client_bound"]) else ""
            mark += f" {NODE_FLAG_MARK}" if isinstance(row.get("node_flags"), str) else ""
            failed, ok = int(row["failed"] or 0), int(row["completed"] or 0)
            rows.append([f"{c}{mark}", *([r.name] if many else []),
                         *(_fmt(row[col], d) for _, col, d in cols), f"{failed}/{failed + ok}"])
    align = ["---:", *([":---"] if many else []), *("---:" for _ in cols), "---:"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(runs: Sequence[plots.Run]) -> str:
    """table.md: what was measured where, the table, and what each column means."""
    out: list[str] = []
    if any(r.simulated for r in runs):
        out += [f"> **{plots.SIM_BANNER.capitalize()}.** These numbers come from the simulated "
                "endpoint (bench.sim), a test double; do not publish them as results.", ""]
    for r in runs:
        settings = r.doc.get("settings") or {}
        out.append(f"- **{r.model}** on {r.hardware}; vLLM {r.version}; run {r.date}; {r.workload}, "
                   f"ignore_eos; closed loop, {_requests_text(settings)}.")
    out += ["", markdown_table(runs), ""]
    if any(_flag(v) for r in runs for v in r.frame["client_bound"]):
        out += [f"{CLIENT_BOUND_MARK} The benchmark client's event loop lagged more than "
                f"{_client_bound_ms(runs)} ms (p99) at this point: latencies may include client delay.", ""]
    flagged = [f"C={int(row['concurrency'])}{f' ({r.name})' if len(runs) > 1 else ''}: {row['node_flags']}"
               for r in runs for _, row in r.frame.iterrows() if isinstance(row.get("node_flags"), str)]
    if flagged:
        out += [f"{NODE_FLAG_MARK} A node was not in a fit state during this point (docs/telemetry.md): "
                + "; ".join(flagged) + ".", ""]
    shown = parse_header(markdown_table(runs))
    out += [" ".join(text for header, text in DEFINITIONS.items() if header in shown)
            + " Definitions: docs/metrics.md.", ""]
    return "\n".join(out)


def rate_markdown(runs: Sequence[plots.Run]) -> str:
    """table.md of open-loop runs: provenance lines, the rate table, the search's answer."""
    from bench.ratetable import rate_table

    out: list[str] = []
    if any(r.simulated for r in runs):
        out += [f"> **{plots.SIM_BANNER.capitalize()}.** These numbers come from the simulated "
                "endpoint (bench.sim), a test double; do not publish them as results.", ""]
    for r in runs:
        s = r.doc.get("settings") or {}
        slo = ", ".join(f"{k} ≤ {s[f'slo_{k}_ms']:g} ms" for k in ("ttft", "tpot", "e2el")
                        if s.get(f"slo_{k}_ms") is not None) or "none"
        out.append(f"- **{r.model}** on {r.hardware}; vLLM {r.version}; run {r.date}; {r.workload}, "
                   f"ignore_eos; open loop, burstiness {s.get('burstiness', 1):g} "
                   f"(1 = Poisson); SLOs: {slo}.")
        out += ["", rate_table(r.doc), ""]
        search = r.doc.get("max_rate_search")
        if isinstance(search, dict):
            out += [f"Highest rate meeting the SLOs ({100 * search['goodput_target']:g} % of "
                    f"requests within them): **{search['max_rate']} req/s** (bracket "
                    f"{search['bracket']}, {len(search['probes'])} probes, {search['stopped']}).", ""]
    out += ["Goodput: requests/s that met every SLO; Within SLO: their fraction of measured requests; "
            "Send late: actual socket write minus scheduled send. Definitions: docs/metrics.md.", ""]
    return "\n".join(out)


def _client_bound_ms(runs: Sequence[plots.Run]) -> str:
    for r in runs:
        for p in r.doc.get("points", []):
            health = p.get("client")
            bound = health.get("client_bound_threshold_ms") if health else None
            if bound is not None:
                return f"{bound:g}"
    return "2"


# -- writing -------------------------------------------------------------------------------

@dataclass
class Rendered:
    """What `render_runs` wrote: table.md and, per figure name, its PNG and SVG."""

    folder: Path
    table: Path
    markdown: str
    figures: dict[str, list[Path]] = field(default_factory=dict)

    def pngs(self) -> list[Path]:
        return [paths[0] for paths in self.figures.values()]


def render_runs(runs: Sequence[plots.Run], folder: str | Path) -> Rendered:
    """Write table.md and every figure that has data; remove figures this data no longer has."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rate = all(rateplots.is_rate_run(r) for r in runs)  # open loop (bench/openloop.py)
    markdown = rate_markdown(runs) if rate else markdown_report(runs)
    table = out / TABLE_FILE
    table.write_text(markdown)
    reproduce.write_reproduce([r.doc for r in runs], out)
    if len(runs) == 1:  # one run's folder: results.csv and the llama-benchy pair (bench/export.py)
        export.write_exports(runs[0].doc, out)
    rendered = Rendered(folder=out, table=table, markdown=markdown)
    figures = rateplots.FIGURES if rate else {**plots.FIGURES, **nodeplots.FIGURES}
    for name, draw in figures.items():
        fig = draw(runs)
        if fig is None:
            for stale in (out / f"{name}.png", out / f"{name}.svg"):
                stale.unlink(missing_ok=True)
            continue
        nodeplots.mark_flagged(name, fig, runs)
        rendered.figures[name] = plots.save(fig, out, name)
    csv_path = out / TELEMETRY_FILE
    if len(runs) == 1 and csv_path.exists():  # one sweep's folder: its node timeline
        fig = nodeplots.timeline(read_telemetry_csv(csv_path), runs[0])
        if fig is not None:
            rendered.figures["node_timeline"] = plots.save(fig, out, "node_timeline")
    return rendered


def render(doc: ResultsDoc, folder: str | Path, hardware: str) -> Rendered:
    """table.md and figures for one run, into `folder` (results/<model>/)."""
    return render_runs([run_view(doc, hardware)], folder)


def show(rendered: Rendered) -> None:
    """Display the table and the figures in the notebook, as written to disk."""
    from IPython.display import Image, Markdown, display

    display(Markdown(rendered.markdown))
    for png in rendered.pngs():
        display(Image(filename=str(png), width=800))
    print(f"wrote {rendered.table} and {len(rendered.figures)} figures (PNG + SVG) in {rendered.folder}")


def execute(notebook: str | Path, output: str | Path, parameters: dict[str, Any],
            cwd: str | Path | None = None) -> None:
    """Run a notebook through papermill, the kernel in `cwd` (default: this process's).

    PapermillExecutionError carries the failing cell's exception name and message; the output
    notebook is written either way, with the traceback in it.
    """
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, progress_bar=False,
                               cwd=str(cwd) if cwd is not None else None)
