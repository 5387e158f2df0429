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

from bench.errors import BenchError
from cluster import checks, configfiles, containers, memcheck, nodeview, serving, sweeptelemetry, weights
from cluster import doctor as doctor_mod
from cluster import facts as facts_mod
from cluster.config import Settings, defaults, from_invoke
from cluster.errors import ClusterError
from cluster.images import backup as image_backup
from cluster.images import build as image_build
from cluster.images import distribute as image_distribute
from cluster.images import prune as image_prune
from cluster.images import verify as image_verify
from cluster.images.select import select as select_images
from cluster.launch import current as launch_current
from cluster.launch import launcher
from cluster.launch import plan as launch_plan
from cluster.launch.preflight import preflight
from cluster.remote import Cluster
from cluster.status import render_status

# Before Invoke reads invoke.yaml and `-f FILE`: a YAML error or a missing file is a clean exit 2.
configfiles.install()


# What a rerun does after Ctrl-C, per task (the remote processes were stopped before this is said).
RERUN = {
    "distribute": "no worker holds a half-loaded image (a cut `docker load` tags nothing); "
                  "`inv distribute` again skips the workers that already hold the image and sends the rest",
    "stage": "copied files stay, partial ones are kept by rsync --partial; `inv stage` again resumes "
             "and copies only what is missing or differs",
    "backup": "the backup folder keeps only complete tars (a cut one is removed); `inv backup` again saves it",
    "restore": "a cut `docker load` tags nothing, the node keeps what it had; `inv restore` again sends the whole tar",
    "rebuild": "the build was stopped, images already built and verified stay; `inv rebuild` again builds the rest",
    "launch": "only the wait was stopped; the model may still be starting: watch it with `inv status` and "
              "`inv logs --follow`, stop it with `inv stop`; `inv launch` again restarts it",
    "logs": "nothing was changed",
}


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the libraries' typed errors (two roots) into a clean message and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClusterError as e:
            raise Exit(e.message(), code=e.exit_code) from e
        except BenchError as e:
            raise Exit(str(e), code=e.exit_code) from e
        except KeyboardInterrupt as e:
            after = RERUN.get(fn.__name__, "its processes on the nodes were stopped; run it again to finish")
            raise Exit(f"interrupted (Ctrl-C): {fn.__name__} stopped; {after}", code=130) from e

    return wrapper


def settings(c: Context) -> Settings:
    return from_invoke(c.config)


def cluster(c: Context, dry_run: bool = False) -> Cluster:
    return Cluster(settings(c), dry_run=dry_run)


@task
@reports_errors
def status(c: Context) -> None:
    """Show every node: reachable over management and fabric, containers, images, free disk.

    Then each node's readings now: GPU power W, SM clock MHz, temperature, utilisation %,
    throttle reasons, MemAvailable and swap used GiB, 1-minute load ("-" where not readable,
    "cannot read: WHY" when the node's sampler failed) and what the head serves.
    Exit code 0 when every node answered, 1 when a node is unreachable (named on the last
    line); readings never change the exit code."""
    with cluster(c) as cl:
        launch_plan.follow_launcher_name(cl)
        facts = facts_mod.gather(cl)
        reachable = [f.node for f in facts.values() if f.reachable]
        print(render_status(facts, weights.presence(cl, reachable)))
        print()
        print(nodeview.render_readings(cl, reachable))
        print()
        print("\n".join(serving.summary(cl).lines()))
    down = [name for name, f in facts.items() if not f.reachable]
    if down:
        raise Exit(f"status: {len(down)} of {len(facts)} node(s) unreachable: {', '.join(down)}", code=1)


@task(help={"strict": "Exit non-zero on warnings too, not only on failures.",
            "model": "Also check this model's launch: image on every node with one ID, weights staged."})
@reports_errors
def doctor(c: Context, strict: bool = False, model: str | None = None) -> None:
    """Preflight: SSH, host keys, engine, fabric, disk, the launcher (generation, .env, recipes), ports; each fix."""
    s = settings(c)
    spec = s.model(model) if model else None
    with Cluster(s) as cl:
        facts = facts_mod.gather(cl)
        found = doctor_mod.node_checks(cl, facts)
        if facts[cl.head.name].reachable:
            found += doctor_mod.head_checks(cl)
        found += preflight(cl, spec, facts)
        if spec:
            found += memcheck.memory_checks(cl, [n for n in cl.nodes if facts[n.name].reachable])
        print(checks.render_checks(found))
        bad, warned = checks.failed(found), checks.warned(found)
        if bad or (strict and warned):
            raise Exit(f"doctor: {len(bad)} check(s) failed, {len(warned)} warning(s)", code=1)
        print(f"doctor: all {len(found)} checks passed" + (f" ({len(warned)} warnings)" if warned else ""))


