"""Rebuilding images on the head with the launcher: the pinned wheels checked first, bases built
(or present) before the images on them, each image verified right after its build, and never
the launcher's copy step (nothing leaves the head unverified)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ImageSpec, Settings
from ..remote import Cluster, prefixed_lines
from ..shell import LineSplitter, remote_path
from . import space
from .errors import ImagesError
from .select import ancestors, held, image_states, lineage_order, short
from .verify import Verdict, probe_command, probes, save_records, verify_on

COPY_FLAGS = ("-c", "--copy-to", "--copy-parallel")


def wheel_problems(pinned: Iterable[str], found: dict[str, int]) -> list[str]:
    """Missing, empty or stale pinned wheels, given wheels/ as file name -> size."""

    def dist(filename: str) -> str:
        return filename.split("-", 1)[0].lower().replace("-", "_")

    problems = []
    for wheel in pinned:
        others = sorted(f for f in found if dist(f) == dist(wheel) and f != wheel)
        if wheel not in found:
            if others:
                problems.append(f"stale: wheels/ has {', '.join(others)} but the config pins {wheel}")
            else:
                problems.append(f"missing: {wheel}")
        elif found[wheel] == 0:
            problems.append(f"empty: {wheel} is 0 bytes (an interrupted download?)")
        elif others:
            problems.append(
                f"stale: wheels/ also holds {', '.join(others)} beside the pinned {wheel}; "
                "the build may install either: move the old one out"
            )
    return problems


def check_wheels(cluster: Cluster) -> None:
    s, head = cluster.settings, cluster.head
    repo = remote_path(s.launcher_repo)
    cmd = (
        f"cd {repo} 2>/dev/null || {{ echo NOREPO; exit 0; }}; "
        "[ -d wheels ] || { echo NOWHEELS; exit 0; }; find wheels -maxdepth 1 -name '*.whl' -printf '%f\\t%s\\n'"
    )
    r = cluster.run(head, cmd, timeout=60)
    if not r.ok:
        raise ImagesError(f"cannot list the launcher's wheels on {head.name}: {r.why()}")
    if r.stdout.strip() == "NOREPO":
        raise ImagesError(
            f"{head.name} has no launcher repo at {s.launcher_repo}: "
            f"git clone https://github.com/eugr/spark-vllm-docker there (or set cluster.launcher_repo)"
        )
    if not s.wheels:
        return
    found = {}
    if r.stdout.strip() != "NOWHEELS":
        for line in r.stdout.splitlines():
            name, _, size = line.rpartition("\t")
            if name:
                found[name] = int(size)
    problems = wheel_problems(s.wheels, found)
    if problems:
        raise ImagesError(
            f"the pinned wheels are not in {s.launcher_repo}/wheels on {head.name}; nothing was built:\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\ndrop the pinned wheels there (the config's `wheels:` list), or update `wheels:` "
            "when bumping vLLM"
        )


def check_build_command(spec: ImageSpec) -> None:
    """The launcher's copy step ships before anything is verified: never let a build run it."""
    try:
        words = shlex.split(spec.build)
    except ValueError as e:
        raise ImagesError(f"images.{spec.name}.build = {spec.build!r} is not a valid command: {e}") from e
    copying = [w for w in words if w in COPY_FLAGS or w.startswith("--copy-to=")]
    if copying:
        raise ImagesError(
            f"images.{spec.name}.build = {spec.build!r} asks the launcher to copy ({' '.join(copying)}) "
            "before the image is verified: drop that flag; `inv distribute` copies verified images"
        )


@dataclass
class BuildPlan:
    order: list[ImageSpec]
    notes: list[str]


