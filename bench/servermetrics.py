"""Server-side numbers from vLLM's Prometheus `/metrics`, parsed with prometheus_client.

Counters are read before and after a concurrency point and reported as deltas; gauges are
sampled during the point. A counter the server does not export (no speculative decoding, an
older vLLM) is reported as absent (`None` and listed in `absent`), never as zero, because a zero
acceptance rate and "no speculative decoding" mean different things.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.aiotools import cancel_and_wait
from bench.shapes import GaugeSummary, ServerSummary

COUNTERS = {
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "spec_drafts": "vllm:spec_decode_num_drafts_total",
    "spec_draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
    "spec_accepted_tokens": "vllm:spec_decode_num_accepted_tokens_total",
}
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
# Older vLLM releases call the KV gauge gpu_cache_usage_perc; the first name present wins.
GAUGES = {
    "num_requests_running": ("vllm:num_requests_running",),
    "num_requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage_perc": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}


@dataclass
class Snapshot:
    """Counter and gauge values from one scrape, summed over engines for our model."""

    counters: dict[str, float] = field(default_factory=dict)
    per_pos: dict[int, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)


WANTED = frozenset([*COUNTERS.values(), PER_POS, *(n for names in GAUGES.values() for n in names)])


def _wanted_lines(text: str) -> str:
    """The samples we read, with their HELP and TYPE lines.

    A real vLLM exports ~600 series (57 KB; 12 ms to parse whole here). The parse runs on the
    event loop that stamps chunk arrivals, so every chunk arriving meanwhile was stamped late;
    filtering first makes it well under a millisecond.
    """
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in WANTED:
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse_metrics(text: str, model: str | None = None) -> Snapshot:
    """Parse Prometheus text; keep samples whose `model_name` is `model` (or that have none)."""
    snap = Snapshot()
    text = _wanted_lines(text)
    wanted_counters = {v: k for k, v in COUNTERS.items()}
    gauge_names = {name: key for key, names in GAUGES.items() for name in names}
    gauge_found: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            mname = s.labels.get("model_name")
            if model is not None and mname is not None and mname != model:
                continue
            if s.name in wanted_counters:
                key = wanted_counters[s.name]
                snap.counters[key] = snap.counters.get(key, 0.0) + s.value
            elif s.name == PER_POS and "position" in s.labels:
                pos = int(s.labels["position"])
                snap.per_pos[pos] = snap.per_pos.get(pos, 0.0) + s.value
            elif s.name in gauge_names:
                key = gauge_names[s.name]
                if gauge_found.setdefault(key, s.name) == s.name:
                    snap.gauges[key] = snap.gauges.get(key, 0.0) + s.value
    return snap


async def scrape(session: aiohttp.ClientSession, base_url: str, model: str | None) -> Snapshot:
    """One `/metrics` scrape; an empty Snapshot when the server has no metrics endpoint."""
    try:
        async with session.get(base_url.rstrip("/") + "/metrics") as resp:
            if resp.status != 200:
                return Snapshot()
            return parse_metrics(await resp.text(), model)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return Snapshot()


class GaugeSampler:
    """Samples the gauges every `interval_s` in the background while a point runs."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str | None,
                 interval_s: float = 0.5) -> None:
        self._session = session
        self._base_url = base_url
        self._model = model
        self._interval = interval_s
        self.samples: dict[str, list[float]] = {k: [] for k in GAUGES}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            snap = await scrape(self._session, self._base_url, self._model)
            for key, value in snap.gauges.items():
                self.samples[key].append(value)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def summary(self) -> dict[str, GaugeSummary | None]:
        out: dict[str, GaugeSummary | None] = {}
        for key, vals in self.samples.items():
            out[key] = ({"max": max(vals), "mean": sum(vals) / len(vals), "samples": len(vals)}
                        if vals else None)
        return out


def counter_deltas(before: Snapshot, after: Snapshot) -> ServerSummary:
    """Deltas and speculative-decoding rates over a window; absent counters stay None."""
    deltas: dict[str, float | None] = {}
    absent: list[str] = []
    for key in COUNTERS:
        if key in before.counters and key in after.counters:
            deltas[key] = after.counters[key] - before.counters[key]
        else:
            deltas[key] = None
            absent.append(COUNTERS[key])
    drafts = deltas["spec_drafts"]
    draft_tokens = deltas["spec_draft_tokens"]
    accepted = deltas["spec_accepted_tokens"]
    rate = accepted / draft_tokens if accepted is not None and draft_tokens else None
    length = 1 + accepted / drafts if accepted is not None and drafts else None
    per_pos: list[float] | None = None
    if after.per_pos and drafts:
        per_pos = [(after.per_pos[p] - before.per_pos.get(p, 0.0)) / drafts
                   for p in sorted(after.per_pos)]
    elif not after.per_pos:
        absent.append(PER_POS)
    return {"counters": deltas, "acceptance_rate": rate, "acceptance_length": length,
            "acceptance_per_pos": per_pos, "absent": absent}


def all_samples(text: str) -> list[tuple[str, str, dict[str, str], float]]:
    """Every sample of a scrape as (family type, sample name, labels, value), nothing filtered or
    summed: for readers that need more than the counters and gauges above (the real-vLLM checks)."""
    return [(f.type, s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