@task(help={"seconds": "End after this many seconds (default: run until Ctrl-C).",
            "refresh": "Seconds between redraws (default 1)."})
@reports_errors
def watch(c: Context, seconds: float | None = None, refresh: float = 1.0) -> None:
    """Live view: every node's power, clock, temperature, memory, load; the server's gauges; a sweep's progress."""
    from cluster.watch import watch as run_watch

    with cluster(c) as cl:
        run_watch(cl, refresh_s=float(refresh), seconds=float(seconds) if seconds is not None else None)


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
    """Copy weights control -> head -> workers, both hops at once; resumable, disk checked, verified.

    The head forwards each file to the workers as soon as it is complete while the next crosses
    the management link; a cut shard resumes where it stopped; a worker that is down is named at
    the end, after the others finished and verified."""
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


@task(
    help={
        "model": "Model to benchmark (a name under `models:`), or demo for the embedded simulated endpoint.",
        "concurrency": "Comma list of concurrency points (default: bench.concurrency from config).",
        "input-len": "Prompt tokens per request (default: bench.input_len).",
        "output-len": "Output tokens per request, forced with ignore_eos (default: bench.output_len).",
        "requests": "Measured requests per point (default: 4 x concurrency, at least 8).",
        "api": "chat or completions (default: bench.api).",
        "rerun": "Measure every point again instead of skipping points already in results.json.",
    }
)
@reports_errors
def bench(c: Context, model: str | None = None, concurrency: str | None = None, input_len: int | None = None,
          output_len: int | None = None, requests: int | None = None, api: str | None = None,
          rerun: bool = False) -> None:
    """Run a concurrency sweep against the head's vLLM API; results in results/<model>/."""
    from bench import cli as bench_cli
    from bench.sweep import SweepConfig

    s = settings(c)
    b = s.bench
    if model == "demo":
        def sweep_config() -> SweepConfig:
            n = bench_cli.int_flag("requests", requests) or b.requests_per_point or None
            return bench_cli.demo_config(s.results_dir, concurrency, n, rerun)
    else:
        s.require_cluster()
        spec = s.model(model)

        def sweep_config() -> SweepConfig:
            return SweepConfig(
                base_url=s.api_url, model=spec.served_name, label=spec.name,
                concurrency=bench_cli.concurrency_list(concurrency or ",".join(map(str, b.concurrency))),
                input_len=bench_cli.int_flag("input-len", input_len) or b.input_len,
                output_len=bench_cli.int_flag("output-len", output_len) or b.output_len,
                requests_per_point=bench_cli.int_flag("requests", requests) or b.requests_per_point or None,
                api=api or b.api, results_dir=s.results_dir, rerun=rerun,
            )

    if model == "demo":
        code = bench_cli.run(sweep_config, demo=True)
    else:
        code = _bench_with_telemetry(s, sweep_config, spec)
    if code:
        raise Exit(code=code)


def _bench_with_telemetry(s: Settings, make: Callable[[], Any], spec: Any) -> int:
    """The sweep with every node's sampler running (cluster/sweeptelemetry.py) and bench's
    TelemetryHooks fed from it; the stall watchdog saves container log tails under results/.
    The provenance card's cluster facts (cluster/provenance.py) are read before the first point
    and again after the last."""
    from bench import cli as bench_cli
    from bench.hooks import TelemetryHooks
    from bench.telemetry import FlagRules
    from cluster import provenance as cluster_provenance

    with Cluster(s) as cl, sweeptelemetry.recording(cl) as tel:
        def sweep_config() -> Any:
            cfg = make()
            cfg.hooks = TelemetryHooks(tel.data, tel.mark, tel.save_logs, FlagRules(**tel.rules))
            cfg.hooks.regather = lambda: cluster_provenance.gather(cl, spec)
            cfg.cluster_facts = cluster_provenance.gather(cl, spec)
            cfg.stall_s = tel.stall_s
            return cfg

        return bench_cli.run(sweep_config, demo=False)


