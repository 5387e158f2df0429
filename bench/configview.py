"""What the report reads from the cluster's config, as a Protocol: the harness's one seam to it.

bench/ imports no cluster code: the caller (tasks.py, a notebook) loads `cluster.config.Settings`
and hands it in; this Protocol says which part of it the report uses.
"""

from __future__ import annotations

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
