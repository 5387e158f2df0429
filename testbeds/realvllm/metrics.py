"""vLLM's ``/metrics`` as the real-vLLM checks read it: metric families with their type and label
names (for fingerprints), one sample's series by labels, and the token counters around a run.

The text is parsed by prometheus_client through ``bench.servermetrics.all_samples``; what is
selected and summed here is written independently of the harness's ``servermetrics.parse_metrics``,
so a test can check the harness's deltas against it.
"""

from __future__ import annotations

from typing import Any

from bench.servermetrics import all_samples

from .server import http_get
from .tinymodel import SERVED_MODEL_NAME


def metric_shapes(text: str) -> dict[str, dict[str, Any]]:
    """Prometheus text -> ``{sample name: {"type": family type, "labels": [names]}}``.

    Only ``vllm:`` samples; label names are the union over that sample name's series, so a
    histogram's ``_bucket`` lists ``le``. A sample with no TYPE is ``untyped`` (the exposition
    format's word; prometheus_client says ``unknown``).
    """
    out: dict[str, dict[str, Any]] = {}
    for kind, name, labels, _ in all_samples(text):
        if not name.startswith("vllm:"):
            continue
        entry = out.setdefault(name, {"type": "untyped" if kind == "unknown" else kind, "labels": []})
        entry["labels"] = sorted(set(entry["labels"]) | set(labels))
    return out


def metric_values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every series of sample ``name``: its sorted label pairs -> value."""
    return {tuple(sorted(labels.items())): value for _, sample, labels, value in all_samples(text) if sample == name}


TOKEN_COUNTERS = (
    "prompt_tokens",
    "generation_tokens",
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
)


def read_counters(base_url: str, model: str = SERVED_MODEL_NAME) -> dict[str, float]:
    """vLLM's token and speculative-decoding counters (``vllm:<name>_total``) for ``model``.

    Selected and summed here, not by ``bench.servermetrics.parse_metrics``, so a test can check
    the harness's deltas against an independent reading. Accepted tokens per
    draft position come as ``accepted_per_pos_<i>``; counters the server lacks are left out.
    """
    text = http_get(f"{base_url}/metrics")[1].decode()
    out: dict[str, float] = {}
    for name in TOKEN_COUNTERS:
        values = [
            v
            for labels, v in metric_values(text, f"vllm:{name}_total").items()
            if dict(labels).get("model_name") == model
        ]
        if values:
            out[name] = sum(values)
    per_pos = metric_values(text, "vllm:spec_decode_num_accepted_tokens_per_pos_total")
    for labels, v in per_pos.items():
        d = dict(labels)
        if d.get("model_name") == model:
            key = f"accepted_per_pos_{d['position']}"
            out[key] = out.get(key, 0.0) + v
    return out


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` for every counter present in ``after``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}

