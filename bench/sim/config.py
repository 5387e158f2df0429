"""The simulated endpoint's knobs and its tokenizer (one token per word, ChatML-like framing).

Every timing and fault knob is a `SimConfig` field; what each one models is in the package
docstring (`bench.sim`) and docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class SimConfig:
    """Knobs of the simulated endpoint; defaults look like a small model on a fast GPU."""

    model: str = "sim-model"
    max_model_len: int = 32768
    version: str = "0.32.0+sim"
    prefill_base_s: float = 0.004
    prefill_per_token_s: float = 0.000005
    decode_base_s: float = 0.010
    decode_per_seq_s: float = 0.00002
    max_batch: int = 256
    spec_tokens: int = 0
    spec_accept: float = 0.7
    seed: int = 0
    kv_capacity_tokens: int = 1_000_000
    load_delay_s: float = 0.0
    fail_every: int = 0
    fail_status: int = 500
    cut_every: int = 0
    stall_every: int = 0
    stall_s: float = 5.0
    malformed_every: int = 0
    fault_after_tokens: int = 4
    wedge_after_tokens: int = 0   # >0: after this many tokens in all, every stream goes silent
    generate_delay_s: float = 0.0  # completions answer 503 until this long after start (health may be 200)
    # A reasoning model (chat only): the first this many tokens of every answer stream as
    # `delta.reasoning` (vLLM's field), the rest as `delta.content`; the truth records the split.
    reasoning_tokens: int = 0
    record_truth: bool = True
    # Truth records kept (the newest): a test asks about the requests it just sent, and a day-long
    # soak against the embedded endpoint must not grow by one record per request.
    truth_keep: int = 4096

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SimConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


def count_tokens(text: str) -> int:
    """The simulated tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Tokens of a ChatML-like template: 4 per message of framing, 3 for the generation prompt."""
    total = 3
    for m in messages:
        content = m.get("content", "")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        total += 4 + count_tokens(str(content))
    return total
