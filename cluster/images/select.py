"""Which images to act on and in what order (a base before the images built on it), the tags
prune must never touch, and which image ID each node holds under a tag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ImageSpec, Node, Settings
from ..facts import normalize_id
from ..remote import Cluster, Result
from ..shell import q
from .errors import ImagesError


def lineage_order(settings: Settings, names: Iterable[str]) -> list[ImageSpec]:
    """`names` sorted so that a base comes before the images built on it (config order else)."""
    wanted = list(dict.fromkeys(names))
    position = list(settings.images)
    return [settings.image(n) for n in
            sorted(wanted, key=lambda n: (len(ancestors(settings, settings.image(n))), position.index(n)))]


def select(settings: Settings, name: str | None) -> list[ImageSpec]:
    """`--image NAME` -> that image; none -> every live image, in lineage order."""
    if name:
        return [settings.image(name)]
    live = [n for n, spec in settings.images.items() if spec.live]
    if not live:
        raise ImagesError("no image is marked `live: true` under `images:`; name one with --image")
    return lineage_order(settings, live)


def protected_tags(settings: Settings) -> dict[str, str]:
    """Tags that must never be pruned: every live image and, recursively, its bases."""
    out: dict[str, str] = {}
    for spec in settings.images.values():
        if not spec.live:
            continue
        out[spec.tag] = "live"
        child = spec
        while child.base:
            base = settings.image(child.base)
            out.setdefault(base.tag, f"base of {child.name}")
            child = base
    return out


# -- what each node holds --------------------------------------------------------------------
@dataclass(frozen=True)
class Present:
    id: str  # normalized hex
    size: int  # bytes, as the engine reports the image


def inspect_command(docker: str, tags: Iterable[str]) -> str:
    d = q(docker)
    lines = []
    for tag in tags:
        lines.append(
            f"printf '%s\\t%s\\n' {q(tag)} \"$({d} image inspect --format '{{{{.Id}}}} {{{{.Size}}}}' "
            f"{q(tag)} 2>/dev/null || echo -)\""
        )
    return "\n".join(lines)


def parse_inspect(stdout: str) -> dict[str, Present | None]:
    out: dict[str, Present | None] = {}
    for line in stdout.splitlines():
        tag, _, rest = line.partition("\t")
        parts = rest.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[tag] = Present(normalize_id(parts[0]), int(parts[1]))
        elif tag:
            out[tag] = None
    return out


def image_states(
    cluster: Cluster, nodes: Iterable[Node], tags: Iterable[str]
) -> tuple[dict[str, dict[str, Present | None]], dict[str, Result]]:
    """Per reachable node, tag -> what it holds (None: absent); and the nodes that did not answer."""
    tags = list(tags)
    results = cluster.run_all(inspect_command(cluster.settings.docker, tags), list(nodes), timeout=120)
    states = {name: parse_inspect(r.stdout) for name, r in results.items() if r.ok}
    failed = {name: r for name, r in results.items() if not r.ok}
    return states, failed


def held(cluster: Cluster, node: Node, tag: str) -> Present | None:
    """What `node` holds under `tag` now (None: absent, or the node did not answer)."""
    return image_states(cluster, [node], [tag])[0].get(node.name, {}).get(tag)


def head_image(cluster: Cluster, spec: ImageSpec) -> Present:
    """The image as the head holds it, or an error saying how to get it there."""
    states, failed = image_states(cluster, [cluster.head], [spec.tag])
    head = cluster.head.name
    if head in failed:
        raise ImagesError(f"cannot inspect {spec.tag} on {head}: {failed[head].why()}")
    present = states[head].get(spec.tag)
    if present is None:
        raise ImagesError(
            f"{head} has no {spec.tag}: build it (`inv rebuild --image {spec.name}`) or restore it "
            f"from the control's backup (`inv restore --image {spec.name} --node {head}`)"
        )
    return present


def short(image_id: str) -> str:
    return normalize_id(image_id)[:12]


def ancestors(settings: Settings, spec: ImageSpec) -> list[str]:
    out = []
    while spec.base:
        out.append(spec.base)
        spec = settings.image(spec.base)
    return out
