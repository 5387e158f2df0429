"""Distribution summaries with one fixed definition, so every number in results.json agrees.

Percentiles use linear interpolation between closest ranks (numpy's default, also what
`vllm bench serve` uses), so p50 of [1, 2] is 1.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.shapes import Distribution


def summarize(values: Sequence[float]) -> Distribution:
    """count, mean, std (population), min, p50, p90, p95, p99, max; None when empty."""
    if len(values) == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "p50": None, "p90": None,
                "p95": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {
        "count": int(arr.size),
        "mean": float(arr.mean()),
        "std": float(arr.std()),
        "min": float(arr.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(arr.max()),
    }
