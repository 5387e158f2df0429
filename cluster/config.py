"""The cluster config: loaded through Invoke's hierarchy, validated once into typed objects.

Every other module takes a `Settings` and never digs in raw dicts, so a bad key is reported
once, by name, before anything touches a node.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from invoke.config import Config, merge_dicts

from .errors import ClusterError

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
PROJECT_DIR = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"<[A-Za-z0-9_.-]+>")


class ConfigError(ClusterError):
    """A config value is missing or wrong; the message names the key and the fix."""

    exit_code = 2
    prefix = "config error: "


def defaults() -> dict[str, Any]:
    """The collection defaults (cluster/defaults.yaml), the one place a key's default lives."""
    with DEFAULTS_FILE.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Node:
    name: str
    mgmt: str
    fabric: str
    role: str  # "head" or "worker"


@dataclass(frozen=True)
class SSHSettings:
    user: str | None
    key: Path | None
    config_file: Path | None
    known_hosts: Path | None
    accept_new_host_keys: bool
    connect_timeout: int
    fabric_user: str | None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hf_id: str
    served_name: str
    image: str
    recipe: str | None
    relaunch: str | None
    master_port: int
    mods: tuple[str, ...]
    weights_gib: float
    mtp: bool
    load_minutes: tuple[float, float]


@dataclass(frozen=True)
class ImageExpect:
    torch: str
    cuda: str
    vllm: str | None = None
    transformers_min: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    name: str
    tag: str
    base: str | None
    live: bool
    build: str
    expect: ImageExpect


@dataclass(frozen=True)
class BenchDefaults:
    concurrency: tuple[int, ...]
    input_len: int
    output_len: int
    requests_per_point: int | None
    api: str


LAUNCHER_GENERATIONS = ("seed", "jan26", "current", "unknown")
BACKENDS = ("ray", "no-ray", "auto")


@dataclass(frozen=True)
class LauncherSettings:
    """How to drive the head's eugr/spark-vllm-docker checkout, whichever generation it is
    (cluster/launch/generation.py detects it; docs/launcher.md has the table)."""

    backend: str = "auto"           # multi-node: ray | no-ray | auto (what the recipe was written for)
    wheels: str = "auto"            # auto: where the detected generation keeps them; else a repo-relative dir
    build_args: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        "seed": (), "jan26": (), "current": ("--use-wheels",)})
    pin_commit: str | None = None   # `inv rebuild` refuses any other checkout


@dataclass(frozen=True)
class Settings:
    """Everything the tasks need, validated. `nodes` is head first, then workers in order."""

    head: Node
    workers: tuple[Node, ...]
    ssh: SSHSettings
    launcher_repo: str
    model_root: str
    container_name: str
    docker: str
    api_port: int
    partition_gib: float
    reserve_gib: float
    workspace: Path
    image_backup_dir: Path
    results_dir: Path
    ops_log: Path
    hardware_label: str
    models: dict[str, ModelSpec]
    images: dict[str, ImageSpec]
    wheels: tuple[str, ...]
    bench: BenchDefaults
    telemetry: Mapping[str, Any] = field(default_factory=dict)   # cluster/sweeptelemetry.py reads it
    memory: Mapping[str, Any] = field(default_factory=dict)      # cluster/memcheck.py reads it
    placeholders: tuple[str, ...] = field(default=())
    launcher: LauncherSettings = field(default_factory=LauncherSettings)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.head, *self.workers)

    @property
    def api_url(self) -> str:
        """The head's OpenAI-compatible API, as the benchmark harness reaches it."""
        return f"http://{self.head.mgmt}:{self.api_port}"

    @property
    def configured(self) -> bool:
        """False while seed placeholders remain: no cluster, so the embedded demo is the target."""
        return not self.placeholders

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"unknown node {name!r}: the cluster has {', '.join(self.node_names)}")

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def select_nodes(self, spec: str | None) -> tuple[Node, ...]:
        """`None`/'all' -> every node; 'head,w1' -> those nodes, validated."""
        if spec in (None, "", "all"):
            return self.nodes
        return tuple(self.node(s.strip()) for s in spec.split(",") if s.strip())

    def model(self, name: str | None) -> ModelSpec:
        if not name:
            raise ConfigError(f"no model given: use --model with one of {', '.join(self.models)}")
        if name not in self.models:
            raise ConfigError(
                f"unknown model {name!r}: configured models are {', '.join(self.models)} "
                "(add one under `models:` in your config)"
            )
        return self.models[name]

    def image(self, name: str) -> ImageSpec:
        if name not in self.images:
            raise ConfigError(
                f"unknown image {name!r}: configured images are {', '.join(self.images)}"
            )
        return self.images[name]

    def require_cluster(self) -> None:
        """Refuse to go near a node while the config still holds seed placeholders."""
        if self.placeholders:
            shown = "; ".join(self.placeholders[:6])
            more = f" (and {len(self.placeholders) - 6} more)" if len(self.placeholders) > 6 else ""
            raise ConfigError(
                f"the cluster config still has placeholders: {shown}{more}. Describe your cluster "
                "in invoke.yaml beside tasks.py, ~/.invoke.yaml or `inv -f FILE` "
                "(see examples/invoke.yaml)"
            )


