"""Rebuilding images on the head with the launcher: the pinned wheels checked first, bases built
(or present) before the images on them, each image verified right after its build, and never
the launcher's copy step (nothing leaves the head unverified)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..config import ImageSpec, Settings
from ..errors import ClusterError
from ..launch.generation import LauncherInfo, detect
from ..remote import Cluster, prefixed_lines
from ..shell import LineSplitter, remote_path
from . import space, wheels
from .errors import ImagesError
from .select import ancestors, held, image_states, lineage_order, short
from .verify import Verdict, probe_command, probes, save_records, verify_on

COPY_FLAGS = ("-c", "--copy-to", "--copy-parallel")


def launcher_for_build(cluster: Cluster) -> LauncherInfo:
    """The head's launcher, refused when it is not the pinned commit (before anything runs)."""
    s, head = cluster.settings, cluster.head
    try:
        info = detect(cluster)
    except ClusterError as e:
        raise ImagesError(str(e)) from e
    cluster.say(f"launcher on {head.name}: {info.describe()}")
    pin = s.launcher.pin_commit
    if pin and not (info.commit or "").lower().startswith(pin):
        raise ImagesError(
            f"launcher.pin_commit is {pin} but {s.launcher_repo} on {head.name} is at "
            f"{info.commit or 'no commit (not a git checkout)'}; nothing was built. "
            f"`git -C {s.launcher_repo} checkout {pin}` there, or set launcher.pin_commit to the new commit "
            "after checking docs/launcher.md for what changed"
        )
    return info


def generation_args(settings: Settings, info: LauncherInfo) -> tuple[str, ...]:
    """The build-and-copy.sh flags configured for the detected generation."""
    args = settings.launcher.build_args
    if info.generation not in args:
        raise ImagesError(
            f"the launcher's generation is {info.generation} and launcher.build_args has no "
            f"`{info.generation}:` entry; nothing was built. Read its build-and-copy.sh "
            f"(`{settings.launcher_repo}/build-and-copy.sh --help`) and set launcher.build_args.{info.generation}"
        )
    return args[info.generation]


def expand(spec: ImageSpec, args: tuple[str, ...]) -> str:
    """The image's build line with the generation's flags where it says {launcher_args}."""
    if not args:
        return re.sub(r" ?\{launcher_args\}", "", spec.build)
    return spec.build.replace("{launcher_args}", shlex.join(args))


def check_flags(spec: ImageSpec, command: str, info: LauncherInfo) -> None:
    """Every flag given to build-and-copy.sh must be one its parser accepts: the seed era's
    rejects --use-wheels ("Unknown parameter passed"), so refuse before it runs."""
    words = shlex.split(command)
    for i, w in enumerate(words):
        if w.endswith("build-and-copy.sh") and info.build_flags:
            unknown = [a for a in words[i + 1:] if a.startswith("-") and a.split("=", 1)[0] not in info.build_flags]
            if unknown:
                raise ImagesError(
                    f"images.{spec.name}.build passes {' '.join(unknown)} to build-and-copy.sh, which this launcher "
                    f"({info.generation}, {(info.commit or 'unknown commit')[:12]}) does not accept: it would stop "
                    f"with \"Unknown parameter passed: {unknown[0]}\"; nothing was built. Drop it (per-generation "
                    f"flags go in launcher.build_args.{info.generation})"
                )


LAUNCHER_ERROR = re.compile(r"^(Unknown parameter passed: .*|Error\b.*|ERROR\b.*|error: .*|"
                            r"stand-in build-and-copy\.sh: .*|.*Error response from daemon.*)$")


def launcher_error_line(output: str) -> str | None:
    """The launcher's own error line in a failed build's output (before any usage text)."""
    for line in output.splitlines():
        line = line.strip()
        if LAUNCHER_ERROR.match(line):
            return line
    return None


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


def build_command(settings: Settings, command: str) -> str:
    return f"cd {remote_path(settings.launcher_repo)} && {{ {command}; }} 2>&1"


