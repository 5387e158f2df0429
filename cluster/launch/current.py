"""What serves now, and stopping it. Single tenancy hangs on naming the model that holds the
cluster: asked of its API first, else the launch record, else the image its containers run."""

from __future__ import annotations

from dataclasses import dataclass

from .. import serving
from ..config import Node
from ..containers import Found, Survey, guess_models, remove, survey
from ..remote import Cluster, RemoteError


@dataclass
class Current:
    containers: list[Found]
    model: str | None
    how: str  # how the model was told: "its API", "the launch record", "its image", ""

    def describe(self) -> str:
        model = f"{self.model} (by {self.how})" if self.model else "an unknown model"
        where = ", ".join(f"{f.name} on {f.node}" for f in self.containers)
        return f"{model}: {where}"


def identify(cluster: Cluster, sv: Survey) -> Current:
    s = cluster.settings
    by_api = serving.served_by_api(s)
    if by_api:
        return Current(sv.all, by_api, "its API")
    record = serving.recorded_launch(cluster)
    if record and record.get("model"):
        return Current(sv.all, str(record["model"]), "the launch record")
    guessed = guess_models(s, sv.all)
    if len(guessed) == 1:
        return Current(sv.all, guessed[0], "its image")
    return Current(sv.all, None, "")


def require_survey(sv: Survey, what: str) -> None:
    if sv.failed:
        raise RemoteError(what, sv.failed)


def stop(cluster: Cluster, nodes: tuple[Node, ...]) -> Current:
    """Remove the serving containers on `nodes` (all: also the launch record)."""
    sv = survey(cluster, nodes)
    cur = identify(cluster, sv)
    if cur.containers:
        cluster.say(f"stopping {cur.describe()}")
        remove(cluster, cur.containers)
    else:
        cluster.say(f"no serving container on {', '.join(n.name for n in nodes)}")
    if len(nodes) == len(cluster.nodes):
        serving.remove_record(cluster)
    elif cur.containers:
        cluster.say("the launch record stays: the model is no longer complete; `inv stop` stops the rest")
    require_survey(sv, "listing containers")
    return cur
