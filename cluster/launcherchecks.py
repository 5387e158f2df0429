"""`inv doctor`'s launcher checks: what the head's eugr/spark-vllm-docker checkout needs, read
from the checkout itself (its generation, docs/launcher.md): its scripts and their helpers, the
`.env` it reads against our config, and each configured model's recipe with its `container:`
image on every node. One remote round on the head, one image inspection on every node."""

from __future__ import annotations

import posixpath
from typing import Any

import yaml

from .checks import FAIL, OK, WARN, Check
from .errors import ClusterError
from .images.select import image_states
from .launch.generation import LauncherInfo, LauncherMissing, detect
from .launch.plan import parse_dotenv
from .remote import Cluster
from .shell import q, remote_path

ALWAYS = ("build-and-copy.sh", "launch-cluster.sh", "autodiscover.sh")
RUN_RECIPE = ("run-recipe.sh", "run-recipe.py", "resolve-model.py", "hf-download.sh")
SOURCED = ("autodiscover.sh", "run-recipe.py", "resolve-model.py")  # sourced or run by python: need not be +x
SEP = "@@gx10 "


def _read_head(cluster: Cluster, info: LauncherInfo, recipes: list[str]) -> dict[str, str]:
    """Sections: scripts (missing/not executable), env, ibdev2netdev, recipe:<path>."""
    scripts = ALWAYS + (RUN_RECIPE if info.has_run_recipe else ())
    parts = [f"cd {remote_path(cluster.settings.launcher_repo)} || exit 3", f"echo '{SEP}scripts'"]
    for f in scripts:
        parts.append(f"if [ ! -f {f} ]; then echo 'missing {f}'; "
                     + ("fi" if f in SOURCED else f"elif [ ! -x {f} ]; then echo 'noexec {f}'; fi"))
    parts += [f"echo '{SEP}env'", "[ -f .env ] && cat .env || echo '#NOENV'",
              f"echo '{SEP}ibdev2netdev'", "command -v ibdev2netdev || true"]
    for r in recipes:
        parts += [f"echo {q(SEP + 'recipe:' + r)}", f"cat {q(r)} 2>/dev/null || echo '#NORECIPE'"]
    res = cluster.run(cluster.head, "; ".join(parts) + "; true", timeout=60)
    if not res.ok:
        raise ClusterError(f"cannot read the launcher checkout on {cluster.head.name}: {res.why()}")
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in res.stdout.splitlines():
        if line.startswith(SEP):
            current = sections.setdefault(line[len(SEP):], [])
        else:
            current.append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def script_checks(cluster: Cluster, info: LauncherInfo, status: str) -> list[Check]:
    head, repo = cluster.head.name, cluster.settings.launcher_repo
    checks = []
    missing = [line.split()[1] for line in status.splitlines() if line.startswith("missing ")]
    noexec = [line.split()[1] for line in status.splitlines() if line.startswith("noexec ")]
    if missing:
        checks.append(Check(head, "launcher scripts", FAIL, f"{repo} lacks {', '.join(missing)}",
                            f"restore the checkout on {head}: `git -C {repo} checkout -- .` (or git pull)"))
    if noexec:
        checks.append(Check(head, "launcher scripts", FAIL, f"not executable: {', '.join(noexec)}",
                            f"on {head}: cd {repo} && chmod +x {' '.join(noexec)}"))
    if not missing and not noexec:
        helpers = "; run-recipe.py and its helpers" if info.has_run_recipe else ""
        checks.append(Check(head, "launcher scripts", OK, f"{', '.join(ALWAYS)} present{helpers}"))
    users = [m.name for m in cluster.settings.models.values() if m.recipe or m.relaunch]
    if users and not info.has_run_recipe:
        checks.append(Check(head, "run-recipe", FAIL,
                            f"this launcher ({info.generation}) has no run-recipe.py, which the recipes of "
                            f"{', '.join(users)} need",
                            f"update the checkout on {head} (`git -C {repo} pull`; run-recipe arrived after 2026-01-28)"))
    return checks


