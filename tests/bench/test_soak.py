"""A short run of benchmarks/soak.py: with faults injected, no request is lost or counted twice,
every injected fault is one failure, and no socket or task is left behind (RSS flatness needs
the full 100,000: the benchmark's own table)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_loses_nothing_and_leaks_nothing() -> None:
    env = {**os.environ, "GX10_SOAK_REQUESTS": "7000", "GX10_SOAK_SEGMENT": "1750"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in r.stdout.splitlines() if line.startswith("| ") and line.count("|") == 4}
    assert rows, r.stdout + r.stderr
    for name in ("requests lost", "failures seen", "open fds start / end", "asyncio tasks start / end"):
        assert rows[name] == "ok", (name, r.stdout)
    assert "http_500 2" in r.stdout and "cut 2" in r.stdout and "stall 1" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
