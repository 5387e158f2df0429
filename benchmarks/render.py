"""How long rendering from existing results takes: the notebooks through papermill, no sweep.

Makes two result sets once against the simulated endpoint (one with MTP, one without, seven
concurrency points like the config's default sweep, one with some failed requests so every
figure is drawn), then times, each `--repeat` times: bench.ipynb with run=False, compare.ipynb
on both, and for scale the same rendering in this process without a kernel. Wall time (min,
median, max) and CPU time (this process and the kernels); the load average is printed because
on a shared machine wall time follows it. Target: under 15 s per notebook.

    .venv/bin/python benchmarks/render.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

from bench import report
from bench.sim import SimConfig
from testbeds.simsweep import sweep_against_sim

POINTS = [1, 2, 4, 8, 16, 32, 64]
TARGET_S = 15.0


def make_results(root: Path) -> None:
    mtp = SimConfig(model="org/mtp-model", decode_base_s=0.002, prefill_base_s=0.002, spec_tokens=2,
                    fail_every=40)
    plain = SimConfig(model="org/plain-model", decode_base_s=0.003, prefill_base_s=0.002)
    for label, sim in (("mtp", mtp), ("plain", plain)):
        sweep_against_sim(sim, root, label=label, concurrency=POINTS, input_len=32, output_len=16,
                          requests_per_point=8, warmup=0)


def cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the papermill kernels)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per run: on a shared machine wall time follows the load, CPU time less so."""
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), cpu_s()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(cpu_s() - c)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gx10-render-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_results(root)
        print(f"made two result sets of {len(POINTS)} points in {time.perf_counter() - t:.1f} s")
        load_before = os.getloadavg()[0]
        cases: list[tuple[str, Callable[[], object]]] = [
            ("bench.ipynb, load-only (papermill)",
             lambda: report.execute(report.NOTEBOOKS_DIR / "bench.ipynb", root / "mtp" / "bench.ipynb",
                                    {"model": "mtp", "run": False, "results_dir": str(root)})),
            ("compare.ipynb, 2 models (papermill)",
             lambda: report.execute(report.NOTEBOOKS_DIR / "compare.ipynb", root / "compare" / "compare.ipynb",
                                    {"models": "mtp,plain", "results_dir": str(root),
                                     "out_dir": str(root / "compare")})),
            ("render one run in process (no kernel)",
             lambda: report.render(report.load(root / "mtp"), root / "inproc", "hw")),
            ("render comparison in process (no kernel)",
             lambda: report.render_runs(report.load_runs("mtp,plain", root), root / "inproc-compare")),
        ]
        rows = []
        for name, fn in cases:
            wall, cpu = timed(fn, args.repeat)
            rows.append([name, min(wall), statistics.median(wall), max(wall), statistics.median(cpu),
                         "yes" if max(wall) < TARGET_S else "NO"])
        figures = sorted(p.stem for p in (root / "mtp").glob("*.png"))
    print(tabulate(rows, headers=["case", "min s", "median s", "max s", "CPU s (median)", f"max < {TARGET_S:g} s"],
                   tablefmt="github", floatfmt=".2f"))
    print(f"figures per run: {len(figures)} ({', '.join(figures)}), each PNG (2x) + SVG; "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    return 0 if all(r[-1] == "yes" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
