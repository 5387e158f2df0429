"""The reasoning split of one request: time to the first reasoning token and to the first answer
token, and the tokens of each kind (docs/metrics.md, "Reasoning models").

A reasoning model streams its thinking as `delta.reasoning` (vLLM; `reasoning_content` in older
versions) before the answer's `delta.content`. TTFT stays the first event of either kind; these
split it. A chunk's tokens are its n_k (server usage), so the two counts sum to N. A chunk that
carries both kinds (the boundary, where a server merges them) counts as answer.

Public: `split(result) -> ReasoningSplit | None` (None: no reasoning in the stream),
`summarize_split(results)` (the point's distributions, None when no request reasoned).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from bench.client import REASONING, RequestResult
from bench.shapes import Distribution
from bench.stats import summarize


class ReasoningSplit(TypedDict):
    ttfr_ms: float                # first reasoning token - t_send
    ttfa_ms: float | None         # first answer token - t_send (None: the answer never came)
    reasoning_tokens: int
    answer_tokens: int


def split(res: RequestResult) -> ReasoningSplit | None:
    if not res.ok or res.t_first_reasoning_ns is None:
        return None
    kinds = res.chunk_kinds
    reasoning = sum(n for n, k in zip(res.chunk_tokens, kinds, strict=False) if k == REASONING)
    total = sum(res.chunk_tokens)
    return {
        "ttfr_ms": (res.t_first_reasoning_ns - res.t_send_ns) / 1e6,
        "ttfa_ms": (None if res.t_first_answer_ns is None
                    else (res.t_first_answer_ns - res.t_send_ns) / 1e6),
        "reasoning_tokens": reasoning,
        "answer_tokens": total - reasoning,
    }


def summarize_split(results: Sequence[RequestResult]) -> dict[str, Distribution] | None:
    """Per point: distributions of the four figures over the requests that reasoned."""
    splits = [s for s in (split(r) for r in results) if s is not None]
    if not splits:
        return None
    return {
        "ttfr_ms": summarize([s["ttfr_ms"] for s in splits]),
        "ttfa_ms": summarize([s["ttfa_ms"] for s in splits if s["ttfa_ms"] is not None]),
        "reasoning_tokens": summarize([float(s["reasoning_tokens"]) for s in splits]),
        "answer_tokens": summarize([float(s["answer_tokens"]) for s in splits]),
    }
