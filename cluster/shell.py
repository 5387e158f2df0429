"""Small helpers every module that drives a node's shell needs: quoting for remote command lines,
stream output cut into lines, and the UTC time stamps written into logs, records and folder
names. One copy each, so every command quotes alike and every record writes time alike."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable

ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # in logs and JSON records
COMPACT_UTC = "%Y%m%dT%H%M%SZ"  # in file and folder names


def utc_stamp(fmt: str = ISO_UTC) -> str:
    """The current UTC time in `fmt` (ISO_UTC or COMPACT_UTC)."""
    return time.strftime(fmt, time.gmtime())


def tail(text: str, n: int = 3) -> str:
    """The last `n` lines of a command's output on one line, for an error message."""
    return " | ".join(text.strip().splitlines()[-n:])


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


def q(value: str) -> str:
    """Shell-quote one value for a remote command line (shlex.quote, short name for f-strings)."""
    return shlex.quote(str(value))


def remote_path(path: str) -> str:
    """Quote a node path, keeping a leading `~/` expandable by the remote shell."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)
