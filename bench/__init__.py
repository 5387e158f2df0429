"""gx10-ops benchmark harness: an asyncio + aiohttp client for vLLM's OpenAI API.

It knows no SSH: the caller hands it plain data (a URL, a model name, a `SweepConfig`); the one
lazy read of the cluster's config, for the notebooks, is `configview`. What it measures and how:
docs/metrics.md.

Modules: `client` (one streamed request, timed at socket arrival) over `connection` (the stamped
session) and `netstamp` (kernel stamps); `sweep` (closed-loop concurrency sweep, `SweepConfig`,
`run_sweep`) with `prompts`, `pacing` (start gate), `looplag` and `summary` (point summaries);
`shapes` (typed results rows and point summaries); `results` (results on disk, `load_results`,
`points_frame`); `servermetrics` (`/metrics` scraping); `stats` (distributions); `errors` (the
one error root, `BenchError`); `sim` (the simulated vLLM endpoint); `report`, `plots` and
`configview` (what the notebooks call); `cli` (`python -m bench`).
"""
