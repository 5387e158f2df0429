"""Progress for long transfers: rsync's `--info=progress2` output parsed into a byte count per
target, shown as a tqdm bar on a terminal and as a periodic plain line in logs and CI."""

from __future__ import annotations

import re
import sys
import threading
import time

from tqdm import tqdm

from .shell import LineSplitter

_PROGRESS2 = re.compile(r"^\s*([\d,]+)\s+\d+%")
PLAIN_EVERY_S = 15.0


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"


class TransferBar:
    """A file-like sink: feed it rsync progress2 output; it reports bytes, rate and time left."""

    _lock = threading.Lock()

    def __init__(self, label: str, total_bytes: int, position: int = 0):
        self.label, self.total = label, max(total_bytes, 0)
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
            position=position, leave=True, file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
            disable=not self.tty,
        )
        self.done = self.base = 0  # base: bytes of earlier rsync runs fed to this bar
        self.runs = 0
        self.lock = threading.Lock()  # several parts add to `done` at once
        self._lines = LineSplitter(self._progress_line)
        self.start = self.last_plain = time.monotonic()

    def write(self, data: str) -> int:
        return self._lines.write(data)

    def _progress_line(self, line: str) -> None:
        m = _PROGRESS2.match(line)
        if m:
            self.update(int(m.group(1).replace(",", "")))

    def next_run(self) -> None:
        """A new rsync feeds this bar: its counter starts at 0, ours goes on from here. The rate
        counts from the first run (a worker waiting for hop 1 is not a slow worker)."""
        if not self.runs:
            self.start = time.monotonic()
        self.runs += 1
        self.base = self.done

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-6)

    def part(self) -> _Part:
        """A sink for one of several rsyncs feeding this bar at once: each adds what it moved."""
        if not self.runs:
            self.start = time.monotonic()
        self.runs += 1
        return _Part(self)

    def seconds_left(self) -> float:
        """inf when unknown: a rate from a few bytes or under a second says nothing."""
        rate = self.rate()
        sure = self.done >= 1024**2 and time.monotonic() - self.start >= 1
        return (self.total - self.done) / rate if rate > 0 and sure else float("inf")

    def update(self, done: int) -> None:
        self._set(max(self.done, self.base + done))  # never backwards (a failed run's last line)

    def _set(self, done: int) -> None:
        self.done = min(done, self.total) if self.total else done
        with self._lock:
            if self.tty:
                self.bar.n = self.done
                self.bar.refresh()
            elif time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
                self.last_plain = time.monotonic()
                sys.stderr.write(self.plain_line() + "\n")

    def plain_line(self) -> str:
        rate, left = self.rate(), self.seconds_left()
        eta = f"{left:.0f} s left" if left != float("inf") else "time left unknown"
        return f"{self.label}: {human(self.done)} of {human(self.total)}, {human(rate)}/s, {eta}"

    def flush(self) -> None:
        pass

    def close(self, complete: bool) -> None:
        if complete:
            self.done = self.total
        with self._lock:
            self.bar.n = self.done
            self.bar.refresh()
            self.bar.close()
            if not self.tty:
                sys.stderr.write(self.plain_line() + (" (done)" if complete else " (FAILED)") + "\n")


class _Part:
    """One rsync's progress2 counter turned into increments of a shared TransferBar."""

    def __init__(self, bar: TransferBar):
        self.bar, self.seen = bar, 0
        self._lines = LineSplitter(self._line)

    def write(self, data: str) -> int:
        return self._lines.write(data)

    def flush(self) -> None:
        pass

    def _line(self, line: str) -> None:
        m = _PROGRESS2.match(line)
        if m:
            n = int(m.group(1).replace(",", ""))
            if n > self.seen:
                with self.bar.lock:
                    self.bar._set(self.bar.done + n - self.seen)
                self.seen = n
            self.bar.update(0)