def plan_rebuild(cluster: Cluster, specs: list[ImageSpec]) -> BuildPlan:
    """Order the builds and make sure every base is there (built earlier in this run, or on the
    head) before anything is built."""
    s = cluster.settings
    order = lineage_order(s, [spec.name for spec in specs])
    for spec in order:
        check_build_command(spec)
    bases = sorted({spec.base for spec in order if spec.base and spec.base not in {o.name for o in order}})
    states, failed = image_states(cluster, [cluster.head], [s.image(b).tag for b in bases])
    if cluster.head.name in failed:
        raise ImagesError(f"cannot inspect images on {cluster.head.name}: {failed[cluster.head.name].why()}")
    on_head = states.get(cluster.head.name, {})
    built: set[str] = set()
    notes: list[str] = []
    for spec in order:
        if spec.base and spec.base not in built:
            base = s.image(spec.base)
            present = on_head.get(base.tag)
            if present is None:
                raise ImagesError(
                    f"{spec.name} builds FROM {base.tag}, which is not on {cluster.head.name} "
                    f"({'not live, so ' if not base.live else ''}not rebuilt by this run); nothing was built. "
                    f"Build it first: `inv rebuild --image {base.name}` (or restore it: "
                    f"`inv restore --image {base.name} --node {cluster.head.name}`)"
                )
            stale = [o.name for o in order if o.name in ancestors(s, base)]
            note = f"{spec.name} builds on the {base.tag} present on {cluster.head.name} (ID {short(present.id)})"
            if stale:
                note += (f", which this run does not rebuild although its base {', '.join(stale)} is rebuilt: "
                         f"`inv rebuild --image {base.name}` first to rebase it")
            notes.append(note)
        built.add(spec.name)
    return BuildPlan(order, notes)


def build_echo(cluster: Cluster, node: str, image: str) -> LineSplitter:
    """Build output to the terminal as `[head] line` and, line by line, into the ops log."""
    return prefixed_lines(node, cluster.out, also=lambda line: cluster.ops_log.event(f"{node} build {image} | {line}"))


def build_command(settings: Settings, spec: ImageSpec) -> str:
    return f"cd {remote_path(settings.launcher_repo)} && {{ {spec.build}; }} 2>&1"


def rebuild(cluster: Cluster, specs: list[ImageSpec]) -> list[Verdict]:
    """Check wheels and bases, then build and verify each image in lineage order; stop at the
    first build or verification failure. Nothing is copied anywhere."""
    head = cluster.head
    check_wheels(cluster)
    plan = plan_rebuild(cluster, specs)
    for note in plan.notes:
        cluster.say(f"note: {note}")
    cluster.say("build order: " + " -> ".join(spec.name for spec in plan.order))
    verdicts: list[Verdict] = []
    for spec in plan.order:
        before = held(cluster, head, spec.tag)
        if before is not None:  # the last build's size is the best estimate of this one's
            short_of = space.check(cluster, [head], before.size, what=f"rebuilding {spec.tag}")
            if short_of:
                raise ImagesError(f"{head.name}: {short_of[head.name]}; nothing was built")
        cluster.say(f"building {spec.tag} on {head.name}: {spec.build}")
        echo = None if cluster.dry_run else build_echo(cluster, head.name, spec.name)
        r = cluster.run(head, build_command(cluster.settings, spec), mutating=True, sink=echo, shell_leads=False)
        if cluster.dry_run:
            cluster.say(f"[dry-run] {head.name}: then verify {spec.tag}: "
                        + "; ".join(probe_command(cluster.settings.docker, spec.tag, code) for _, code in probes(spec)))
            continue
        if not r.ok:
            raise ImagesError(
                f"building {spec.tag} on {head.name} failed ({r.why()}); nothing was distributed. "
                f"command: {r.command}. The full output is above and in the operations log"
            )
        after = held(cluster, head, spec.tag)
        if after is None:
            raise ImagesError(
                f"the build of {spec.name} finished but {head.name} has no {spec.tag}: does "
                f"images.{spec.name}.build ({spec.build!r}) tag it as {spec.tag}?"
            )
        changed = "unchanged" if before and before.id == after.id else f"was {short(before.id)}" if before else "new"
        cluster.say(f"built {spec.tag}: ID {short(after.id)} ({changed}); verifying")
        verdict = verify_on(cluster, spec, head, after.id)
        cluster.say(verdict.report())
        save_records(cluster, [verdict])
        verdicts.append(verdict)
        if not verdict.ok:
            back = (f". The previous build is still on {head.name} (ID {short(before.id)}, untagged): "
                    f"`docker tag {before.id} {spec.tag}` there to go back to it" if before and before.id != after.id else "")
            raise ImagesError(
                f"{spec.tag} (ID {short(after.id)}) failed verification on {head.name}: {verdict.failures()}. "
                f"Nothing was distributed{back}"
            )
    return verdicts