def _placeholders(data: Any, path: str) -> list[str]:
    if isinstance(data, str):
        return [f"{path} = {data!r}"] if PLACEHOLDER.search(data) else []
    if isinstance(data, Mapping):
        return [p for k, v in data.items() for p in _placeholders(v, f"{path}.{k}")]
    if isinstance(data, list | tuple):
        return [p for i, v in enumerate(data) for p in _placeholders(v, f"{path}[{i}]")]
    return []


class _Reader:
    """Typed access to a raw mapping that names the dotted key in every error."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {type(data).__name__}")
        self.data, self.path = data, path

    def key(self, k: str) -> str:
        return f"{self.path}.{k}"

    def raw(self, k: str, default: Any = ...) -> Any:
        if k not in self.data or self.data[k] is None:
            if default is ...:
                raise ConfigError(f"{self.key(k)} is missing")
            return default
        return self.data[k]

    def text(self, k: str, default: Any = ...) -> Any:
        v = self.raw(k, default)
        if v is None:
            return None
        if not isinstance(v, str | int | float) or isinstance(v, bool) or str(v).strip() == "":
            raise ConfigError(f"{self.key(k)} must be a non-empty string, got {v!r}")
        return str(v)

    def number(self, k: str, default: Any = ..., *, positive: bool = True) -> Any:
        v = self.raw(k, default)
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or (positive and v <= 0):
            raise ConfigError(f"{self.key(k)} must be a {'positive ' if positive else ''}number, got {v!r}")
        return v

    def flag(self, k: str, default: bool) -> bool:
        v = self.raw(k, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.key(k)} must be true or false, got {v!r}")
        return v

    def items(self, k: str, default: Any = ...) -> list[Any]:
        v = self.raw(k, default)
        if not isinstance(v, list | tuple):
            raise ConfigError(f"{self.key(k)} must be a list, got {v!r}")
        return list(v)

    def sub(self, k: str) -> _Reader:
        return _Reader(self.raw(k), self.key(k))


def _path(v: str | None) -> Path | None:
    return Path(v).expanduser() if v else None


def _node(r: _Reader, role: str) -> Node:
    name = r.text("name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{r.key('name')} = {name!r}: use letters, digits, '-', '_' or '.'")
    fabric = r.raw("fabric", None)
    if fabric is None:
        raise ConfigError(
            f"{r.path} ({name}) has no fabric address: every node needs `fabric:` (its 200 GbE IP)"
        )
    return Node(name=name, mgmt=r.text("mgmt"), fabric=r.text("fabric"), role=role)


def _model(name: str, r: _Reader, images: Mapping[str, ImageSpec]) -> ModelSpec:
    image = r.text("image")
    if image not in images:
        raise ConfigError(f"{r.key('image')} = {image!r} is not in `images:` ({', '.join(images)})")
    recipe, relaunch = r.text("recipe", None), r.text("relaunch", None)
    if not recipe and not relaunch:
        raise ConfigError(f"{r.path} needs `recipe:` or `relaunch:` (how the launcher starts it)")
    load = r.items("load_minutes", [10, 13])
    if len(load) != 2 or not all(isinstance(x, int | float) for x in load):
        raise ConfigError(f"{r.key('load_minutes')} must be [min, max] minutes, got {load!r}")
    hf_id = r.text("hf_id")
    return ModelSpec(
        name=name,
        hf_id=hf_id,
        served_name=r.text("served_name", None) or hf_id,
        image=image,
        recipe=recipe,
        relaunch=relaunch,
        master_port=int(r.number("master_port")),
        mods=tuple(str(m) for m in r.items("mods", [])),
        weights_gib=float(r.number("weights_gib")),
        mtp=r.flag("mtp", False),
        load_minutes=(float(load[0]), float(load[1])),
    )


def _image(name: str, r: _Reader) -> ImageSpec:
    e = r.sub("expect")
    return ImageSpec(
        name=name,
        tag=r.text("tag", f"{name}:latest"),
        base=r.text("base", None),
        live=r.flag("live", False),
        build=r.text("build"),
        expect=ImageExpect(
            torch=e.text("torch"),
            cuda=e.text("cuda"),
            vllm=e.text("vllm", None),
            transformers_min=e.text("transformers_min", None),
        ),
    )


def _launcher(r: _Reader) -> LauncherSettings:
    backend = r.text("backend", "auto")
    if backend not in BACKENDS:
        raise ConfigError(f"{r.key('backend')} = {backend!r}: use one of {', '.join(BACKENDS)}")
    wheels = r.text("wheels", "auto")
    if wheels != "auto" and (wheels.startswith("/") or ".." in Path(wheels).parts):
        raise ConfigError(f"{r.key('wheels')} = {wheels!r}: use auto or a directory inside the launcher repo "
                          "(e.g. wheels or .wheel-cache/vllm/regular)")
    raw_args = r.raw("build_args", {})
    if not isinstance(raw_args, Mapping):
        raise ConfigError(f"{r.key('build_args')} must map a generation ({', '.join(LAUNCHER_GENERATIONS)}) "
                          f"to a list of build-and-copy.sh flags, got {raw_args!r}")
    build_args: dict[str, tuple[str, ...]] = {}
    for gen, args in raw_args.items():
        key = f"{r.key('build_args')}.{gen}"
        if gen not in LAUNCHER_GENERATIONS:
            raise ConfigError(f"{key}: unknown generation {gen!r}; use {', '.join(LAUNCHER_GENERATIONS)}")
        if args is None:
            args = []
        if not isinstance(args, list | tuple) or not all(isinstance(a, str) and a for a in args):
            raise ConfigError(f"{key} must be a list of flags (strings), got {args!r}")
        build_args[str(gen)] = tuple(args)
    pin = r.text("pin_commit", None)
    if pin is not None and not re.fullmatch(r"[0-9a-fA-F]{7,40}", pin):
        raise ConfigError(f"{r.key('pin_commit')} = {pin!r}: give the launcher checkout's commit (7-40 hex digits, "
                          "`git -C <launcher_repo> rev-parse HEAD`), or null")
    return LauncherSettings(backend=backend, wheels=wheels, build_args=build_args,
                            pin_commit=pin.lower() if pin else None)


def validate(data: Mapping[str, Any]) -> Settings:
    """Turn the merged raw config into `Settings`, or raise ConfigError naming the bad key."""
    root = _Reader(data, "config")
    c = root.sub("cluster")
    head = _node(c.sub("head"), "head")
    workers = tuple(
        _node(_Reader(w, f"cluster.workers[{i}]"), "worker")
        for i, w in enumerate(c.items("workers"))
    )
    if not workers:
        raise ConfigError("cluster.workers is empty: list the worker nodes")
    names: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for i, n in enumerate((head, *workers)):
        where = "cluster.head" if i == 0 else f"cluster.workers[{i - 1}]"
        for what, value in (("name", n.name), ("mgmt", n.mgmt), ("fabric", n.fabric)):
            seen = names if what == "name" else addresses
            if value in seen:
                raise ConfigError(f"{where}.{what} = {value!r} duplicates {seen[value]}")
            seen[value] = f"{where}.{what}"

    s = c.sub("ssh")
    ssh = SSHSettings(
        user=s.text("user", None),
        key=_path(s.text("key", None)),
        config_file=_path(s.text("config_file", None)),
        known_hosts=_path(s.text("known_hosts", None)),
        accept_new_host_keys=s.flag("accept_new_host_keys", False),
        connect_timeout=int(s.number("connect_timeout", 10)),
        fabric_user=s.text("fabric_user", None),
    )
    images = {str(k): _image(str(k), root.sub("images").sub(str(k))) for k in root.raw("images")}
    for img in images.values():
        if img.base and img.base not in images:
            raise ConfigError(f"images.{img.name}.base = {img.base!r} is not a configured image")
    models = {
        str(k): _model(str(k), root.sub("models").sub(str(k)), images) for k in root.raw("models")
    }
    ports: dict[int, str] = {}
    for m in models.values():
        if m.master_port in ports:
            raise ConfigError(
                f"models.{m.name}.master_port {m.master_port} is also used by {ports[m.master_port]}"
            )
        ports[m.master_port] = m.name

    d, ctl, b = c.sub("disk"), root.sub("control"), root.sub("bench")
    concurrency = b.items("concurrency")
    if not concurrency or not all(isinstance(x, int) and x > 0 for x in concurrency):
        raise ConfigError(f"bench.concurrency must be positive integers, got {concurrency!r}")
    settings = Settings(
        head=head,
        workers=workers,
        ssh=ssh,
        launcher_repo=c.text("launcher_repo"),
        model_root=c.text("model_root"),
        container_name=c.text("container_name"),
        docker=c.text("docker"),
        api_port=int(c.number("api_port")),
        partition_gib=float(d.number("partition_gib")),
        reserve_gib=float(d.number("reserve_gib", 0, positive=False)),
        workspace=Path(ctl.text("workspace")).expanduser(),
        image_backup_dir=Path(ctl.text("image_backup_dir")).expanduser(),
        results_dir=Path(ctl.text("results_dir")).expanduser(),
        ops_log=Path(ctl.text("ops_log")).expanduser(),
        hardware_label=c.text("hardware_label"),
        models=models,
        images=images,
        wheels=tuple(str(w) for w in root.items("wheels", [])),
        bench=BenchDefaults(
            concurrency=tuple(concurrency),
            input_len=int(b.number("input_len")),
            output_len=int(b.number("output_len")),
            requests_per_point=b.number("requests_per_point", None),
            api=b.text("api", "chat"),
        ),
        telemetry=dict(root.raw("telemetry", {}) or {}),
        memory=dict(root.raw("memory", {}) or {}),
        launcher=_launcher(root.sub("launcher")) if root.raw("launcher", None) is not None else LauncherSettings(),
        placeholders=tuple(
            _placeholders(data.get("cluster"), "cluster") + _placeholders(data.get("control"), "control")
        ),
    )
    if settings.placeholders:
        return settings
    if not settings.model_root.startswith("/"):
        raise ConfigError(f"cluster.model_root = {settings.model_root!r} must be an absolute path on the nodes")
    for key, p in (("cluster.ssh.key", ssh.key), ("cluster.ssh.config_file", ssh.config_file)):
        if p is not None and not p.is_file():
            raise ConfigError(f"{key} = {str(p)!r}: no such file on the control node")
    if ssh.known_hosts is not None and not ssh.accept_new_host_keys and not ssh.known_hosts.is_file():
        raise ConfigError(
            f"cluster.ssh.known_hosts = {str(ssh.known_hosts)!r}: no such file on the control node, so host "
            "keys cannot be verified. Fix the path, or set cluster.ssh.accept_new_host_keys: true once to create it"
        )
    return settings


def from_invoke(config: Config | Mapping[str, Any]) -> Settings:
    """Validate an Invoke config (a task's `c.config`) whose defaults came from defaults.yaml."""
    raw = config._config if isinstance(config, Config) else config  # noqa: SLF001
    return validate(raw)


def load(runtime_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load outside a task (notebooks, tests) through the same hierarchy `inv` uses.

    With no `runtime_file`, INVOKE_RUNTIME_CONFIG stands for `inv -f FILE`, as it does for `inv`.
    """
    runtime_file = runtime_file or os.environ.get("INVOKE_RUNTIME_CONFIG") or None
    cfg = Config(
        defaults=merge_dicts(Config.global_defaults(), defaults()),
        project_location=PROJECT_DIR,
        runtime_path=Path(runtime_file) if runtime_file else None,
        overrides=dict(overrides or {}),
    )
    cfg.load_base_conf_files()
    cfg.load_project()
    cfg.load_shell_env()
    if runtime_file:
        if not Path(runtime_file).is_file():
            raise ConfigError(f"config file {runtime_file} does not exist")
        cfg.load_runtime()
    return from_invoke(cfg)