def prepare_wheels(cluster: Cluster, info: LauncherInfo, args: tuple[str, ...]) -> wheels.Pinned | None:
    """The pinned wheels this launcher builds from, checked present; None when it reads none."""
    s = cluster.settings
    if info.use_wheels == "nightly" and "--use-wheels" in args:
        cluster.say(f"note: on this launcher ({info.generation}) --use-wheels installs nightly vLLM from the "
                    "internet (Dockerfile.wheels), not the pinned wheels; the image's vLLM is checked by verify")
    if not s.wheels:
        return None
    if info.use_wheels == "nightly" and s.launcher.wheels == "auto":
        cluster.say(f"note: this launcher ({info.generation}) builds vLLM without local wheels (from source, "
                    "or nightly with --use-wheels): the pinned wheels are not used; verify checks the vLLM it installed")
        return None
    if info.use_wheels == "local-cache" and "--use-wheels" not in args:
        cluster.say(f"note: launcher.build_args.{info.generation} has no --use-wheels: this launcher then pulls "
                    "its prebuilt runner image instead of building from the pinned wheels")
    return wheels.check_present(cluster, info, s.wheels)


def check_unchanged(cluster: Cluster, spec: ImageSpec, pinned: wheels.Pinned,
                    before: dict[str, tuple[int, str] | None], build_failed: str | None = None) -> None:
    """After a build (failed or not): the pinned wheels as they were, else put back and fail."""
    after = wheels.fingerprints(cluster, pinned)
    found = wheels.listing(cluster, pinned.dirs)
    changed = wheels.changes(before, after, found)
    if not changed:
        cluster.say(f"pinned wheels unchanged by the build ({len(pinned.paths)}, sha256 checked)")
        return
    restored = wheels.restore(cluster, [p for p in pinned.paths if before.get(p) != after.get(p)])
    raise ImagesError(
        f"the launcher's build of {spec.tag} on {cluster.head.name} changed the pinned wheels: "
        + "; ".join(changed)
        + (". The pinned files were put back" if restored else ". Put the pinned files back by hand")
        + "; the image it built is not from them, so nothing was verified or distributed. Remove any "
        "wheel the build added beside a pinned one, and check the build flags (launcher.build_args)"
        + (f". The build itself also failed: {build_failed}" if build_failed else "")
    )


def rebuild(cluster: Cluster, specs: list[ImageSpec]) -> list[Verdict]:
    """Check wheels and bases, then build and verify each image in lineage order; stop at the
    first build or verification failure. Nothing is copied anywhere."""
    head = cluster.head
    info = launcher_for_build(cluster)
    args = generation_args(cluster.settings, info)
    pinned = prepare_wheels(cluster, info, args)
    plan = plan_rebuild(cluster, specs)
    commands = {spec.name: expand(spec, args) for spec in plan.order}
    for spec in plan.order:
        check_flags(spec, commands[spec.name], info)
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
        command = commands[spec.name]
        cluster.say(f"building {spec.tag} on {head.name}: {command}")
        guard = pinned if pinned and "build-and-copy.sh" in command else None
        before_wheels = None
        if guard and not cluster.dry_run:
            before_wheels = wheels.fingerprints(cluster, guard)
        if guard:
            wheels.protect(cluster, guard)
        echo = None if cluster.dry_run else build_echo(cluster, head.name, spec.name)
        r = cluster.run(head, build_command(cluster.settings, command), mutating=True, sink=echo, shell_leads=False)
        if guard and before_wheels is not None:
            failed = None if r.ok else (launcher_error_line(r.stdout + "\n" + r.stderr) or r.why())
            check_unchanged(cluster, spec, guard, before_wheels, failed)
        if cluster.dry_run:
            cluster.say(f"[dry-run] {head.name}: then verify {spec.tag}: "
                        + "; ".join(probe_command(cluster.settings.docker, spec.tag, code) for _, code in probes(spec)))
            continue
        if not r.ok:
            own = launcher_error_line(r.stdout + "\n" + r.stderr)
            raise ImagesError(
                f"building {spec.tag} on {head.name} failed "
                f"({f'exit {r.exit_code}: {own}' if own else r.why()}); nothing was distributed. "
                f"command: {command}. The full output is above and in the operations log"
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