def env_checks(cluster: Cluster, info: LauncherInfo, env_text: str, has_ibdev: bool) -> list[Check]:
    """The `.env` keys the launcher reads, against our config (docs/launcher.md, .env rows)."""
    s, head = cluster.settings, cluster.head.name
    fabric = {n.fabric: n.name for n in s.nodes}
    wanted = ",".join(n.fabric for n in s.nodes)
    where = f"{s.launcher_repo}/.env"
    if not info.env_file:
        if has_ibdev:
            return [Check(head, "launcher interfaces", OK,
                          f"this launcher ({info.generation}) reads no .env; autodiscover.sh can use ibdev2netdev")]
        return [Check(head, "launcher interfaces", FAIL,
                      f"this launcher ({info.generation}) reads no .env, so autodiscover.sh detects ETH_IF/IB_IF, "
                      f"and ibdev2netdev is not on {head}: it stops with \"Error: ibdev2netdev not found. "
                      "Cannot auto-detect interfaces.\"",
                      f"install ibdev2netdev (MLNX OFED) on {head}, or update the launcher to one that reads .env")]
    if env_text.strip() == "#NOENV":
        return [Check(head, "launcher .env", FAIL, f"{where} does not exist: the launcher autodiscovers (interactively)",
                      f"write {where} on {head}: CLUSTER_NODES={wanted}, LOCAL_IP={s.head.fabric}, ETH_IF=..., "
                      "IB_IF=...")]
    env = parse_dotenv(env_text)
    checks: list[Check] = []
    nodes = [n.strip() for n in env.get("CLUSTER_NODES", "").split(",") if n.strip()]
    if not nodes:
        checks.append(Check(head, ".env CLUSTER_NODES", FAIL, f"{where} has no CLUSTER_NODES: the launcher autodiscovers",
                            f"add CLUSTER_NODES={wanted} to {where} on {head}"))
    else:
        extra = [n for n in nodes if n not in fabric]
        lacking = [f"{name} ({ip})" for ip, name in fabric.items() if ip not in nodes]
        if extra or lacking:
            detail = "; ".join(([f"lists {', '.join(extra)}, not a node of ours"] if extra else [])
                               + ([f"lacks {', '.join(lacking)}"] if lacking else []))
            checks.append(Check(head, ".env CLUSTER_NODES", FAIL, f"{where} {detail}",
                                f"set CLUSTER_NODES={wanted} in {where} on {head}"))
        else:
            checks.append(Check(head, ".env CLUSTER_NODES", OK, f"the {len(nodes)} nodes of the config"))
    local = env.get("LOCAL_IP")
    if local is None:
        checks.append(Check(head, ".env LOCAL_IP", WARN, "not set: the launcher detects it from the interfaces",
                            f"add LOCAL_IP={s.head.fabric} to {where} on {head}"))
    elif local not in nodes or local not in fabric:
        checks.append(Check(head, ".env LOCAL_IP", FAIL,
                            f"LOCAL_IP={local} is not one of the cluster's nodes: launch-cluster.sh stops with "
                            f"\"Error: Local IP ({local}) is not in the list of nodes\"",
                            f"set LOCAL_IP={s.head.fabric} (the head's fabric address) in {where} on {head}"))
    elif fabric[local] != head:
        checks.append(Check(head, ".env LOCAL_IP", FAIL,
                            f"LOCAL_IP={local} is {fabric[local]}: the launcher would run the head there",
                            f"set LOCAL_IP={s.head.fabric} in {where} on {head}"))
    else:
        checks.append(Check(head, ".env LOCAL_IP", OK, f"{local} ({head}), in CLUSTER_NODES"))
    eth, ib = env.get("ETH_IF"), env.get("IB_IF")
    if eth and ib:
        checks.append(Check(head, ".env ETH_IF/IB_IF", OK, f"ETH_IF={eth}, IB_IF={ib}"))
    elif has_ibdev:
        checks.append(Check(head, ".env ETH_IF/IB_IF", WARN,
                            f"{'IB_IF' if eth else 'ETH_IF'} not set: autodetected with ibdev2netdev",
                            f"set both ETH_IF and IB_IF in {where} to pin the fabric interfaces"))
    else:
        unset = " and ".join(k for k, v in (("ETH_IF", eth), ("IB_IF", ib)) if not v)
        checks.append(Check(head, ".env ETH_IF/IB_IF", FAIL,
                            f"{unset} not set in {where} and ibdev2netdev is not on {head}: the launch stops with "
                            "\"Error: ibdev2netdev not found. Cannot auto-detect interfaces.\"",
                            f"set ETH_IF=<fabric ethernet interface> and IB_IF=<RoCE device> in {where} on {head}"))
    name = env.get("CONTAINER_NAME")
    if name and name != s.container_name:
        checks.append(Check(head, ".env CONTAINER_NAME", WARN,
                            f"CONTAINER_NAME={name}: the launcher names containers so (config: {s.container_name})",
                            f"set cluster.container_name: {name}, or drop CONTAINER_NAME from {where}"))
    else:
        checks.append(Check(head, ".env CONTAINER_NAME", OK, f"{name or 'unset (launcher default vllm_node)'}"))
    port = env.get("MASTER_PORT")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        checks.append(Check(head, ".env MASTER_PORT", FAIL, f"MASTER_PORT={port!r} is not a port",
                            f"fix or drop MASTER_PORT in {where} on {head} (each model passes its own --master-port)"))
    else:
        checks.append(Check(head, ".env MASTER_PORT", OK,
                            f"{port or 'unset (29501)'}; each model passes its own --master-port"))
    return checks


