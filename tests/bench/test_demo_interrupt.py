"""Ctrl-C during `python -m bench --demo`: one clean line and exit 130, no server traceback per
in-flight request (issue 18 item 7)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


def test_ctrl_c_mid_demo_is_one_clean_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--demo", "--no-progress", "--results-dir", str(tmp_path),
         "--concurrency", "64", "--requests", "5000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "demo" / "bench.log"
        deadline = time.monotonic() + 60
        while not (log.exists() and "C=64" in log.read_text()):  # the measured point has started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the demo never started its point"
            time.sleep(0.1)
        time.sleep(4)  # 64 streams in flight, long past the warm-up
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "ClientConnectionResetError" not in err, err[:2000]
    assert err.strip().splitlines() == ["bench: interrupted; finished points are kept in results.json"], err
