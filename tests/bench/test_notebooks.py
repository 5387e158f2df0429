"""The notebooks, executed through papermill with small parameters against the simulated endpoint.

Each test asserts on what the notebook wrote under its results folder: the executed notebook,
table.md (numbers equal to results.json) and the figures (real PNGs of blog size, SVGs). The
committed notebooks must carry no outputs and match their jupytext text form.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from bench import plots, report
from bench.sim import SimConfig
from testbeds.checks import timing
from testbeds.simsweep import sweep_against_sim

from test_plots import (  # isort: skip
    as_measured,
    assert_blog_png,
    assert_figures_show,
    assert_table_matches,
    svg_texts,
)

pytestmark = [pytest.mark.notebooks, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
BENCH_NB = REPO / "notebooks" / "bench.ipynb"
COMPARE_NB = REPO / "notebooks" / "compare.ipynb"
SMALL = {"concurrency": "1,2,4", "input_len": 16, "output_len": 12, "requests": 6}


def run(notebook: Path, output: Path, **parameters: Any) -> None:
    report.execute(notebook, output, parameters, cwd=output.parent)


def sweep(tmp: Path, label: str, sim: SimConfig) -> dict[str, Any]:
    doc, _ = sweep_against_sim(sim, tmp, label=label, concurrency=[1, 2, 4], input_len=16, output_len=8,
                               requests_per_point=6)
    return json.loads(json.dumps(doc))


def assert_report(folder: Path, docs: list[dict[str, Any]], figures: set[str]) -> None:
    assert_table_matches((folder / report.TABLE_FILE).read_text(), docs)
    for name in plots.FIGURES:
        png, svg = folder / f"{name}.png", folder / f"{name}.svg"
        assert png.exists() == svg.exists() == (name in figures), name
        if name in figures:
            assert_blog_png(png)
            assert svg_texts(svg)
    assert_figures_show({name: folder / f"{name}.svg" for name in figures}, docs)


# -- the committed notebooks ---------------------------------------------------------------

def test_there_are_notebooks_to_check() -> None:
    assert {p.name for p in NOTEBOOKS} == {"bench.ipynb", "compare.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"
        assert set(cell.metadata) <= {"tags"}, f"{path.name} cell {i} metadata {dict(cell.metadata)}"
    assert set(nb.metadata) <= {"kernelspec", "jupytext"} and nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_text_form_are_in_sync(path: Path) -> None:
    text = path.with_suffix(".pct.py")
    assert text.exists(), f"{path.name} has no paired {text.name}"
    a, b = jupytext.read(path), jupytext.read(text)
    cells = [[(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells] for nb in (a, b)]
    assert cells[0] == cells[1], f"{path.name} and {text.name} differ: run `jupytext --sync {text}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_plain_literals_and_the_rest_is_thin(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged parameters"
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant), ast.unparse(stmt)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not tagged[0])
    tree = ast.parse(code)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    # the harness, the config loader (no SSH) that hands it settings, and the provenance card's
    # cluster facts (SSH, handed to bench as a callable; bench/ itself stays SSH-free)
    allowed = {"bench", "cluster.config", "cluster.provenance"}
    assert all(isinstance(n, ast.ImportFrom) and n.module in allowed for n in imports), \
        "import only from bench, cluster.config, cluster.provenance"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.For | ast.While)]


# -- executed ------------------------------------------------------------------------------

def test_bench_demo_runs_the_simulator_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "bench.ipynb"
    run(BENCH_NB, out, model="demo", results_dir=str(tmp_path), **SMALL)
    folder = tmp_path / "demo"
    doc = json.loads((folder / "results.json").read_text())
    assert [p["concurrency"] for p in doc["points"]] == [1, 2, 4]
    assert doc["settings"]["output_len"] == 12
    assert all(p["server"]["acceptance_length"] for p in doc["points"]), "the demo runs MTP"
    assert_report(folder, [doc], {"throughput", "per_user", "ttft", "tradeoff", "mtp"})
    for name in ("throughput", "mtp"):
        assert plots.SIM_BANNER in svg_texts(folder / f"{name}.svg")
    executed = nbformat.read(out, as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "image/png" in shown and "Simulated endpoint" in shown


def test_bench_load_only_rerenders_without_measuring(tmp_path: Path) -> None:
    doc = sweep(tmp_path, "flaky", SimConfig(model="flaky", decode_base_s=0.002, prefill_base_s=0.002,
                                             spec_tokens=3, fail_every=5))
    results = tmp_path / "flaky" / "results.json"
    before = results.read_bytes()
    (tmp_path / "flaky" / "mtp.png").write_bytes(b"stale")
    run(BENCH_NB, tmp_path / "flaky" / "bench.ipynb", model="flaky", run=False, results_dir=str(tmp_path))
    assert results.read_bytes() == before
    assert sum(p["failed"] for p in doc["points"]) > 0
    assert_report(tmp_path / "flaky", [doc], {"throughput", "per_user", "ttft", "tradeoff", "mtp", "errors"})


@pytest.mark.parametrize(("content", "message"), [
    (None, "ResultsError: no results file at"),
    ("{\"schema_version\": 1, \"points\": [", "ResultsError: .* is not readable JSON"),
    ("{\"schema_version\": 1, \"points\": [{\"ttft_ms\": 3}]}", "point 0 has no positive integer concurrency"),
])
def test_bench_load_only_says_what_is_wrong_with_results(tmp_path: Path, content: str | None, message: str) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    if content is not None:
        (folder / "results.json").write_text(content)
    with pytest.raises(PapermillExecutionError, match=message):
        run(BENCH_NB, folder / "bench.ipynb", model="gone", run=False, results_dir=str(tmp_path))
    assert not (folder / report.TABLE_FILE).exists()


def test_compare_overlays_two_result_sets(tmp_path: Path) -> None:
    docs = [sweep(tmp_path, "with-mtp", SimConfig(model="org/with-mtp", decode_base_s=0.002, spec_tokens=2)),
            sweep(tmp_path, "no-mtp", SimConfig(model="no-mtp", decode_base_s=0.004))]
    out = tmp_path / "cmp"
    run(COMPARE_NB, out / "compare.ipynb", models="with-mtp,no-mtp", results_dir=str(tmp_path), out_dir=str(out))
    assert_report(out, docs, {"throughput", "per_user", "ttft", "tradeoff", "mtp"})
    assert (out / "compare.ipynb").exists()
    texts = svg_texts(out / "throughput.svg")
    assert "with-mtp" in texts and "no-mtp" in texts
    with pytest.raises(PapermillExecutionError, match="no results file at .*missing"):
        run(COMPARE_NB, out / "compare.ipynb", models="with-mtp,missing", results_dir=str(tmp_path), out_dir=str(out))


def test_dev_demo_command_runs_the_default_demo_in_under_a_minute(tmp_path: Path) -> None:
    """What `./dev demo` runs, with the notebook's own defaults, from a fresh folder."""
    (tmp_path / "results" / "demo").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOKE_", "GX10_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    t0 = time.monotonic()
    subprocess.run(["papermill", str(BENCH_NB), "results/demo/bench.ipynb", "-p", "model", "demo"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    took = time.monotonic() - t0
    folder = tmp_path / "results" / "demo"
    doc = json.loads((folder / "results.json").read_text())
    assert [p["concurrency"] for p in doc["points"]] == list(report.DEMO_CONCURRENCY)
    assert_report(folder, [doc], {"throughput", "per_user", "ttft", "tradeoff", "mtp"})
    timing(took, 60, "the demo")


def inv(*args: str, results_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOKE_", "GX10_"))}
    env["INVOKE_CONTROL_RESULTS_DIR"] = str(results_dir)
    return subprocess.run([str(Path(sys.executable).parent / "inv"), *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=240)


def test_inv_report_load_only_compare_and_refusals(tmp_path: Path) -> None:
    # `inv -f FILE` reaches the kernel: the hardware label of a measured run comes from this file,
    # and its placeholders (the seed's) leave no cluster to measure.
    rig = tmp_path / "rig.yaml"
    rig.write_text('cluster:\n  hardware_label: "test rig: 4 nodes"\n'
                   '  head: {name: head, mgmt: "<head-node>", fabric: "<head-fabric-ip>"}\n')
    qwen = sweep(tmp_path, "qwen", SimConfig(model="Qwen/Qwen3.5-397B-A17B-FP8", decode_base_s=0.002, spec_tokens=2))
    nemotron = as_measured(sweep(tmp_path, "nemotron", SimConfig(model="x", decode_base_s=0.003)),
                           "nvidia/NVIDIA-Nemotron-3-Ultra-550B-A55B-NVFP4")
    (tmp_path / "nemotron" / "results.json").write_text(json.dumps(nemotron))

    done = inv("-f", str(rig), "report", "--model", "nemotron", "--load-only", results_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "nemotron" / "bench.ipynb").exists()
    assert_report(tmp_path / "nemotron", [nemotron], {"throughput", "per_user", "ttft", "tradeoff"})
    texts = svg_texts(tmp_path / "nemotron" / "throughput.svg")
    assert "Hardware: test rig: 4 nodes" in texts and "SIMULATED" not in texts

    done = inv("-f", str(rig), "report", "--compare", "qwen,nemotron", results_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "compare" / "compare.ipynb").exists()
    assert_report(tmp_path / "compare", [qwen, nemotron], {"throughput", "per_user", "ttft", "tradeoff", "mtp"})

    missing = inv("-f", str(rig), "report", "--model", "qwen", "--load-only", results_dir=tmp_path / "empty")
    assert missing.returncode == 1 and "ResultsError: no results file at" in missing.stderr
    refused = inv("-f", str(rig), "report", "--model", "qwen", results_dir=tmp_path)
    assert refused.returncode == 2 and "placeholders" in refused.stderr
    unknown = inv("-f", str(rig), "report", "--model", "llama", "--load-only", results_dir=tmp_path)
    assert unknown.returncode == 2 and "unknown model 'llama'" in unknown.stderr


def test_inv_report_compare_of_two_repeated_runs_gives_ratios_and_bands(tmp_path: Path) -> None:
    """`inv report --compare a,b` (compare.ipynb under papermill) on two `--repeats 3` runs whose
    decode steps differ by 20 %: ratios.md as bench.compare computes it from the repeats, and
    each run's throughput drawn as its mean with the 95 % band of its repeats."""
    from bench.compare import ratios_markdown
    from bench.repeats import load_repeats, run_repeats
    from bench.sim import BackgroundSim
    from bench.sweep import SweepConfig

    for label, step in (("a", 0.010), ("b", 0.012)):
        with BackgroundSim(SimConfig(model=label, decode_base_s=step, decode_per_seq_s=0.0)) as sim:
            run_repeats(SweepConfig(base_url=sim.base_url, model=label, label=label, results_dir=tmp_path,
                                    concurrency=[1, 2], input_len=8, output_len=8, requests_per_point=3),
                        3, progress=False)
    assert not (tmp_path / "a" / "results.json").exists()  # a repeated run: only repeats/r<i>/
    rig = tmp_path / "rig.yaml"
    rig.write_text('cluster:\n  head: {name: head, mgmt: "<head-node>", fabric: "<head-fabric-ip>"}\n')
    done = inv("-f", str(rig), "report", "--compare", "a,b", results_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "compare"
    want = ratios_markdown("a", "b", load_repeats(tmp_path / "a"), load_repeats(tmp_path / "b"))
    assert (out / "ratios.md").read_text() == want
    (ax,) = drawn_svg(out / "throughput.svg")
    assert len(ax["bands"]) == 2 and all(b["x"] == [1.0, 2.0] for b in ax["bands"]), ax["bands"]
    for band, line in zip(ax["bands"], ax["lines"], strict=True):
        assert all(lo < y < hi for lo, y, hi in zip(band["low"], line["y"], band["high"], strict=True))
    assert "repeats 3" in svg_texts(out / "throughput.svg")


def drawn_svg(svg: Path) -> list[dict[str, Any]]:
    import html
    import re
    found = re.findall(r"<dc:description>(.*?)</dc:description>", svg.read_text(), flags=re.S)
    return list(json.loads(html.unescape(found[0]))["drawn"])
