"""What the test beds' command lines (`python -m testbeds.simcluster`, `scripts/real-vllm`) share:
a failure the user can act on is one line on stderr and exit status 1, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_reporting(prog: str, error: type[Exception], action: Callable[[], None]) -> int:
    """Run `action`; an `error` it raises is printed as `prog: message` and gives exit status 1."""
    try:
        action()
    except error as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return 0
