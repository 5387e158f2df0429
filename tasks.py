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
from cluster import imagecopy, imageprune, images, serving, weights
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


# -- container images: rebuild, verify, distribute, backup, restore, prune -------------------
IMAGE_HELP = ("Image under `images:` (vllm-node, vllm-node-mimo, ...); default: every live image, "
              "in lineage order.")


def images_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Image failures are user-facing: a message naming node, image and fix, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except images.ImagesError as e:
            raise Exit(str(e), code=1) from e

    return wrapper


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
@images_errors
def rebuild(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Build images on the head with the launcher (wheels checked, never its copy step), verify each.

    Without --image: every live image, in lineage order (vllm-node, then vllm-node-mimo on the
    vllm-node-tf5 present on the head). In `inv rebuild distribute launch --model qwen` only launch
    receives --model: rebuild and distribute act on every live image, so the line fits both models.
    """
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        images.rebuild(cl, images.select(s, image))


@task(help={"image": IMAGE_HELP, "node": "Node name(s), comma-separated, or all; default: the head."})
@reports_errors
@images_errors
def verify(c: Context, image: str | None = None, node: str | None = None) -> None:
    """Check torch, CUDA, vLLM (and transformers for mimo) inside images; record the result by image ID."""
    s = settings(c)
    nodes = s.select_nodes(node) if node else (s.head,)
    with Cluster(s) as cl:
        verdicts = images.verify(cl, images.select(s, image), nodes)
    for v in verdicts:
        print(v.report())
    bad = [v for v in verdicts if not v.ok]
    if bad:
        raise Exit("verify failed: " + "; ".join(f"{v.tag} on {v.node}: {v.failures()}" for v in bad), code=1)
    print(f"verify: {len(verdicts)} image(s) match the pinned versions")


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
@images_errors
def distribute(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Stream verified images head -> workers over the fabric (one save, parallel loads); skip current ones.

    Refuses an image ID that failed verification (verifies it first if never checked). Without
    --image: every live image, so `inv rebuild distribute launch --model X` fits either model.
    """
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        failures = imagecopy.distribute(cl, images.select(s, image))
    if failures:
        raise Exit(imagecopy.describe_failures(failures), code=1)


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
@images_errors
def backup(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Save images from the head into the control's backup folder (NAME.tar + NAME.json with the ID)."""
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        imagecopy.backup(cl, images.select(s, image))


@task(
    help={
        "image": "Image whose backup to push (a name under `images:`).",
        "node": "Node name(s) that lost it, comma-separated.",
        "force": "Replace the node's image even if it holds another ID under that tag.",
        "dry-run": DRY_RUN_HELP,
    }
)
@reports_errors
@images_errors
def restore(c: Context, image: str | None = None, node: str | None = None, force: bool = False,
            dry_run: bool = False) -> None:
    """Stream a backup tar from the control into `docker load` on a node; check the image ID after."""
    if not image or not node:
        raise Exit("restore needs --image NAME and --node NAME (see `inv --help restore`)", code=2)
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        imagecopy.restore(cl, s.image(image), s.select_nodes(node), force=force)


@task(
    help={
        "node": "Node name(s), comma-separated, or all (default).",
        "older-than": "Also remove tagged images created before this age (24h, 7d); default: dangling only.",
        "dry-run": "List what would be removed and kept, and how much it frees; remove nothing.",
    }
)
@reports_errors
@images_errors
def prune(c: Context, node: str = "all", older_than: str | None = None, dry_run: bool = False) -> None:
    """Free image space safely: never `prune -a`; keep live images, their bases, anything a container uses."""
    s = settings(c)
    bound = imageprune.parse_age(older_than) if older_than else None
    with Cluster(s, dry_run=dry_run) as cl:
        report = imageprune.prune(cl, s.select_nodes(node), bound)
    if report.unreachable:
        raise Exit("prune could not reach: " + "; ".join(f"{n}: {why}" for n, why in report.unreachable.items()),
                   code=1)


ns = Collection(status, doctor, stage, verify_weights, clear_weights,
                rebuild, verify, distribute, backup, restore, prune)
ns.configure(defaults())
