"""Figures and the blog table as library code: real images, honest labels, numbers as measured."""

from __future__ import annotations

import copy
import html
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import plots, report
from bench.results import ResultsError
from bench.sim import SimConfig
from cluster.config import ConfigError, Settings, defaults, validate
from testbeds.simsweep import sweep_against_sim

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
MTP_SIM = SimConfig(model="org/mtp-model", decode_base_s=0.002, prefill_base_s=0.002, spec_tokens=2,
                    spec_accept=0.6, seed=3)
PLAIN_SIM = SimConfig(model="plain-model", decode_base_s=0.003, prefill_base_s=0.002, seed=4)
FAILING_SIM = SimConfig(model="flaky-model", decode_base_s=0.002, prefill_base_s=0.002, fail_every=4,
                        seed=5)
SMALL = {"concurrency": [1, 2, 4], "input_len": 16, "output_len": 8, "requests_per_point": 6}
# table.md header -> the same number in results.json, read straight from a point.
RAW: dict[str, Any] = {
    "Output tok/s (all users)": lambda p: p["output_tok_s"],
    "Tok/s per user (p50)": lambda p: p["decode_tok_s"]["p50"],
    "TTFT p50 (ms)": lambda p: p["ttft_ms"]["p50"],
    "TTFT p99 (ms)": lambda p: p["ttft_ms"]["p99"],
    "TPOT p50 (ms)": lambda p: p["tpot_ms"]["p50"],
    "ITL p99 (ms)": lambda p: p["itl_ms"]["p99"],
    "Accept. length": lambda p: p["server"]["acceptance_length"],
}


# -- helpers shared with test_notebooks.py -------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk; fails on anything else."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR", f"{path} has no IHDR chunk first"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def assert_blog_png(path: Path) -> None:
    """Blog width at 2x (800 px at 100 dpi, doubled), landscape, and not blank."""
    width, height = png_size(path)
    assert width == 2 * 800, (path, width)
    assert 0.45 < height / width < 0.8, (path, width, height)
    assert path.stat().st_size > 20_000, f"{path} is suspiciously small for a chart"


def svg_texts(path: Path) -> str:
    """The strings drawn in an SVG: matplotlib writes each text as a comment beside its paths."""
    body = path.read_text()
    assert body.lstrip().startswith("<?xml") and "<svg" in body
    return " ".join(re.findall(r"<!--\s*(.*?)\s*-->", body, flags=re.S))


def drawn_series(svg: Path) -> list[dict[str, Any]]:
    """What the figure draws, per axes (lines and bars in data units), from the SVG's description."""
    found = re.findall(r"<dc:description>(.*?)</dc:description>", svg.read_text(), flags=re.S)
    assert len(found) == 1, f"{svg} has no description of what it draws"
    return list(json.loads(html.unescape(found[0]))["drawn"])


def _at(point: dict[str, Any], *keys: str) -> float | None:
    value: Any = point
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return None if value is None else float(value)


def _line(doc: dict[str, Any], x: tuple[str, ...], y: tuple[str, ...], scale: float = 1.0) -> dict[str, list[Any]]:
    points = sorted(doc["points"], key=lambda p: p["concurrency"])
    ys = [_at(p, *y) for p in points]
    return {"x": [_at(p, *x) for p in points], "y": [None if v is None else scale * v for v in ys]}


C, DECODE = ("concurrency",), ("decode_tok_s", "p50")
# figure -> per axes, the lines each run draws, from the results themselves (not the figure code's frame)
LINES: dict[str, list[list[tuple[tuple[str, ...], tuple[str, ...], float]]]] = {
    "throughput": [[(C, ("output_tok_s",), 1.0)]],
    "per_user": [[(C, DECODE, 1.0), (C, ("e2e_tok_s", "p50"), 1.0)]],
    "ttft": [[(C, ("ttft_ms", "p50"), 1.0), (C, ("ttft_ms", "p99"), 1.0)]],
    "tradeoff": [[(("output_tok_s",), DECODE, 1.0)]],
    "mtp": [[(C, ("server", "acceptance_length"), 1.0)], [(C, ("server", "acceptance_rate"), 100.0)]],
}