def recipe_checks(cluster: Cluster, sections: dict[str, str]) -> list[Check]:
    """Each configured recipe present on the head, and its `container:` on every node."""
    s, head = cluster.settings, cluster.head.name
    checks: list[Check] = []
    images: dict[str, list[str]] = {}  # container -> models
    for m in s.models.values():
        if not m.recipe:
            continue
        text = sections.get(f"recipe:{m.recipe}", "#NORECIPE")
        path = posixpath.join(s.launcher_repo, m.recipe)
        if text.strip() == "#NORECIPE":
            checks.append(Check(head, f"recipe {m.name}", FAIL, f"{path} does not exist",
                                f"fix models.{m.name}.recipe, or update the checkout on {head} (git pull)"))
            continue
        try:
            data: Any = yaml.safe_load(text)
        except yaml.YAMLError as e:
            checks.append(Check(head, f"recipe {m.name}", FAIL, f"{path} is not YAML: {e}".splitlines()[0],
                                f"fix {path} on {head}"))
            continue
        container = data.get("container") if isinstance(data, dict) else None
        if not container:
            checks.append(Check(head, f"recipe {m.name}", FAIL, f"{path} has no container:",
                                f"add `container: {s.image(m.image).tag.split(':')[0]}` to {path} on {head}"))
            continue
        checks.append(Check(head, f"recipe {m.name}", OK, f"{m.recipe}, container {container}"))
        images.setdefault(str(container), []).append(m.name)
    if not images:
        return checks
    states, failed = image_states(cluster, s.nodes, list(images))
    for node in s.nodes:
        if node.name in failed:
            checks.append(Check(node.name, "recipe images", FAIL, f"cannot inspect images: {failed[node.name].why()}",
                                f"check {node.name} (`inv doctor` ssh/engine rows)"))
            continue
        held = states.get(node.name, {})
        lacking = [c for c in images if held.get(c) is None]
        if lacking:
            for c in lacking:
                checks.append(Check(node.name, "recipe images", FAIL,
                                    f"no {c} (the container: of {', '.join(images[c])}'s recipe)",
                                    f"`inv rebuild` then `inv distribute` (or `inv restore --image ... --node {node.name}`)"
                                    f"; or point the recipe's container: at a configured image"))
        else:
            checks.append(Check(node.name, "recipe images", OK, ", ".join(images)))
    return checks


def launcher_checks(cluster: Cluster) -> list[Check]:
    s, head = cluster.settings, cluster.head.name
    try:
        info = detect(cluster)
    except LauncherMissing:
        return [Check(head, "launcher repo", FAIL, f"{s.launcher_repo} does not exist",
                      f"git clone https://github.com/eugr/spark-vllm-docker {q(s.launcher_repo)} on {head}")]
    except ClusterError as e:
        return [Check(head, "launcher repo", FAIL, str(e),
                      f"check `ssh {s.head.mgmt}` and that {s.launcher_repo} is readable there")]
    if not {"build-and-copy.sh", "launch-cluster.sh"} & info.scripts:
        return [Check(head, "launcher repo", FAIL,
                      f"{s.launcher_repo} lacks {', '.join(ALWAYS)}: not a spark-vllm-docker checkout",
                      f"update the checkout on {head} (git pull), or clone it afresh there")]
    checks = [Check(head, "launcher", WARN if info.generation == "unknown" else OK, info.describe(),
                    "" if info.generation != "unknown" else
                    "a launcher this tool has not read: check docs/launcher.md, then set launcher.build_args.unknown")]
    pin = s.launcher.pin_commit
    if pin:
        ok = (info.commit or "").lower().startswith(pin)
        checks.append(Check(head, "launcher pin", OK if ok else FAIL,
                            f"launcher.pin_commit {pin}; checkout at {info.commit or 'no commit'}",
                            "" if ok else f"`git -C {s.launcher_repo} checkout {pin}` on {head}, or update the pin"))
    recipes = sorted({m.recipe for m in s.models.values() if m.recipe})
    sections = _read_head(cluster, info, recipes)
    checks += script_checks(cluster, info, sections.get("scripts", ""))
    checks += env_checks(cluster, info, sections.get("env", "#NOENV"), bool(sections.get("ibdev2netdev", "").strip()))
    checks += recipe_checks(cluster, sections)
    return checks