@task(
    help={
        "model": "Model to report on (a name under `models:`), or demo for the embedded simulated endpoint.",
        "load-only": "Measure nothing: re-render table.md and the figures from results/<model>/results.json.",
        "compare": "Instead, compare these result folders (comma list, e.g. qwen,nemotron) into results/compare/.",
    }
)
@reports_errors
def report(c: Context, model: str | None = None, load_only: bool = False, compare: str | None = None) -> None:
    """Run the bench notebook through papermill: sweep (or load), write table.md and figures."""
    from papermill.exceptions import PapermillExecutionError

    from bench import report as bench_report

    s = settings(c)
    runtime = c.config._runtime_path  # noqa: SLF001 - `inv -f FILE`, handed on so the notebook reads the same config
    params: dict[str, object] = {"results_dir": str(s.results_dir), "config_file": str(runtime) if runtime else None}
    if compare:
        name, folder = "compare", s.results_dir / "compare"
        params.update(models=compare, out_dir=str(folder))
    else:
        if model != "demo":
            s.model(model)
            if not load_only:
                s.require_cluster()
        name, folder = "bench", s.results_dir / str(model)
        params.update(model=model, run=not load_only)
    output = folder / f"{name}.ipynb"
    try:
        bench_report.execute(bench_report.NOTEBOOKS_DIR / f"{name}.ipynb", output, params)
    except PapermillExecutionError as e:
        raise Exit(f"report: {e.ename}: {e.evalue} (the executed notebook, with the traceback: {output})", code=1) from e
    print(f"report: {folder}/{bench_report.TABLE_FILE}, figures (PNG, SVG) and the executed notebook {output}")


# -- launch, stop, logs (issue 6) -------------------------------------------------------------
@task(
    help={
        "model": "Model to serve (a name under `models:`, e.g. qwen, nemotron); whatever serves is stopped first.",
        "timeout": "Minutes, from the launcher's start, to wait for /health = 200 (default: 1.5 x the upper "
                   "bound of the model's load_minutes).",
        "no-wait": "Return once the launcher has started the containers; do not wait for /health.",
        "drop-page-cache": "sync and drop the page cache on every node before the memory preflight "
                           "(default: memory.drop_page_cache).",
        "dry-run": DRY_RUN_HELP,
    }
)
@reports_errors
def launch(c: Context, model: str | None = None, timeout: str | None = None, no_wait: bool = False,
           drop_page_cache: bool = False, dry_run: bool = False) -> None:
    """Serve a model: stop what serves, check image, weights, memory; launch; wait for a first token."""
    s = settings(c)
    spec = s.model(model)
    try:
        minutes = float(timeout) if timeout is not None else launcher.default_timeout_min(spec)
    except ValueError:
        raise Exit(f"--timeout must be a number of minutes, got {timeout!r}", code=2) from None
    if minutes <= 0:
        raise Exit(f"--timeout must be positive, got {timeout!r}", code=2)
    with Cluster(s, dry_run=dry_run) as cl:
        launcher.launch(cl, spec, timeout_s=minutes * 60, wait=not no_wait, drop_cache=drop_page_cache)


@task(help={"node": "Node name(s), comma-separated, or all (default; also removes the launch record).",
            "dry-run": DRY_RUN_HELP})
@reports_errors
def stop(c: Context, node: str = "all", dry_run: bool = False) -> None:
    """Stop the serving containers (docker rm -f) on every node, or on --node."""
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        launch_plan.follow_launcher_name(cl)
        launch_current.stop(cl, s.select_nodes(node))


@task(help={"node": "Node name(s), comma-separated, or all (default: the head, where the API server logs).",
            "follow": "Keep streaming new lines (Ctrl-C ends); waits for a container that is not there yet.",
            "lines": "How many of the last lines to show (default 100)."})
@reports_errors
def logs(c: Context, node: str = "head", follow: bool = False, lines: int = 100) -> None:
    """Show the serving container's log on a node (the launcher's containers are --rm: gone with them)."""
    s = settings(c)
    nodes = s.select_nodes(s.head.name if node == "head" else node)
    with Cluster(s) as cl:
        name = launch_plan.follow_launcher_name(cl)
        if follow:
            containers.follow_logs(cl, nodes, lines)
        else:
            missing = containers.show_logs(cl, nodes, lines)
            if missing == len(nodes):
                raise Exit(f"no {name} container on {', '.join(n.name for n in nodes)}", code=1)


