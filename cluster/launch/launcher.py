"""`inv launch`: refuse before anything changes, stop what serves (single tenancy), write the
launch record, then start the model through the launcher (eugr/spark-vllm-docker) and hand over
to the watcher. docs/ tells the long story of the launcher's generations."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .. import memcheck, serving
from ..checks import failed
from ..config import ModelSpec, Settings
from ..containers import remove, survey
from ..facts import gather
from ..remote import Cluster
from ..shell import q, remote_path, utc_stamp
from .current import identify, require_survey
from .errors import HealthTimeout, LaunchError, LaunchInterrupted, LaunchRefused
from .plan import LaunchPlan
from .plan import plan as plan_launch
from .preflight import image_checks, wait_ports_free, weights_checks
from .watch import Outcome, Watch


def default_timeout_min(spec: ModelSpec) -> float:
    return round(spec.load_minutes[1] * 1.5, 1)


def launcher_command(settings: Settings, spec: ModelSpec, plan: LaunchPlan | None = None) -> str:
    """The model's relaunch wrapper when configured (the seed's one-shot, with the site's own
    flags; the plan checked that its recipe runs the checked image), else `run-recipe.sh RECIPE
    -d -t IMAGE` with the config's nodes, names and ports. Either way the flags that keep the
    recipe's backend on this launcher are added. stdin is /dev/null (`Build now? [y/N]` must
    never wait) and Python unbuffered, so the launcher's own lines come in order with its child
    scripts' (buffered, they land after them and the real error line is lost in the tail)."""
    repo = remote_path(settings.launcher_repo)
    flags = "".join(f" {q(f)}" for f in (plan.flags if plan else ()))
    if spec.relaunch:
        rel = spec.relaunch
        run = (remote_path(rel) if rel.startswith(("/", "~")) else f"./{q(rel)}") + flags
    else:
        assert spec.recipe is not None  # the config requires recipe or relaunch
        nodes = ",".join(n.fabric for n in settings.nodes)
        image = plan.image if plan else settings.image(spec.image).tag
        run = (f"./run-recipe.sh {q(spec.recipe)} -d -t {q(image)} -n {q(nodes)} "
               f"--name {q(settings.container_name)} --master-port {spec.master_port} "
               f"--port {settings.api_port}{flags}")
    return f"cd {repo} && PYTHONUNBUFFERED=1 {run} < /dev/null"


def launch(cluster: Cluster, spec: ModelSpec, *, timeout_s: float, wait: bool = True,
           drop_cache: bool = False) -> Outcome:
    """Refuse, stop what serves, record, start through the launcher, and (with `wait`) watch.
    The memory preflight runs once what served is gone (its memory is then free), after the
    optional page-cache drop (`drop_cache` or `memory.drop_page_cache`)."""
    s, head = cluster.settings, cluster.head
    facts = gather(cluster)
    down = {n: f.error for n, f in facts.items() if not f.reachable}
    if down:
        raise LaunchRefused("cannot launch, node(s) unreachable:\n" + "\n".join(f"  {n}: {e}" for n, e in down.items()))
    refused = failed(image_checks(s, spec, facts) + weights_checks(cluster, spec, cluster.nodes))
    if refused:
        lines = [f"cannot launch {spec.name}; nothing was changed:"]
        for f in refused:
            lines.append(f"  {f.node}: {f.detail}\n    fix: {f.fix}")
        raise LaunchRefused("\n".join(lines))
    plan = plan_launch(cluster, spec)
    if plan.container != s.container_name:
        cluster.say(f"the launcher's .env names its containers {plan.container} (not {s.container_name}): following it")
        cluster.settings = s = dataclasses.replace(s, container_name=plan.container)
    cluster.say(f"launcher: {plan.info.describe()}; {spec.name} on {plan.backend}"
                + (f" ({' '.join(plan.flags)})" if plan.flags else ""))
    sv = survey(cluster)
    require_survey(sv, "listing containers")
    if sv.all:
        cur = identify(cluster, sv)
        cluster.say(f"single tenancy: stopping {cur.describe()}")
        remove(cluster, cur.containers)
    if memcheck.should_drop(s, drop_cache):
        memcheck.drop_page_cache(cluster)
    short = failed(memcheck.memory_checks(cluster))
    if short and not cluster.dry_run:
        raise LaunchRefused(f"cannot launch {spec.name}: not enough memory; nothing was started:\n"
                            + "\n".join(f"  {f.node}: {f.detail}\n    fix: {f.fix}" for f in short))
    ports = {s.api_port: "API port", spec.master_port: "master port"}
    if not cluster.dry_run:
        wait_ports_free(cluster, ports)
    image = s.image(spec.image)
    record: dict[str, Any] = {
        "model": spec.name, "hf_id": spec.hf_id, "served_name": spec.served_name, "image": image.tag,
        "image_id": facts[head.name].image_id(image.tag), "master_port": spec.master_port,
        "container": s.container_name, "backend": plan.backend, "launcher": plan.info.generation,
        "started_at": utc_stamp(),
        "started_epoch": time.time(),
    }
    serving.write_record(cluster, record)
    command = launcher_command(s, spec, plan)
    if cluster.dry_run:
        cluster.run(head, command, mutating=True)
        cluster.say(f"[dry-run] then wait for http://{head.mgmt}:{s.api_port}/health = 200 "
                    f"(up to {timeout_s / 60:g} min), watching every node's {s.container_name}")
        return Outcome(spec.name, waited=False)
    cluster.ops_log.event(f"launch {spec.name}: {command}")
    try:
        return Watch(cluster, spec, command, timeout_s, record).run(wait)
    except (HealthTimeout, LaunchInterrupted):
        raise  # it may still be loading: the record says what
    except LaunchError:
        # nothing serves: a record left behind would make `inv status` say "not ready yet"
        serving.remove_record(cluster)
        raise
