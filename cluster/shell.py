"""Small helpers every module that drives a node's shell needs: stream output cut into lines, and
the UTC time stamps written into logs, records and folder names. One copy each, so a log line,
a record and a folder name always agree on how time is written."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # in logs and JSON records
COMPACT_UTC = "%Y%m%dT%H%M%SZ"  # in file and folder names


def utc_stamp(fmt: str = ISO_UTC) -> str:
    """The current UTC time in `fmt` (ISO_UTC or COMPACT_UTC)."""
    return time.strftime(fmt, time.gmtime())


class LineSplitter:
    """A file-like sink for streamed text that hands each complete line to `on_line`; the part
    after the last newline waits for the next write. A carriage return (progress redraws, a pty's
    line ends) becomes `carriage_return`: a line break by default, "" to drop it. `on_flush` runs
    after every write and on flush (e.g. to flush the terminal the lines went to)."""

    def __init__(self, on_line: Callable[[str], None], *, carriage_return: str = "\n",
                 on_flush: Callable[[], None] | None = None):
        self.on_line, self.carriage_return, self.on_flush = on_line, carriage_return, on_flush
        self.buf = ""
        self._lock = threading.Lock()

    def write(self, data: str) -> int:
        with self._lock:
            self.buf += data
            *lines, self.buf = self.buf.replace("\r", self.carriage_return).split("\n")
            for line in lines:
                self.on_line(line)
            if self.on_flush:
                self.on_flush()
        return len(data)

    def flush(self) -> None:
        if self.on_flush:
            self.on_flush()
