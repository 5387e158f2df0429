"""What one node sampler costs: CPU % of its whole process group (the shell, the tag loop, the
nvidia-smi process, every `date`/`sleep` they fork) while it streams at 2 Hz. Prints a table and
exits 1 when the cost is over TARGET_PCT of one core. Run from the repository root:
`python benchmarks/telemetry_cost.py [SECONDS]` (default 30).

It runs the real `sampler_command` locally under bash in a new session (as sshd does), with the
nvidia-smi stand-in (testbeds/standins/nvidia-smi, Python) first on PATH: the figure is the
sampler's shell cost plus the stand-in's, not a real nvidia-smi's (which links NVML and may cost
more or less per row). CPU time is read from /proc/PID/stat (utime+stime+cutime+cstime) summed
over the live members of the group just before stopping: a live process's own time plus the time
of every child it has reaped, so each CPU second is counted once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cluster.telemetry import TelemetryOptions, sampler_command, stop_command

ROOT = Path(__file__).resolve().parent.parent

TARGET_PCT = 2.0  # of one core, per node
TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> tuple[float, int]:
    total, members = 0.0, 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            total += sum(int(x) for x in fields[11:15]) / TICK
            members += 1
    return total, members


def main(seconds: float) -> int:
    env = {**os.environ, "PATH": f"{ROOT / 'testbeds' / 'standins'}:{os.environ['PATH']}",
           "NVIDIA_SMI_STANDIN_SCENARIO": "/nonexistent"}
    command = sampler_command(TelemetryOptions(interval_ms=500))
    proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    lines = 0
    wall0 = time.monotonic()
    first, _ = group_cpu_s(proc.pid)
    while time.monotonic() - wall0 < seconds:
        proc.stdout.readline()
        lines += 1
    cpu, members = group_cpu_s(proc.pid)
    wall = time.monotonic() - wall0
    subprocess.run(["sh", "-c", stop_command(proc.pid)], capture_output=True, timeout=10)
    proc.wait(5)
    pct = 100.0 * (cpu - first) / wall
    print(f"{'seconds':>8} {'lines':>6} {'procs':>6} {'cpu s':>7} {'cpu %':>6} {'target %':>9}")
    print(f"{wall:8.1f} {lines:6d} {members:6d} {cpu - first:7.2f} {pct:6.2f} {TARGET_PCT:9.1f}")
    print(f"load average: {os.getloadavg()[0]:.2f} (machine shared; stand-in nvidia-smi, not NVML)")
    return 0 if pct <= TARGET_PCT else 1


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0))