# -- container images: rebuild, verify, distribute, backup, restore, prune -------------------
IMAGE_HELP = ("Image under `images:` (vllm-node, vllm-node-mimo, ...); default: every live image, "
              "in lineage order.")


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
def rebuild(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Build images on the head with the launcher's generation's flags (pinned wheels kept), verify each.

    Without --image: every live image, in lineage order (vllm-node, then vllm-node-mimo on the
    vllm-node-tf5 present on the head). In `inv rebuild distribute launch --model qwen` only launch
    receives --model: rebuild and distribute act on every live image, so the line fits both models.
    """
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        image_build.rebuild(cl, select_images(s, image))


@task(help={"image": IMAGE_HELP, "node": "Node name(s), comma-separated, or all; default: the head."})
@reports_errors
def verify(c: Context, image: str | None = None, node: str | None = None) -> None:
    """Check torch, CUDA, vLLM (and transformers for mimo) inside images; record the result by image ID."""
    s = settings(c)
    nodes = s.select_nodes(node) if node else (s.head,)
    with Cluster(s) as cl:
        verdicts = image_verify.verify(cl, select_images(s, image), nodes)
    for v in verdicts:
        print(v.report())
    bad = [v for v in verdicts if not v.ok]
    if bad:
        raise Exit("verify failed: " + "; ".join(f"{v.tag} on {v.node}: {v.failures()}" for v in bad), code=1)
    print(f"verify: {len(verdicts)} image(s) match the pinned versions")


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
def distribute(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Stream verified images head -> workers over the fabric (one save, parallel loads); skip current ones.

    Refuses an image ID that failed verification (verifies it first if never checked). Without
    --image: every live image, so `inv rebuild distribute launch --model X` fits either model.
    """
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        failures = image_distribute.distribute(cl, select_images(s, image))
    if failures:
        raise Exit(image_distribute.describe_failures(failures), code=1)


@task(help={"image": IMAGE_HELP, "dry-run": DRY_RUN_HELP})
@reports_errors
def backup(c: Context, image: str | None = None, dry_run: bool = False) -> None:
    """Save images from the head into the control's backup folder (NAME.tar + NAME.json with the ID)."""
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        image_backup.backup(cl, select_images(s, image))


@task(
    help={
        "image": "Image whose backup to push (a name under `images:`).",
        "node": "Node name(s) that lost it, comma-separated.",
        "force": "Replace the node's image even if it holds another ID under that tag.",
        "dry-run": DRY_RUN_HELP,
    }
)
@reports_errors
def restore(c: Context, image: str | None = None, node: str | None = None, force: bool = False,
            dry_run: bool = False) -> None:
    """Stream a backup tar from the control into `docker load` on a node; check the image ID after."""
    if not image or not node:
        raise Exit("restore needs --image NAME and --node NAME (see `inv --help restore`)", code=2)
    s = settings(c)
    with Cluster(s, dry_run=dry_run) as cl:
        image_backup.restore(cl, s.image(image), s.select_nodes(node), force=force)


@task(
    help={
        "node": "Node name(s), comma-separated, or all (default).",
        "older-than": "Also remove tagged images created before this age (24h, 7d); default: dangling only.",
        "dry-run": "List what would be removed and kept, and how much it frees; remove nothing.",
    }
)
@reports_errors
def prune(c: Context, node: str = "all", older_than: str | None = None, dry_run: bool = False) -> None:
    """Free image space safely: never `prune -a`; keep live images, their bases, anything a container uses."""
    s = settings(c)
    bound = image_prune.parse_age(older_than) if older_than else None
    with Cluster(s, dry_run=dry_run) as cl:
        report = image_prune.prune(cl, s.select_nodes(node), bound)
    if report.unreachable:
        raise Exit("prune could not reach: " + "; ".join(f"{n}: {why}" for n, why in report.unreachable.items()),
                   code=1)


ns = Collection(status, watch, doctor, stage, verify_weights, clear_weights,
                rebuild, verify, distribute, backup, restore, prune,
                launch, stop, logs, bench, report)
ns.configure(defaults())
