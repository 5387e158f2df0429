"""A simulated vLLM OpenAI-compatible endpoint: the embedded default and the tests' ground truth.

It speaks what `vllm serve` speaks on the paths the harness and the cluster tasks use
(`/health`, `/version`, `/v1/models`, `/tokenize`, `/v1/completions`, `/v1/chat/completions`,
`/metrics`) with vLLM's stream shape: a role-only first chat chunk, running usage per chunk when
`stream_options.continuous_usage_stats` is set, a final usage chunk with empty `choices`, then
`data: [DONE]`.

Timing model (all knobs in `SimConfig`): one asyncio engine loop runs steps back to back, like a
GPU worker. A step takes `decode_base_s + decode_per_seq_s * batch`, plus `prefill_base_s +
prefill_per_token_s * prompt_tokens` when it admits new requests (chunked prefill in one step).
At most `max_batch` requests run; the rest queue (`vllm:num_requests_waiting`). Each step gives an
admitted request its first token and every decoding request `1 + accepted` tokens, where with
`spec_tokens = k` (MTP) each of the k draft tokens is accepted in order with probability
`spec_accept` (seeded RNG), so chunks carry several tokens. Steps end at absolute deadlines so the
schedule does not drift.

Truth, per request keyed by the client's `X-Request-Id` header (clock: `time.perf_counter_ns()`,
CLOCK_MONOTONIC, so comparable across processes on one Linux host): `t_recv_ns`, when the
request's last byte arrived (the kernel's receive stamp of the socket read that completed it,
see `bench.netstamp`; `recv_source` says "kernel", or "read" where the kernel gave none), with
`t_read_ns` (when this server's loop read it) and `t_handler_ns` (when the handler began) beside
it, so the server's own queueing is visible; and per chunk `[t_sent, tokens, kind, t_write,
t_returned]`: `t_sent` is the kernel's stamp of the chunk's bytes leaving the socket
(`send_source: "kernel"`; where there is none, `t_returned` and `"write"`), `t_write` is taken
just before the write started and `t_returned` after it returned. What the server did, not what
it planned. `queued_writes` counts writes that the transport had to buffer (sent later, so they
fall back to `t_returned`; on loopback it stays 0). `drafts` lists, per step that drafted for
the request, how many of its draft tokens were accepted (also for tokens past `max_tokens` that
were never sent, as vLLM counts them). In process read `SimServer.truth`; out of process
`GET /sim/truth`. A reasoning model (`reasoning_tokens` R > 0, chat only) streams its first R
tokens as `delta.reasoning` (vLLM's field; chunk kind "reasoning" in the truth) and the rest
as `delta.content`; a step that crosses the boundary is sent as two events, and the record's
`reasoning_tokens` is the true split. Only the newest `truth_keep` records (default 4096) are kept, so memory
stays flat however many requests a soak sends.

Faults: `fail_every` (every Nth request answers HTTP `fail_status`), `cut_every` (the stream is
cut after `fault_after_tokens` tokens), `stall_every` (the stream stops for `stall_s`),
`malformed_every` (one event is not JSON), `wedge_after_tokens` (a wedged engine, as after an
NCCL hang: once that many tokens went out in all, every stream and every new request stays open
and silent, `/health` stays 200), `generate_delay_s` (`/health` answers 200 before the engine
can generate: completions answer 503 until then).

Modules: `config` (`SimConfig`, the tokenizer), `engine` (step loop, metrics, chunk truth), `app`
(`SimServer`: routes, answer shapes, faults), `runner` (`sim_endpoint(cfg)`, `BackgroundSim`, and
the CLI `python -m bench.sim --host H --port P --model M [--load-delay S] [--config JSON]`).
How the harness is checked against it: docs/metrics.md; against real vLLM: docs/real-vllm.md.
"""

from bench.sim.app import SimServer
from bench.sim.config import SimConfig, chat_prompt_tokens, count_tokens
from bench.sim.runner import BackgroundSim, main, sim_endpoint

__all__ = ["BackgroundSim", "SimConfig", "SimServer", "sim_endpoint", "main",
           "count_tokens", "chat_prompt_tokens"]
