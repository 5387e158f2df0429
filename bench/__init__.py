"""gx10-ops benchmark harness: an asyncio + aiohttp client for vLLM's OpenAI API.

It knows no SSH and imports no cluster code: the caller hands it plain data (a URL, a model name,
a `SweepConfig`, the loaded config through the `configview` Protocol). What it measures and how:
docs/metrics.md.

Modules: `client` (one streamed request, timed at socket arrival) over `connection` (the stamped
session) and `netstamp` (kernel stamps); `sweep` (closed-loop concurrency sweep, `SweepConfig`,
`run_sweep`) with `prompts`, `pacing` (start gate), `looplag` and `summary` (point summaries);
`shapes` (typed results rows and point summaries); `results` (results on disk, `load_results`,
`points_frame`); `servermetrics` (`/metrics` scraping); `stats` (distributions); `errors` (the
one error root, `BenchError`); `sim` (the simulated vLLM endpoint); `report`, `plots` and
`configview` (the part of the cluster config the report reads); `cli` (`python -m bench`);
`provenance` (the run's card, resume identity), `repeats` (`--repeats N`, mean and 95 % CI),
`compare` (A/B ratios with CIs), `reproduce` (reproduce.md).
"""