def expected_series(name: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What figure `name` must draw for `docs` (in order), per axes."""
    if name == "errors":
        points = sorted({p["concurrency"] for d in docs for p in d["points"]})
        if len(docs) == 1:  # stacked counts per failure kind; checked as totals per concurrency
            by_c = {p["concurrency"]: p for p in docs[0]["points"]}
            return [{"totals": [float(sum(by_c[c]["failures"].values())) for c in points]}]
        return [{"heights": [100.0 * (_at(p, "error_rate") or 0.0) for d in docs for p in
                             sorted(d["points"], key=lambda p: p["concurrency"])]}]
    if name == "mtp":
        docs = [d for d in docs if any(_at(p, "server", "acceptance_length") is not None for p in d["points"])]
    out = []
    for axes in LINES[name]:
        lines = [_line(d, x, y, k) for d in docs for x, y, k in axes]
        if name == "tradeoff":  # a point without both numbers is not drawn
            lines = [{"x": [a for a, b in zip(ln["x"], ln["y"], strict=True) if a is not None and b is not None],
                      "y": [b for a, b in zip(ln["x"], ln["y"], strict=True) if a is not None and b is not None]}
                     for ln in lines]
        out.append({"lines": lines, "bars": []})
    return out


def assert_figures_show(figures: dict[str, Path], docs: list[dict[str, Any]]) -> None:
    """Every figure (name -> SVG) draws exactly the results' numbers, and nothing else."""
    for name, svg in figures.items():
        drawn, want = drawn_series(svg), expected_series(name, docs)
        if name == "errors":
            bars = drawn[0]["bars"]
            if "totals" in want[0]:
                totals = [sum(h for x, _, h in bars if x == i) for i in range(len(want[0]["totals"]))]
                assert totals == want[0]["totals"], (name, totals, want)
            else:
                assert sorted(h for _, _, h in bars) == pytest.approx(sorted(want[0]["heights"]), rel=1e-12), name
            continue
        assert [len(ax["lines"]) for ax in drawn] == [len(ax["lines"]) for ax in want], name
        for got_ax, want_ax in zip(drawn, want, strict=True):
            assert got_ax["bars"] == []
            for got, exp in zip(got_ax["lines"], want_ax["lines"], strict=True):
                for axis in ("x", "y"):
                    assert [v is None for v in got[axis]] == [v is None for v in exp[axis]], (name, axis, got, exp)
                    assert [v for v in got[axis] if v is not None] == pytest.approx(
                        [v for v in exp[axis] if v is not None], rel=1e-12), (name, axis, got, exp)


def parse_table(markdown: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table in `markdown`, as header -> cell text."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, "no table found"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def assert_table_matches(markdown: str, docs: list[dict[str, Any]]) -> None:
    """Every number in the table is the results.json number, rounded as shown; every point is there."""
    rows = parse_table(markdown)
    by_model = {d["model"].rsplit("/", 1)[-1]: d for d in docs}
    seen = set()
    for row in rows:
        doc = by_model[row["Model"]] if "Model" in row else docs[0]
        c = int(row["Concurrency"].rstrip(" " + report.CLIENT_BOUND_MARK))
        point = next(p for p in doc["points"] if p["concurrency"] == c)
        seen.add((doc["model"], c))
        assert row["Concurrency"].endswith(report.CLIENT_BOUND_MARK) == bool(point["client"]["client_bound"])
        assert row["Failed"] == f"{point['failed']}/{point['requests']}"
        for header, get in RAW.items():
            if header not in row:
                assert header == "Accept. length", f"column {header!r} missing"
                continue
            raw = get(point)
            cell = row[header]
            if raw is None:
                assert cell == report.MISSING, (header, c, cell)
                continue
            decimals = len(cell.split(".")[1]) if "." in cell else 0
            assert abs(float(cell.replace(",", "")) - raw) <= 0.5 * 10 ** -decimals + 1e-9, (header, c, cell, raw)
    assert seen == {(d["model"], p["concurrency"]) for d in docs for p in d["points"]}


def configured_settings() -> Settings:
    """Defaults plus examples/invoke.yaml: a described (but imaginary) cluster."""
    from invoke.config import merge_dicts

    data = merge_dicts(copy.deepcopy(defaults()), yaml.safe_load((REPO / "examples" / "invoke.yaml").read_text()))
    data["cluster"]["ssh"]["key"] = data["cluster"]["ssh"]["known_hosts"] = None  # no files needed to plan
    return validate(data)


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Three small sweeps against the simulator: with MTP, without, and with failures."""
    root = tmp_path_factory.mktemp("results")
    docs = {}
    for label, sim in (("mtp", MTP_SIM), ("plain", PLAIN_SIM), ("flaky", FAILING_SIM)):
        doc, _ = sweep_against_sim(sim, root, label=label, **SMALL)
        docs[label] = json.loads(json.dumps(doc))
    return docs


def as_measured(doc: dict[str, Any], model: str) -> dict[str, Any]:
    """The same numbers as if a real server had answered (not recognisable as the simulator)."""
    real = copy.deepcopy(doc)
    real["model"], real["server_version"] = model, "0.22.1rc1.dev124+gace95c9cf"
    return real


# -- tests ---------------------------------------------------------------------------------

def test_render_writes_table_and_blog_sized_figures(results: dict[str, Any], tmp_path: Path) -> None:
    out = report.render(results["mtp"], tmp_path, "ignored for simulated results")
    assert sorted(out.figures) == ["mtp", "per_user", "throughput", "tradeoff", "ttft"]
    for png, svg in out.figures.values():
        assert_blog_png(png)
        assert svg.suffix == ".svg" and svg.stat().st_size > 10_000
    assert out.table == tmp_path / "table.md"
    assert_table_matches(out.table.read_text(), [results["mtp"]])
    assert_figures_show({name: svg for name, (_, svg) in out.figures.items()}, [results["mtp"]])


def test_simulated_results_say_so_on_every_figure_and_in_the_table(results: dict[str, Any], tmp_path: Path) -> None:
    out = report.render(results["mtp"], tmp_path, "4x ASUS Ascent GX10 (NVIDIA GB10), TP=4")
    for name, (_, svg) in out.figures.items():
        texts = svg_texts(svg)
        assert plots.SIM_BANNER in texts, name
        assert report.SIM_HARDWARE in texts and "GX10" not in texts, name
        assert "vLLM 0.32.0+sim" in texts and "org/mtp-model" in texts, name
    assert "Simulated endpoint" in out.table.read_text()


def test_measured_results_carry_hardware_version_date_and_units(results: dict[str, Any], tmp_path: Path) -> None:
    doc = as_measured(results["mtp"], "Qwen/Qwen3.5-397B-A17B-FP8")
    hardware = "4x ASUS Ascent GX10 (NVIDIA GB10), TP=4"
    out = report.render(doc, tmp_path, hardware)
    date = doc["started_at"][:10]
    units = {"throughput": ["tokens/s"], "per_user": ["tokens/s per user"], "ttft": ["(ms)"],
             "tradeoff": ["tokens/s (all users)", "tokens/s per user"], "mtp": ["tokens per step", "(%)"]}
    for name, (_, svg) in out.figures.items():
        texts = svg_texts(svg)
        assert "SIMULATED" not in texts, name
        for needed in (hardware, "vLLM 0.22.1rc1.dev124+gace95c9cf", date, "Qwen/Qwen3.5-397B-A17B-FP8",
                       "16 in / 8 out tokens", *units[name]):
            assert needed in texts, (name, needed)
        if name != "tradeoff":
            assert plots.CONCURRENCY_LABEL in texts, name
    table = out.table.read_text()
    assert hardware in table and "Simulated" not in table


def test_no_mtp_column_or_figure_without_server_counters_and_stale_figures_go(
        results: dict[str, Any], tmp_path: Path) -> None:
    report.render(results["mtp"], tmp_path, "hw")
    assert (tmp_path / "mtp.png").exists()
    out = report.render(results["plain"], tmp_path, "hw")
    assert "mtp" not in out.figures
    assert not (tmp_path / "mtp.png").exists() and not (tmp_path / "mtp.svg").exists()
    assert "Accept. length" not in out.table.read_text()
    assert_table_matches(out.table.read_text(), [results["plain"]])
    assert_figures_show({name: svg for name, (_, svg) in out.figures.items()}, [results["plain"]])


def test_errors_figure_only_when_requests_failed(results: dict[str, Any], tmp_path: Path) -> None:
    flaky = results["flaky"]
    assert sum(p["failed"] for p in flaky["points"]) > 0
    out = report.render(flaky, tmp_path / "flaky", "hw")
    assert "errors" in out.figures
    assert_blog_png(out.figures["errors"][0])
    texts = svg_texts(out.figures["errors"][1])
    assert "http_500" in texts or any(k in texts for p in flaky["points"] for k in p["failures"])
    assert "failed requests (count)" in texts
    assert_table_matches(out.table.read_text(), [flaky])
    assert_figures_show({name: svg for name, (_, svg) in out.figures.items()}, [flaky])
    assert "errors" not in report.render(results["plain"], tmp_path / "plain", "hw").figures


def test_comparison_overlays_models_in_one_table(results: dict[str, Any], tmp_path: Path) -> None:
    for label in ("mtp", "plain", "flaky"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "results.json").write_text(json.dumps(results[label]))
    runs = report.load_runs("mtp, plain,flaky", tmp_path)
    assert [r.name for r in runs] == ["mtp-model", "plain-model", "flaky-model"]
    out = report.render_runs(runs, tmp_path / "compare")
    assert sorted(out.figures) == ["errors", "mtp", "per_user", "throughput", "tradeoff", "ttft"]
    for png, _ in out.figures.values():
        assert_blog_png(png)
    legend = svg_texts(out.figures["throughput"][1])
    assert all(r.name in legend for r in runs)
    # Only the MTP model has acceptance data; the caption says which models are left out.
    mtp_texts = svg_texts(out.figures["mtp"][1])
    assert "Not shown, no speculative-decoding counters on the server: plain-model, flaky-model" in mtp_texts
    assert_table_matches(out.table.read_text(), [results[k] for k in ("mtp", "plain", "flaky")])
    assert_figures_show({name: svg for name, (_, svg) in out.figures.items()},
                        [results[k] for k in ("mtp", "plain", "flaky")])
    with pytest.raises(ValueError, match="two or more"):
        report.load_runs("mtp", tmp_path)


def test_comparison_of_measured_runs_takes_the_hardware_label_from_config(
        results: dict[str, Any], tmp_path: Path) -> None:
    for label, model in (("a", "org/same"), ("b", "other/same")):
        (tmp_path / label).mkdir()
        (tmp_path / label / "results.json").write_text(json.dumps(as_measured(results["mtp"], model)))
    runs = report.load_runs(["a", "b"], tmp_path, settings=configured_settings())
    assert [r.name for r in runs] == ["a (same)", "b (same)"]  # same short name: the folder tells them apart
    assert {r.hardware for r in runs} == {"4x ASUS Ascent GX10 (NVIDIA GB10), TP=4"}


@pytest.mark.parametrize(("content", "message"), [
    (None, "no results file at .*; run the sweep first"),
    ("{not json", "is not readable JSON"),
    ('{"points": []}', "no schema_version"),
    ('{"schema_version": 1, "points": []}', "no finished points yet; run the sweep first"),
    ('{"schema_version": 1, "points": [{"output_tok_s": 3}]}', "point 0 has no positive integer concurrency"),
])
def test_load_says_what_is_wrong(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ResultsError, match=message):
        report.load(tmp_path)


def test_plan_demo_needs_no_config() -> None:
    t = report.plan("demo", concurrency="1,4", results_dir="/tmp/r",
                    settings=None)
    assert t.simulated and t.label == "demo" and t.folder == Path("/tmp/r/demo")
    assert t.concurrency == (1, 4) and t.hardware == report.SIM_HARDWARE
    assert report.plan("demo").concurrency == report.DEMO_CONCURRENCY


def test_plan_without_a_cluster_falls_back_to_the_simulator() -> None:
    unconfigured = validate(defaults())
    t = report.plan("qwen", settings=unconfigured)
    assert t.simulated and t.label == "demo" and "no cluster is configured" in t.note
    # Loading only needs no cluster: the model's own folder and the config's hardware label.
    t = report.plan("qwen", run=False, settings=unconfigured)
    assert t.folder == Path("results/qwen") and t.hardware == unconfigured.hardware_label
    assert not t.simulated and t.base_url is None
    with pytest.raises(ValueError, match="loading only"):
        report.measure(t)


def test_plan_from_config_uses_head_api_and_served_name() -> None:
    s = configured_settings()
    t = report.plan("qwen", settings=s, results_dir="out")
    assert t.base_url == "http://192.0.2.10:8000" and t.model == "Qwen/Qwen3.5-397B-A17B-FP8"
    assert t.folder == Path("out/qwen") and not t.simulated
    assert t.concurrency == s.bench.concurrency and t.input_len == s.bench.input_len
    assert t.hardware == s.hardware_label
    t = report.plan("my/model", base_url="http://10.0.0.5:8000", concurrency=8, settings=s)
    assert (t.base_url, t.model, t.label, t.concurrency) == ("http://10.0.0.5:8000", "my/model", "my_model", (8,))
    with pytest.raises(ConfigError, match="unknown model 'llama'"):
        report.plan("llama", settings=s)
    with pytest.raises(ValueError, match="listed twice"):
        report.plan("qwen", concurrency="2,2", settings=s)
