"""Which eugr/spark-vllm-docker the head runs, read from the checkout itself.

The launcher changed shape during 2026 (docs/launcher.md has the table): a flag that builds from
local wheels in one generation installs nightly vLLM from the internet in another and is
rejected by a third; the multi-node default flipped from Ray to torch distributed. So nothing
is assumed from a date or a config value: the scripts' own text is grepped for markers that
exist in the real upstream files, and the commit and date are shown so a person can check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ClusterError
from ..remote import Cluster
from ..shell import remote_path

SCRIPTS = ("build-and-copy.sh", "launch-cluster.sh", "run-recipe.py", "run-recipe.sh", "autodiscover.sh")
GENERATIONS = ("seed", "jan26", "current", "unknown")
SEPARATOR = "=====gx10-ops-file "

# flag names in the case labels of a `while ... case $1 in` parser: `-t|--tag)`, `--ray)`
_CASE_LABEL = re.compile(r"^\s*((?:-{1,2}[A-Za-z0-9][\w-]*\|?)+)\)", re.MULTILINE)
# the script-level default (column 0), not the assignment inside `--no-ray)`
_NO_RAY_DEFAULT = re.compile(r'^NO_RAY_MODE="(true|false)"', re.MULTILINE)


@dataclass(frozen=True)
class LauncherInfo:
    """What the head's launcher checkout is and can do. `generation` is a label for people and
    for config lookups (`launcher.build_args`); code that cares about a behaviour reads the
    probed feature (`use_wheels`, `ray_default`, ...) rather than the label."""

    commit: str | None
    date: str | None
    generation: str                     # seed | jan26 | current | unknown
    ray_default: bool                   # multi-node uses Ray unless told otherwise
    has_run_recipe: bool
    use_wheels: str                     # absent | nightly | local-cache
    wheel_dir: str                      # relative to the repo: "wheels" or ".wheel-cache"
    build_flags: frozenset[str] = field(default_factory=frozenset)
    env_file: bool = False              # launch-cluster.sh reads .env
    launch_flags: frozenset[str] = field(default_factory=frozenset)
    scripts: frozenset[str] = field(default_factory=frozenset)  # which of SCRIPTS exist

    def describe(self) -> str:
        when = f", {self.date}" if self.date else ""
        commit = self.commit[:12] if self.commit else "commit unknown (not a git checkout)"
        backend = "Ray" if self.ray_default else "no-Ray (torch distributed)"
        return (f"{self.generation} generation ({commit}{when}): multi-node default {backend}; "
                f"--use-wheels {self.use_wheels}; wheels in {self.wheel_dir}/; "
                f"run-recipe {'present' if self.has_run_recipe else 'absent'}; "
                f".env {'read' if self.env_file else 'not read'}")


def case_flags(text: str) -> frozenset[str]:
    """Every option a shell script's `case` parser accepts."""
    flags: set[str] = set()
    for label in _CASE_LABEL.findall(text):
        flags.update(f for f in label.split("|") if f.startswith("-"))
    return frozenset(flags)


def probe(texts: dict[str, str], commit: str | None = None, date: str | None = None) -> LauncherInfo:
    """Features from the scripts' texts (file name -> content; a missing file is absent).

    Markers, each present in the upstream file named in docs/launcher.md:
    * build-and-copy.sh `WHEEL_CACHE_ROOT="./.wheel-cache"`: --use-wheels builds from the local
      wheel cache (current); `Dockerfile.wheels` beside `--use-wheels`: nightly/release vLLM from
      the internet (jan26); no `--use-wheels)` label: the flag is rejected (seed).
    * launch-cluster.sh `NO_RAY_MODE="true"` at column 0: no-Ray default (current);
      `NO_RAY_MODE="false"` or no such variable: Ray.
    * launch-cluster.sh `DOTENV_` / `.env`: it reads the repo's .env.
    """
    build = texts.get("build-and-copy.sh", "")
    launch = texts.get("launch-cluster.sh", "")
    build_flags = case_flags(build)
    launch_flags = case_flags(launch)
    if "--use-wheels" not in build_flags:
        use_wheels = "absent"
    elif "WHEEL_CACHE_ROOT=" in build or ".wheel-cache" in build:
        use_wheels = "local-cache"
    elif "Dockerfile.wheels" in build:
        use_wheels = "nightly"
    else:
        use_wheels = "nightly"  # the flag's only other meaning upstream; said so in describe()
    wheel_dir = ".wheel-cache" if use_wheels == "local-cache" else "wheels"
    default = _NO_RAY_DEFAULT.search(launch)
    ray_default = not (default and default.group(1) == "true")
    env_file = "DOTENV_" in launch or "/.env" in launch
    has_run_recipe = "run-recipe.py" in texts
    if not build or not launch:
        generation = "unknown"
    elif use_wheels == "local-cache" or not ray_default:
        generation = "current"
    elif use_wheels == "nightly" and not has_run_recipe:
        generation = "jan26"
    elif use_wheels == "absent" and has_run_recipe and "WHEELS_DIR=\"./wheels\"" in build:
        generation = "seed"
    else:
        generation = "unknown"
    return LauncherInfo(
        commit=commit, date=date, generation=generation, ray_default=ray_default,
        has_run_recipe=has_run_recipe, use_wheels=use_wheels, wheel_dir=wheel_dir,
        build_flags=build_flags, env_file=env_file, launch_flags=launch_flags,
        scripts=frozenset(texts),
    )


def read_command(repo: str) -> str:
    """One remote round: `git log` then each script, separated by marker lines."""
    parts = [f"cd {remote_path(repo)} 2>/dev/null || {{ echo NOREPO; exit 0; }}",
             f"echo '{SEPARATOR}git'",
             "git log -1 --format='%H %cI' 2>/dev/null || true"]
    for name in SCRIPTS:
        parts.append(f"[ -f {name} ] && {{ echo '{SEPARATOR}{name}'; cat {name}; echo; }}")
    return "; ".join(parts) + "; true"


def parse_read(stdout: str) -> tuple[dict[str, str], str | None, str | None] | None:
    """(texts, commit, date) from `read_command`'s output; None when the repo is missing."""
    if stdout.strip() == "NOREPO":
        return None
    texts: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(SEPARATOR):
            if current is not None:
                texts[current] = "\n".join(lines)
            current, lines = line[len(SEPARATOR):], []
        else:
            lines.append(line)
    if current is not None:
        texts[current] = "\n".join(lines)
    git = texts.pop("git", "").split()
    commit, date = (git[0], git[1]) if len(git) == 2 else (None, None)
    return texts, commit, date


class LauncherUnreadable(ClusterError):
    """The head could not be asked what its launcher checkout is."""


class LauncherMissing(LauncherUnreadable):
    """The head has no launcher checkout at cluster.launcher_repo."""


def detect(cluster: Cluster) -> LauncherInfo:
    """Read the head's checkout (one ssh round) and probe it. Raises LauncherMissing when the
    repo is not there, LauncherUnreadable when the head cannot be asked."""
    s, head = cluster.settings, cluster.head
    r = cluster.run(head, read_command(s.launcher_repo), timeout=60)
    if not r.ok:
        raise LauncherUnreadable(f"cannot read the launcher checkout on {head.name}: {r.why()}")
    parsed = parse_read(r.stdout)
    if parsed is None:
        raise LauncherMissing(
            f"{head.name} has no launcher repo at {s.launcher_repo}: git clone "
            "https://github.com/eugr/spark-vllm-docker there (or set cluster.launcher_repo)")
    texts, commit, date = parsed
    return probe(texts, commit, date)
