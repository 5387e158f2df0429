"""A free port for a test server, found by binding and releasing it (on loopback by default: the
tests and benchmarks send traffic only to loopback and the simulated cluster)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
