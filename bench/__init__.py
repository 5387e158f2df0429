"""gx10-ops benchmark harness: an asyncio + aiohttp client for vLLM's OpenAI API.

Modules: `client` (one streamed request, timed at socket arrival), `sweep` (closed-loop
concurrency sweep, `SweepConfig`, `run_sweep`), `results` (results on disk, `load_results`,
`points_frame`), `servermetrics` (`/metrics` scraping), `stats` (distributions), `sim`
(the simulated vLLM endpoint), `cli` (`python -m bench`).
"""
