"""Strict config-file loading for `inv`: a YAML syntax error or a missing `-f FILE` is a one-line
`config error: ...` (file, line, column) with exit 2, not a traceback or a silent skip.

Invoke reads its config files inside its own Program (invoke/config.py `Config._load_file`, which
calls `_load_yaml` and skips any file that raises ENOENT, even the one named by `-f`), before and
between the steps where a task could catch anything. The project's tasks.py is imported by that
Program before the project file (invoke.yaml beside tasks.py) and the runtime file (`-f`) are
loaded, so `install()` there is in time for both. Errors are raised as invoke's `Exit`, which the
Program prints and exits with (the one exception it handles cleanly). `~/.invoke.yaml` and
/etc/invoke.yaml are read before tasks.py is imported, so a syntax error there is still Invoke's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from invoke.config import Config
from invoke.exceptions import Exit

CONFIG_EXIT = 2


def yaml_error(path: str | os.PathLike[str], exc: yaml.YAMLError) -> str:
    """`config error: FILE line L, column C: problem` from a PyYAML error (marks are 0-based)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else str(problem)
    return f"config error: {path}{where}: {detail}. Fix the YAML there (indentation, a missing ':' or quote)"


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse one config file; a syntax error becomes Exit(config error, 2)."""
    with open(path) as fd:
        try:
            return yaml.safe_load(fd)
        except yaml.YAMLError as exc:
            raise Exit(yaml_error(path, exc), code=CONFIG_EXIT) from None


def require_runtime_file(path: str | os.PathLike[str] | None) -> None:
    """`inv -f FILE` (or INVOKE_RUNTIME_CONFIG) naming a file that is not there is an error."""
    if path and not Path(os.path.expanduser(path)).is_file():
        raise Exit(
            f"config error: config file {path} (from -f or INVOKE_RUNTIME_CONFIG) does not exist: "
            "check the path",
            code=CONFIG_EXIT,
        )


def _strict_yaml(self: Config, path: str) -> Any:
    return load_yaml(path)


_plain_load_runtime = Config.load_runtime


def _strict_load_runtime(self: Config, merge: bool = True) -> None:
    require_runtime_file(getattr(self, "_runtime_path", None))
    _plain_load_runtime(self, merge)


def install() -> None:
    """Make every Config in this process load its files strictly (idempotent)."""
    Config._load_yaml = _strict_yaml  # type: ignore[method-assign,assignment]
    Config._load_yml = _strict_yaml  # type: ignore[method-assign,assignment]
    Config.load_runtime = _strict_load_runtime  # type: ignore[method-assign]
