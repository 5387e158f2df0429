"""Open-loop arrival schedules and the text forms of rates and SLOs.

The schedule is drawn the way `vllm bench serve --request-rate R --burstiness B` draws it
(vllm/benchmarks/serve.py, `get_request`): inter-arrival gaps from a gamma distribution with
shape B and scale 1 / (R * B), so the mean gap is 1 / R whatever B is (B = 1: exponential gaps,
a Poisson process; B < 1 burstier, B > 1 more even; B = inf: constant gaps), summed, then scaled
so the last arrival lands exactly on N / R (vLLM: "close the gap" of 1-2 % a raw sum has, so
runs with different seeds send at the same average rate). The first request waits for its own
gap, as in vLLM. Our generator is numpy's seeded `default_rng(seed)`, so a schedule is
reproducible from (rate, burstiness, seed, n) alone.

Public: `schedule(n, rate, burstiness, seed) -> offsets in seconds`, `parse_rates("1,2,4")`,
`parse_goodput("ttft:500,tpot:50")`, `gamma_cdf(x, shape, scale)`, `ks_statistic(samples, cdf)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

SLO_KEYS = ("ttft", "tpot", "e2el")


def schedule(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send times (seconds from the point's start) of `n` requests at `rate` per second."""
    if n < 1:
        return []
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"request rate must be a positive finite number, got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / rate)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    times = np.cumsum(gaps)
    if times[-1] > 0:
        times *= (n / rate) / times[-1]
    return [float(t) for t in times]


def _positive_number(item: str, what: str, text: str) -> float:
    try:
        value = float(item)
    except ValueError:
        raise ValueError(f"{what} {item!r} is not a number (list: {text!r})") from None
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise ValueError(f"{what} {item!r} must be a positive finite number (list: {text!r})")
    return value


def parse_rates(text: str) -> list[float]:
    """Parse "1,2,4.5" into [1.0, 2.0, 4.5] (requests per second); ValueError naming the item."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise ValueError("request-rate list is empty; give positive numbers like 1,2,4")
    out: list[float] = []
    for item in items:
        value = _positive_number(item, "request rate", text)
        if value in out:
            raise ValueError(f"request rate {item} is listed twice (list: {text!r})")
        out.append(value)
    return out


def parse_burstiness(text: str | float) -> float:
    """A positive burstiness factor ("inf" allowed: constant gaps)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"burstiness {text!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"burstiness {text!r} must be positive (1 = Poisson)")
    return value


_SLO_ITEM = re.compile(r"^(?P<key>[a-z0-9_]+):(?P<num>[0-9]*\.?[0-9]+)(?P<unit>ms|s)?$")


def parse_goodput(text: str) -> dict[str, float]:
    """Parse vLLM's `--goodput` form, "ttft:500 tpot:50" (ms), also comma-separated and with
    an "ms" or "s" unit: {"ttft": 500.0, "tpot": 50.0} in ms. ValueError naming the bad item."""
    items = [s for s in re.split(r"[,\s]+", str(text).strip()) if s]
    if not items:
        raise ValueError("goodput SLO is empty; give e.g. ttft:500ms,tpot:50ms")
    out: dict[str, float] = {}
    for item in items:
        m = _SLO_ITEM.match(item.lower())
        if m is None:
            raise ValueError(f"goodput SLO item {item!r} is not KEY:VALUE[ms|s] "
                             f"(e.g. ttft:500ms,tpot:50ms)")
        key = m["key"]
        if key not in SLO_KEYS:
            raise ValueError(f"goodput SLO key {key!r} is not one of {', '.join(SLO_KEYS)}")
        if key in out:
            raise ValueError(f"goodput SLO key {key!r} is given twice")
        value = float(m["num"]) * (1000.0 if m["unit"] == "s" else 1.0)
        if not value > 0:
            raise ValueError(f"goodput SLO {item!r} must be positive")
        out[key] = value
    return out


def gamma_cdf(x: float, shape: float, scale: float) -> float:
    """P(X <= x) for a gamma(shape, scale) variable (regularized lower incomplete gamma, by its
    series; exact enough for a goodness-of-fit test). shape 1 is the exponential CDF."""
    if x <= 0:
        return 0.0
    z = x / scale
    if shape == 1.0:
        return -math.expm1(-z)
    if z > shape + 40 * math.sqrt(shape) + 40:
        return 1.0
    term = 1.0 / shape
    total = term
    k = 1
    while term > total * 1e-15 and k < 100000:
        term *= z / (shape + k)
        total += term
        k += 1
    return min(1.0, math.exp(shape * math.log(z) - z - math.lgamma(shape)) * total)


def ks_statistic(samples: Sequence[float], cdf: Callable[[float], float]) -> float:
    """Kolmogorov-Smirnov D: the largest distance between the samples' empirical CDF and `cdf`."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def ks_critical(n: int, alpha: float = 0.01) -> float:
    """The asymptotic KS critical value c(alpha) / sqrt(n) (alpha 0.01: 1.628)."""
    c = math.sqrt(-0.5 * math.log(alpha / 2))
    return c / math.sqrt(n)
