"""What the head's launcher will really do with our launch, decided before it runs: the image
(`-t`, or the recipe's own `container:` on the relaunch path), the container name (its `.env`
`CONTAINER_NAME` wins over the default `--name vllm_node`), and the flags that keep the recipe on
the backend it was written for (the Ray default flipped to torch distributed in 2026-07).
docs/launcher.md names the upstream file and commit for each rule."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import yaml

from ..config import ModelSpec, Settings
from ..facts import normalize_image
from ..remote import Cluster
from ..shell import q, remote_path
from .errors import LaunchRefused
from .generation import LauncherInfo, LauncherUnreadable, detect

DEFAULT_NAME = "vllm_node"  # launch-cluster.sh's default --name; only this one yields to .env
SEPARATOR = "=====gx10-ops-plan "
_BACKEND = re.compile(r"--distributed-executor-backend(?:=|\s+)(\S+)")


@dataclass(frozen=True)
class LaunchPlan:
    info: LauncherInfo
    container: str          # the name the launcher's containers get
    image: str              # the image the containers run
    backend: str            # ray | no-ray: what the recipe expects
    flags: tuple[str, ...]  # what run-recipe needs for that backend on this launcher


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines as launch-cluster.sh reads the launcher's .env (comments skipped, an
    `export ` prefix and matching quotes stripped); doctor and launch both read it with this."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip().removeprefix("export ").strip()] = value
    return env


def container_name(configured: str, dotenv: dict[str, str], reads_env: bool) -> str:
    """launch-cluster.sh takes `.env` CONTAINER_NAME when `--name` is empty or the default."""
    if reads_env and configured == DEFAULT_NAME and dotenv.get("CONTAINER_NAME"):
        return dotenv["CONTAINER_NAME"]
    return configured


def recipe_backend(command: str) -> str | None:
    """The backend a recipe's command names (`--distributed-executor-backend ray|mp`), if any."""
    m = _BACKEND.search(command)
    if not m:
        return None
    return "ray" if m.group(1).strip("'\"") == "ray" else "no-ray"


def backend_setting(settings: Settings) -> str:
    """`launcher.backend`: ray | no-ray | auto."""
    return settings.launcher.backend


def wanted_backend(setting: str, recipe_command: str) -> str:
    """auto: what the recipe names; a recipe naming none was written for Ray, the multi-node
    engine of every recipe before the 2026-07 no-Ray default (and of the seed's)."""
    if setting in ("ray", "no-ray"):
        return setting
    return recipe_backend(recipe_command) or "ray"


def backend_flags(info: LauncherInfo, backend: str) -> tuple[str, ...]:
    """Ray-default launchers (seed): `--no-ray` opts out; no-Ray-default ones (current): `--ray`
    opts in. Nothing when the default already is the wanted one."""
    if backend == "ray" and not info.ray_default:
        return ("--ray",)
    if backend == "no-ray" and info.ray_default:
        return ("--no-ray",)
    return ()


def read_command(repo: str, recipe: str | None) -> str:
    parts = [f"cd {remote_path(repo)} 2>/dev/null || {{ echo NOREPO; exit 0; }}",
             f"grep -qE 'DOTENV_|/[.]env' launch-cluster.sh 2>/dev/null && echo '{SEPARATOR}readsenv'",
             f"echo '{SEPARATOR}env'", "cat .env 2>/dev/null"]
    if recipe:
        parts += [f"echo '{SEPARATOR}recipe'", f"cat {q(recipe)} 2>/dev/null || echo '{SEPARATOR}norecipe'"]
    return "; ".join(parts) + "; true"


def _split(stdout: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith(SEPARATOR):
            current = line[len(SEPARATOR):]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def read_launcher_files(cluster: Cluster, recipe: str | None) -> tuple[dict[str, str], str | None, bool]:
    """(the head's launcher `.env`, the recipe's text or None when it is missing, whether its
    launch-cluster.sh reads .env at all): one round."""
    s, head = cluster.settings, cluster.head
    r = cluster.run(head, read_command(s.launcher_repo, recipe), timeout=30)
    if not r.ok:
        raise LaunchRefused(f"cannot read the launcher's .env on {head.name}: {r.why()}")
    if r.stdout.strip() == "NOREPO":
        raise LaunchRefused(f"{head.name} has no launcher repo at {s.launcher_repo}: git clone "
                            "https://github.com/eugr/spark-vllm-docker there (or set cluster.launcher_repo)")
    parts = _split(r.stdout)
    text = None if "norecipe" in parts or recipe is None else parts.get("recipe")
    return parse_dotenv(parts.get("env", "")), text, "readsenv" in parts


def plan(cluster: Cluster, spec: ModelSpec) -> LaunchPlan:
    """Read the launcher (its scripts, .env, the recipe) and decide; LaunchRefused when the
    launch could only fail or run something other than what was checked."""
    s, head = cluster.settings, cluster.head
    try:
        info = detect(cluster)
    except LauncherUnreadable as e:
        raise LaunchRefused(f"cannot launch {spec.name}: {e}") from None
    dotenv, text, _ = read_launcher_files(cluster, spec.recipe)
    image = s.image(spec.image).tag
    where = f"{head.name}:{s.launcher_repo}"
    if not info.has_run_recipe and not spec.relaunch:
        raise LaunchRefused(
            f"cannot launch {spec.name}: the launcher on {head.name} ({info.describe()}) has no run-recipe.py, "
            f"which renders the recipe; nothing was started. Update the checkout (git -C {s.launcher_repo} pull) "
            f"or set models.{spec.name}.relaunch to a script that starts it")
    command = ""
    if spec.recipe:
        if text is None:
            raise LaunchRefused(f"cannot launch {spec.name}: recipe {spec.recipe} is not in {where}; "
                                f"nothing was started. Fix models.{spec.name}.recipe or add the recipe there")
        try:
            recipe = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise LaunchRefused(f"cannot launch {spec.name}: {where}/{spec.recipe} is not YAML: {e}") from None
        command = str(recipe.get("command") or "")
        own = str(recipe.get("container") or "")
        if spec.relaunch and own and normalize_image(own) != normalize_image(image):
            raise LaunchRefused(
                f"cannot launch {spec.name}: {where}/{spec.recipe} runs container {own!r}, but the image checked "
                f"is {image} (images.{spec.image}); the relaunch wrapper would start another image (or stop at "
                f"`Build now? [y/N]`); nothing was started. Set the recipe's container: to {image.split(':')[0]}, "
                f"or models.{spec.name}.relaunch: null so that inv launch passes -t {image}")
    backend = wanted_backend(backend_setting(s), command)
    name = container_name(s.container_name, dotenv, info.env_file)
    return LaunchPlan(info, name, image, backend, backend_flags(info, backend))


def follow_launcher_name(cluster: Cluster) -> str:
    """Make `cluster.settings.container_name` the name the launcher really uses (its `.env`
    CONTAINER_NAME over the default), so status, logs and stop find its containers."""
    s = cluster.settings
    if s.container_name != DEFAULT_NAME:
        return s.container_name
    try:
        dotenv, _, reads_env = read_launcher_files(cluster, None)
    except LaunchRefused:
        return s.container_name  # no repo or no head: nothing to follow; the caller reports the head
    name = container_name(s.container_name, dotenv, reads_env)
    if name != s.container_name:
        cluster.settings = dataclasses.replace(s, container_name=name)
    return name
