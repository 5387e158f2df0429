"""The operations log: every command run on a node, so a failed night can be read the next day."""

from __future__ import annotations

import threading
from pathlib import Path

from .shell import utc_stamp


def ansi_c_quote(text: str) -> str:
    """bash's $'...' quoting: the whole text on one line, newlines as \\n, valid to paste."""
    out = []
    for ch in text:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def shell_line(command: str) -> str:
    """One log line that runs the same thing when copied into bash. Joining a script's lines
    with '; ' does not (`cmd &; next`, a trailing backslash), so a multi-line command is logged
    as `bash -c $'...'`."""
    command = command.strip()
    if "\n" not in command:
        return command
    return "bash -c " + ansi_c_quote(command)


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
        one_line = shell_line(command)
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
