"""The operations log: every command run on a node, so a failed night can be read the next day."""

from __future__ import annotations

import threading
from pathlib import Path

from .shell import utc_stamp


class OpsLog:
    """Appends one line per command (UTC time, host, exit code, duration, command), plus the
    stderr tail of failures. Thread-safe: nodes are driven in parallel."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()

    def record(
        self,
        host: str,
        command: str,
        exit_code: int | None,
        seconds: float,
        *,
        stderr: str = "",
        note: str = "",
    ) -> None:
        if self.path is None:
            return
        stamp = utc_stamp()
        code = "dry-run" if note == "dry-run" else f"exit={exit_code if exit_code is not None else 'none'}"
        one_line = "; ".join(part.strip() for part in command.splitlines() if part.strip())
        lines = [f"{stamp} {host} {code} {seconds:.2f}s {one_line}"]
        if note and note != "dry-run":
            lines.append(f"    note: {note}")
        if exit_code not in (0, None) or note.startswith("error"):
            lines += [f"    stderr: {line}" for line in stderr.strip().splitlines()[-10:]]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write("\n".join(lines) + "\n")

    def event(self, message: str) -> None:
        """A line for what is not a command: a task starting, a decision taken."""
        if self.path is None:
            return
        stamp = utc_stamp()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(f"{stamp} -- {message}\n")
