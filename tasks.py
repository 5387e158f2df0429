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

from cluster import containers, serving, weights
from cluster import doctor as doctor_mod
from cluster import facts as facts_mod
from cluster import launch as launch_mod
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
        except (RemoteError, weights.WeightsError) as e:
            raise Exit(str(e), code=1) from e
        except launch_mod.LaunchError as e:
            raise Exit(str(e), code=e.exit_code) from e
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
        facts = facts_mod.gather(cl)
        reachable = [f.node for f in facts.values() if f.reachable]
        print(render_status(facts, weights.presence(cl, reachable)))
        print()
        print("\n".join(serving.summary(cl).lines()))


@task(help={"strict": "Exit non-zero on warnings too, not only on failures.",
            "model": "Also check this model's launch: image on every node with one ID, weights staged."})
@reports_errors
def doctor(c: Context, strict: bool = False, model: str | None = None) -> None:
    """Preflight: SSH, host keys, engine, fabric, disk, launcher repo, ports, stale containers; each fix."""
    s = settings(c)
    spec = s.model(model) if model else None
    with Cluster(s) as cl:
        facts = facts_mod.gather(cl)
        checks = doctor_mod.node_checks(cl, facts)
        if facts[cl.head.name].reachable:
            checks += doctor_mod.head_checks(cl)
        checks += doctor_mod.launch_checks(cl, spec, facts)
        print(doctor_mod.render_checks(checks))
        bad = doctor_mod.failed(checks)
        warned = [ch for ch in checks if ch.status == doctor_mod.WARN]
        if bad or (strict and warned):
            raise Exit(f"doctor: {len(bad)} check(s) failed, {len(warned)} warning(s)", code=1)
        print(f"doctor: all {len(checks)} checks passed" + (f" ({len(warned)} warnings)" if warned else ""))


DRY_RUN_HELP = "Print, per host, the commands that would change something; change nothing."


@task(
    help={
        "model": "Model to stage (a name under `models:`, e.g. qwen, nemotron).",
        "hop": "control-head (1 GbE), head-workers (fabric) or all (default).",
        "dry-run": DRY_RUN_HELP,
    }
)
@reports_errors
def stage(c: Context, model: str | None = None, hop: str = "all", dry_run: bool = False) -> None:
    """Copy a model's weights control -> head -> workers (resumable), check disk first, verify."""
    s = settings(c)
    spec = s.model(model)
    with Cluster(s, dry_run=dry_run) as cl:
        weights.stage(cl, spec, hop)


@task(help={"model": "Model whose copies to compare with the source."})
@reports_errors
def verify_weights(c: Context, model: str | None = None) -> None:
    """Compare every node's copy of a model with the source: file list, sizes, small-file checksums."""
    s = settings(c)
    spec = s.model(model)
    with Cluster(s) as cl:
        bad = weights.verify_only(cl, spec)
    if bad:
        raise Exit(weights.describe_bad(spec, bad), code=1)
    print(f"{spec.name}: every node matches the source")


@task(
    help={
        "model": "Model whose weights to delete.",
        "node": "Node name(s), comma-separated, or all (default).",
        "force": "Delete even if this model is being served.",
        "dry-run": "List what would be removed and how much it frees; remove nothing.",
    }
)
@reports_errors
def clear_weights(c: Context, model: str | None = None, node: str = "all", force: bool = False,
                  dry_run: bool = False) -> None:
    """Free a model's weights on the nodes (refuses the model being served unless --force)."""
    s = settings(c)
    spec = s.model(model)
    nodes = s.select_nodes(node)
    with Cluster(s, dry_run=dry_run) as cl:
        freed = weights.clear(cl, spec, nodes, served=serving.current_model(cl), force=force)
    total = sum(freed.values()) / weights.GIB
    print(f"{'would free' if dry_run else 'freed'} {total:.2f} GiB")


# -- launch, stop, logs (issue 6) -------------------------------------------------------------
@task(
    help={
        "model": "Model to serve (a name under `models:`, e.g. qwen, nemotron); whatever serves is stopped first.",
        "timeout": "Minutes, from the launcher's start, to wait for /health = 200 (default: 1.5 x the upper "
                   "bound of the model's load_minutes).",
        "no-wait": "Return once the launcher has started the containers; do not wait for /health.",
        "dry-run": DRY_RUN_HELP,
    }
)
@reports_errors
def launch(c: Context, model: str | None = None, timeout: str | None = None, no_wait: bool = False,
           dry_run: bool = False) -> None:
    """Serve a model: stop what serves, check image and weights, start the launcher, wait for /health."""
    s = settings(c)
    spec = s.model(model)
    try:
        minutes = float(timeout) if timeout is not None else launch_mod.default_timeout_min(spec)
    except ValueError:
        raise Exit(f"--timeout must be a number of minutes, got {timeout!r}", code=2) from None
    if minutes <= 0:
        raise Exit(f"--timeout must be positive, got {timeout!r}", code=2)
    with Cluster(s, dry_run=dry_run) as cl:
        launch_mod.launch(cl, spec, timeout_s=minutes * 60, wait=not no_wait)


@task(help={"node": "Node name(s), comma-separated, or all (default; also removes the launch record).",
            "dry-run": DRY_RUN_HELP})
@reports_errors
def stop(c: Context, node: str = "all", dry_run: bool = False) -> None:
    """Stop the serving containers (docker rm -f) on every node, or on --node."""
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        launch_mod.stop(cl, s.select_nodes(node))


@task(help={"node": "Node name(s), comma-separated, or all (default: the head, where the API server logs).",
            "follow": "Keep streaming new lines (Ctrl-C ends); waits for a container that is not there yet.",
            "lines": "How many of the last lines to show (default 100)."})
@reports_errors
def logs(c: Context, node: str = "head", follow: bool = False, lines: int = 100) -> None:
    """Show the serving container's log on a node (the launcher's containers are --rm: gone with them)."""
    s = settings(c)
    nodes = s.select_nodes(s.head.name if node == "head" else node)
    with Cluster(s) as cl:
        if follow:
            containers.follow_logs(cl, nodes, lines)
        else:
            missing = containers.show_logs(cl, nodes, lines)
            if missing == len(nodes):
                raise Exit(f"no {s.container_name} container on {', '.join(n.name for n in nodes)}", code=1)


ns = Collection(status, doctor, stage, verify_weights, clear_weights, launch, stop, logs)
ns.configure(defaults())
