"""gx10-ops tasks: thin adapters that parse flags, call cluster/ and bench/, and report.

The cluster is described by config (cluster/defaults.yaml, overridden by invoke.yaml beside this
file, ~/.invoke.yaml, INVOKE_* variables or `inv -f FILE`). Run `inv --list`, `inv --help TASK`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from cluster import doctor as doctor_mod
from cluster import facts as facts_mod
from cluster.config import ConfigError, Settings, defaults, from_invoke
from cluster.remote import Cluster, RemoteError
from cluster.status import render_status


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's typed errors into a clean message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            raise Exit(f"config error: {e}", code=2) from e
        except RemoteError as e:
            raise Exit(str(e), code=1) from e
        except KeyboardInterrupt as e:
            raise Exit("interrupted", code=130) from e

    return wrapper


def settings(c: Context) -> Settings:
    return from_invoke(c.config)


def cluster(c: Context, dry_run: bool = False) -> Cluster:
    return Cluster(settings(c), dry_run=dry_run)


@task
@reports_errors
def status(c: Context) -> None:
    """Show every node: reachable over management and fabric, containers, images, free disk."""
    with cluster(c) as cl:
        print(render_status(facts_mod.gather(cl)))


@task(help={"strict": "Exit non-zero on warnings too, not only on failures."})
@reports_errors
def doctor(c: Context, strict: bool = False) -> None:
    """Preflight: check SSH, host keys, engine, fabric, disk, launcher repo; print each fix."""
    with cluster(c) as cl:
        facts = facts_mod.gather(cl)
        checks = doctor_mod.node_checks(cl, facts)
        if facts[cl.head.name].reachable:
            checks += doctor_mod.head_checks(cl)
        print(doctor_mod.render_checks(checks))
        bad = doctor_mod.failed(checks)
        warned = [ch for ch in checks if ch.status == doctor_mod.WARN]
        if bad or (strict and warned):
            raise Exit(f"doctor: {len(bad)} check(s) failed, {len(warned)} warning(s)", code=1)
        print(f"doctor: all {len(checks)} checks passed" + (f" ({len(warned)} warnings)" if warned else ""))


ns = Collection(status, doctor)
ns.configure(defaults())
