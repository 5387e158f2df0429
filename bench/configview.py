"""What the report reads from the cluster's config, as a Protocol: the harness's one seam to it.

bench/ knows no SSH and no module of it imports the cluster package when loaded. The notebooks
resolve a model name against the config (`report.plan`), so the loader below imports
`cluster.config` (pure config through Invoke's hierarchy, no Fabric) lazily, and only when no
settings were handed in (`inv report` passes its `-f` file on as `config_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol


class ModelView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def served_name(self) -> str: ...


class BenchDefaultsView(Protocol):
    @property
    def concurrency(self) -> tuple[int, ...]: ...

    @property
    def input_len(self) -> int: ...

    @property
    def output_len(self) -> int: ...

    @property
    def requests_per_point(self) -> int | None: ...

    @property
    def api(self) -> str: ...


class ClusterConfig(Protocol):
    """The part of `cluster.config.Settings` the report uses."""

    @property
    def models(self) -> Mapping[str, Any]: ...

    @property
    def configured(self) -> bool: ...

    @property
    def api_url(self) -> str: ...

    @property
    def hardware_label(self) -> str: ...

    @property
    def bench(self) -> BenchDefaultsView: ...

    def model(self, name: str | None) -> ModelView: ...


def load(config_file: str | None = None) -> ClusterConfig:
    """The cluster config through Invoke's hierarchy; the runtime file as `inv -f` would take it."""
    from cluster.config import load as load_config  # the one import of cluster/ in bench/

    return load_config(config_file or os.environ.get("INVOKE_RUNTIME_CONFIG") or None)
