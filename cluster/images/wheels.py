"""The pinned wheels (`wheels:` in the config) where the detected launcher keeps them, and proof
that a build left them alone.

Layouts (docs/launcher.md): seed and jan26 use one `wheels/` directory (jan26's build never
reads it); the current generation keeps `.wheel-cache/{flashinfer,vllm}/<profile>/` with
`.PREFIX-commit` markers. Both generations that read local wheels first try to download the
release ones over them; upstream skips that when the local wheels are newer than the release
(`local_wheels_are_newer_than_release` in build-and-copy.sh), so the pinned files are touched
just before a build. Whatever the launcher still does, each pinned wheel's size and sha256 are
taken before and after the build, and a build that changed, removed or replaced one fails,
naming it, with the original put back from a hard link. sha256 rather than mtime+size: a
download of the same name and size is exactly what must be caught, and hashing the ~1.5 GB of
the seed's four wheels takes a few seconds on a GB10, next to a build of minutes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from ..launch.generation import LauncherInfo
from ..remote import Cluster
from ..shell import q, remote_path
from .errors import ImagesError

PROFILE = "regular"  # the current generation's default wheel profile (build-and-copy.sh 028b7ce)
BACKUP = ".gx10-ops/pinned-wheels"  # under $HOME on the head: hard links of the pinned wheels


def dist(filename: str) -> str:
    return filename.split("-", 1)[0].lower().replace("-", "_")


def wheel_dir(info: LauncherInfo, configured: str, wheel: str) -> str:
    """The repo-relative directory the launcher builds `wheel` from."""
    if configured != "auto":
        return configured.rstrip("/")
    if info.use_wheels == "local-cache":
        kind = "flashinfer" if wheel.startswith("flashinfer") else "vllm"
        return f".wheel-cache/{kind}/{PROFILE}"
    return "wheels"


def wheel_problems(pinned: Iterable[str], found: dict[str, int], where: str = "wheels/") -> list[str]:
    """Missing, empty or stale pinned wheels, given the directory as file name -> size."""
    problems = []
    for wheel in pinned:
        others = sorted(f for f in found if dist(f) == dist(wheel) and f != wheel)
        if wheel not in found:
            if others:
                problems.append(f"stale: {where} has {', '.join(others)} but the config pins {wheel}")
            else:
                problems.append(f"missing: {wheel}")
        elif found[wheel] == 0:
            problems.append(f"empty: {wheel} is 0 bytes (an interrupted download?)")
        elif others:
            problems.append(
                f"stale: {where} also holds {', '.join(others)} beside the pinned {wheel}; "
                "the build may install either: move the old one out"
            )
    return problems


@dataclass(frozen=True)
class Pinned:
    """The pinned wheels as repo-relative paths, grouped by directory."""

    paths: tuple[str, ...]
    dirs: tuple[str, ...]


def locate(info: LauncherInfo, configured: str, wheels: Iterable[str]) -> Pinned:
    paths = tuple(posixpath.join(wheel_dir(info, configured, w), w) for w in wheels)
    return Pinned(paths, tuple(sorted({posixpath.dirname(p) for p in paths})))


def listing(cluster: Cluster, dirs: Iterable[str]) -> dict[str, dict[str, int]]:
    """dir -> {wheel file name: size} for each directory (one level), one remote round."""
    repo = remote_path(cluster.settings.launcher_repo)
    parts = [f"cd {repo} || exit 3"]
    for d in dirs:
        parts.append(f"echo {q('@@' + d)}; [ -d {q(d)} ] && find {q(d)} -maxdepth 1 -name '*.whl' -printf '%f\\t%s\\n'")
    r = cluster.run(cluster.head, "; ".join(parts) + "; true", timeout=60)
    if not r.ok:
        raise ImagesError(f"cannot list the launcher's wheels on {cluster.head.name}: {r.why()}")
    out: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in r.stdout.splitlines():
        if line.startswith("@@"):
            current = out.setdefault(line[2:], {})
        elif current is not None and "\t" in line:
            name, _, size = line.rpartition("\t")
            current[name] = int(size)
    return out


def check_present(cluster: Cluster, info: LauncherInfo, pinned_names: tuple[str, ...]) -> Pinned:
    """Refuse (before anything is built) when a pinned wheel is missing, empty or has a rival."""
    s = cluster.settings
    pinned = locate(info, s.launcher.wheels, pinned_names)
    found = listing(cluster, pinned.dirs)
    problems: list[str] = []
    for d in pinned.dirs:
        names = [posixpath.basename(p) for p in pinned.paths if posixpath.dirname(p) == d]
        problems += wheel_problems(names, found.get(d, {}), f"{d}/")
    if problems:
        where = ", ".join(f"{s.launcher_repo}/{d}" for d in pinned.dirs)
        raise ImagesError(
            f"the pinned wheels are not in {where} on {cluster.head.name}; nothing was built:\n"
            + "\n".join(f"  {p}" for p in problems)
            + f"\ndrop the pinned wheels there (the config's `wheels:` list; this launcher, {info.generation}, "
            f"builds from {info.wheel_dir}/), or update `wheels:` when bumping vLLM"
        )
    return pinned


def fingerprint_command(repo: str, paths: Iterable[str]) -> str:
    parts = [f"cd {remote_path(repo)} || exit 3"]
    for p in paths:
        parts.append(f"if [ -f {q(p)} ]; then printf '%s\\t%s\\t' {q(p)} \"$(stat -c %s {q(p)})\"; "
                     f"sha256sum < {q(p)} | cut -d' ' -f1; else printf '%s\\tMISSING\\n' {q(p)}; fi")
    return "; ".join(parts)


def parse_fingerprints(stdout: str) -> dict[str, tuple[int, str] | None]:
    out: dict[str, tuple[int, str] | None] = {}
    for line in stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 2 and fields[1] == "MISSING":
            out[fields[0]] = None
        elif len(fields) == 3:
            out[fields[0]] = (int(fields[1]), fields[2].strip())
    return out


def fingerprints(cluster: Cluster, pinned: Pinned) -> dict[str, tuple[int, str] | None]:
    r = cluster.run(cluster.head, fingerprint_command(cluster.settings.launcher_repo, pinned.paths), timeout=600)
    if not r.ok:
        raise ImagesError(f"cannot hash the pinned wheels on {cluster.head.name}: {r.why()}")
    return parse_fingerprints(r.stdout)


def protect(cluster: Cluster, pinned: Pinned) -> None:
    """Just before a build: hard-link each pinned wheel under ~/.gx10-ops (to put back) and
    touch it, so the launcher's release download sees local wheels newer than the release."""
    repo = remote_path(cluster.settings.launcher_repo)
    parts = [f"cd {repo} || exit 3", f"mkdir -p \"$HOME\"/{BACKUP}"]
    for p in pinned.paths:
        parts.append(f"ln -f {q(p)} \"$HOME\"/{BACKUP}/{q(posixpath.basename(p))} 2>/dev/null; touch -c {q(p)}")
    cluster.run(cluster.head, "; ".join(parts), mutating=True, timeout=60)


def changes(before: dict[str, tuple[int, str] | None], after: dict[str, tuple[int, str] | None],
            found_after: dict[str, dict[str, int]]) -> list[str]:
    """What a build did to the pinned wheels: one line per wheel changed, removed or rivalled."""
    lines = []
    for path, was in before.items():
        now = after.get(path)
        name = posixpath.basename(path)
        if was is not None and now is None:
            lines.append(f"{name} was removed")
        elif was is not None and now is not None and now != was:
            lines.append(f"{name} was replaced (size {was[0]} -> {now[0]}, sha256 {was[1][:12]} -> {now[1][:12]})")
        rivals = sorted(f for f in found_after.get(posixpath.dirname(path), {})
                        if dist(f) == dist(name) and f != name)
        if rivals:
            lines.append(f"{name} now has {', '.join(rivals)} beside it in {posixpath.dirname(path)}/")
    return lines


def restore(cluster: Cluster, paths: Iterable[str]) -> bool:
    """Put the pinned wheels back from their hard links; False when a link is missing."""
    repo = remote_path(cluster.settings.launcher_repo)
    parts = [f"cd {repo} || exit 3"]
    for p in paths:
        b = f"\"$HOME\"/{BACKUP}/{q(posixpath.basename(p))}"
        parts.append(f"if [ -f {b} ]; then ln -f {b} {q(p)}; else echo NOBACKUP; fi")
    r = cluster.run(cluster.head, "; ".join(parts), mutating=True, timeout=60)
    return r.ok and "NOBACKUP" not in r.stdout
