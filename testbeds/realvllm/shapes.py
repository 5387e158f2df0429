"""Fingerprints of what an OpenAI-compatible vLLM endpoint answers (shapes, redacted examples,
chunk order, HTTP statuses, metric families), so the simulator can be compared with the real
server field by field; timing never enters them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from .metrics import metric_shapes
from .server import http_get, http_post_json, sse_events
from .tinymodel import SERVED_MODEL_NAME


def shape_of(value: Any) -> Any:
    """The type structure of a JSON value: objects map keys to shapes, lists hold the union of
    their items' shapes, leaves are ``"str" | "int" | "float" | "bool" | "null"``."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items: list[Any] = []
        for v in value:
            s = shape_of(v)
            if s not in items:
                items.append(s)
        return items
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def shape_diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Human-readable differences between two shapes, one line per differing path."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual)):
            p = f"{path}.{k}"
            if k not in actual:
                out.append(f"{p}: missing (expected {json.dumps(expected[k])})")
            elif k not in expected:
                out.append(f"{p}: unexpected (got {json.dumps(actual[k])})")
            else:
                out += shape_diff(expected[k], actual[k], p)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) == 1 and len(actual) == 1:
            return shape_diff(expected[0], actual[0], f"{path}[]")
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]
    return []


def stream_json(url: str, payload: dict[str, Any]) -> list[Any]:
    """A streaming request's events: parsed JSON chunks, and the final ``"[DONE]"`` as a string."""
    return [e if e == "[DONE]" else json.loads(e) for e in sse_events(url, payload)]


def redact(value: Any) -> Any:
    """A response with per-run values (ids, timestamps, fingerprints) replaced by placeholders."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "id" and isinstance(v, str) and "-" in v:
                out[k] = v.split("-", 1)[0] + "-<hex>"
            elif k == "created" and isinstance(v, int):
                out[k] = "<unix seconds>"
            elif k == "system_fingerprint" and isinstance(v, str):
                out[k] = v.rsplit("-", 1)[0] + "-<hex>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _stream_parts(events: list[Any], *, role_chunk: bool) -> dict[str, Any]:
    """Name the chunks of one stream: first, a content chunk, the finishing one, usage, done."""
    chunks = [e for e in events if e != "[DONE]"]
    parts: dict[str, Any] = {"first": chunks[0]}
    body = [c for c in chunks[1 if role_chunk else 0 :] if c["choices"]]
    parts["content"] = body[0] if role_chunk else body[1]
    parts["finishing"] = next(c for c in body if c["choices"][0]["finish_reason"] is not None)
    if not chunks[-1]["choices"]:
        parts["usage"] = chunks[-1]
    parts["last_event"] = events[-1]
    return parts


def stream_sequence(events: list[Any]) -> list[str]:
    """The order of a stream's chunk kinds, content chunks left out (how many there are varies):
    ``role`` (chat's first, role-only), ``finish`` (carries ``finish_reason``), ``usage``
    (``choices: []``), ``[DONE]``."""
    out = []
    for e in events:
        if e == "[DONE]":
            out.append("[DONE]")
        elif not e["choices"]:
            out.append("usage")
        elif "role" in e["choices"][0].get("delta", {}):
            out.append("role")
        elif e["choices"][0]["finish_reason"] is not None:
            out.append("finish")
    return out


def http_call(url: str, payload: dict[str, Any] | None = None) -> tuple[int, str | None, bytes]:
    """GET, or POST ``payload`` as JSON: (status, Content-Type, body), error statuses included."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120.0) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def fingerprint(
    base_url: str, model: str = SERVED_MODEL_NAME, spec_base_url: str | None = None
) -> dict[str, Any]:
    """What an OpenAI-compatible vLLM endpoint answers, as shapes (and redacted examples).

    The same requests against the real server and the simulator give comparable fingerprints:
    ``shape_diff(real["shapes"], sim["shapes"])``. Timing never enters it. The endpoint must
    have ``max_model_len`` 2048 (the error and clamping samples are sized for it). Keys:
    ``shapes`` and ``examples`` (JSON answers; streams as their first, content, finishing and
    usage chunks), ``sequences`` (each stream's chunk order), ``http`` (status and content type
    per request, ``/health``'s body), ``metrics`` and ``spec_metrics`` (``vllm:`` samples with
    type and label names).
    """
    chat = "/v1/chat/completions"
    comp = "/v1/completions"
    msgs = [{"role": "user", "content": "hello world"}]
    base = {"model": model, "max_tokens": 4, "ignore_eos": True, "temperature": 0}
    usage = {"include_usage": True}
    cont = {"include_usage": True, "continuous_usage_stats": True}
    streams: dict[str, tuple[str, dict[str, Any]]] = {
        "chat_stream": (chat, {**base, "messages": msgs, "stream": True}),
        "chat_stream_usage": (chat, {**base, "messages": msgs, "stream": True, "stream_options": usage}),
        "chat_stream_continuous_token_ids": (
            chat,
            {**base, "messages": msgs, "stream": True, "stream_options": cont, "return_token_ids": True},
        ),
        "completions_stream": (comp, {**base, "prompt": "hello world", "stream": True}),
        "completions_stream_usage": (
            comp,
            {**base, "prompt": "hello world", "stream": True, "stream_options": usage},
        ),
        "completions_stream_continuous_token_ids": (
            comp,
            {**base, "prompt": "hello world", "stream": True, "stream_options": cont, "return_token_ids": True},
        ),
    }
    answers: dict[str, tuple[str, dict[str, Any] | None]] = {
        "chat": (chat, {**base, "messages": msgs}),
        "chat_token_ids": (chat, {**base, "messages": msgs, "return_token_ids": True}),
        "completions": (comp, {**base, "prompt": "hello world"}),
        "completions_token_ids": (comp, {**base, "prompt": "hello world", "return_token_ids": True}),
        # max_tokens shrinks to what the 2048-token context has room for
        "completions_clamped": (comp, {**base, "prompt": " the" * 2040, "max_tokens": 100}),
        "tokenize_prompt": ("/tokenize", {"model": model, "prompt": "hello world"}),
        "tokenize_messages": ("/tokenize", {"model": model, "messages": msgs}),
        "version": ("/version", None),
        "models": ("/v1/models", None),
        "error_unknown_model": (comp, {**base, "model": "no-such-model", "prompt": "hello world"}),
        "error_max_tokens": (comp, {**base, "prompt": "hello world", "max_tokens": 4096}),
        "error_prompt_too_long": (comp, {**base, "prompt": "hello world " * 1100}),
    }
    samples: dict[str, Any] = {}
    sequences: dict[str, list[str]] = {}
    http: dict[str, Any] = {}
    for name, (path, payload) in streams.items():
        status, ctype, _ = http_call(base_url + path, payload)
        http[name] = {"status": status, "content_type": ctype}
        events = stream_json(base_url + path, payload)
        samples[name] = _stream_parts(events, role_chunk=path == chat)
        sequences[name] = stream_sequence(events)
    for name, (path, maybe_payload) in answers.items():
        status, ctype, body = http_call(base_url + path, maybe_payload)
        http[name] = {"status": status, "content_type": ctype}
        samples[name] = json.loads(body)
    status, ctype, body = http_call(f"{base_url}/health")
    http["health"] = {"status": status, "content_type": ctype, "body": body.decode()}
    status, ctype, metrics = http_call(f"{base_url}/metrics")
    http["metrics"] = {"status": status, "content_type": ctype}
    result: dict[str, Any] = {
        "shapes": shape_of(samples),
        "examples": redact(samples),
        "sequences": sequences,
        "http": http,
        "metrics": metric_shapes(metrics.decode()),
    }
    if spec_base_url is not None:
        http_post_json(
            f"{spec_base_url}{comp}",
            {**base, "prompt": "one two three one two three one two three", "max_tokens": 16},
        )
        spec = metric_shapes(http_get(f"{spec_base_url}/metrics")[1].decode())
        result["spec_metrics"] = {k: v for k, v in spec.items() if k.startswith("vllm:spec_")}
    return result


# Values that depend on the model, its tokenizer or the server's version, not on the protocol.
FREE_VALUES = frozenset(
    {
        "content",
        "text",
        "token_ids",
        "prompt_token_ids",
        "tokens",
        "count",
        "prompt_tokens",
        "total_tokens",
        "root",
        "message",
        "version",
        "system_fingerprint",
    }
)
# Samples whose output length follows the prompt's token count (the context is full).
LENGTH_FOLLOWS_PROMPT = frozenset({"completions_clamped"})


def value_diff(expected: Any, actual: Any, path: str = "$", free: frozenset[str] = FREE_VALUES) -> list[str]:
    """Differences of two redacted examples in every value the protocol fixes: object names,
    finish and stop reasons, roles, nulls, flags, error types, parameters and codes, output
    token counts. Values under the keys in ``free`` (model-, tokenizer- or version-dependent)
    are left to ``shape_diff``; lists are compared item by item when their lengths agree."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            d
            for k in sorted(set(expected) & set(actual) - free)
            for d in value_diff(expected[k], actual[k], f"{path}.{k}", free)
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in value_diff(e, a, f"{path}[{i}]", free)
        ]
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]
    return []


def _usages(value: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        usage = value.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:  # not a stream's usage chunk
            yield f"{path}.usage", usage
        for k, v in value.items():
            yield from _usages(v, f"{path}.{k}")


def compare_fingerprints(real: dict[str, Any], other: dict[str, Any]) -> dict[str, list[str]]:
    """How ``other`` (the simulator's fingerprint) differs from ``real``, by aspect; every list
    empty means it answers like the real server. ``metrics``: every family ``other`` exports
    must exist in ``real`` with the same type and labels (the real server exports many more)."""
    out: dict[str, list[str]] = {
        "shapes": shape_diff(real["shapes"], other["shapes"]),
        "values": [
            d
            for name in sorted(set(real["examples"]) & set(other["examples"]))
            for d in value_diff(
                real["examples"][name],
                other["examples"][name],
                f"$.{name}",
                FREE_VALUES | {"completion_tokens"} if name in LENGTH_FOLLOWS_PROMPT else FREE_VALUES,
            )
        ],
        "sequences": shape_diff(real["sequences"], other["sequences"]),
        "http": shape_diff(real["http"], other["http"]),
        "metrics": [
            f"{name}: {json.dumps(entry)}, real: {json.dumps(real['metrics'].get(name))}"
            for name, entry in sorted(other["metrics"].items())
            if real["metrics"].get(name) != entry
        ],
        "spec_metrics": shape_diff(real.get("spec_metrics"), other.get("spec_metrics")),
        "usage": [],
    }
    for path, u in _usages(other["examples"]):
        if u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
            out["usage"].append(f"{path}: total_tokens is not prompt + completion: {u}")
    clamped = other["examples"].get("completions_clamped")
    if clamped is not None and clamped["usage"]["total_tokens"] != real["examples"][
        "completions_clamped"
    ]["usage"]["total_tokens"]:
        out["usage"].append("completions_clamped: max_tokens not shrunk to fill the context")
    for name, fp in real["examples"].items():
        mine = other["examples"].get(name)
        if isinstance(fp, dict) and isinstance(mine, dict) and "system_fingerprint" in mine:
            if not str(mine["system_fingerprint"]).startswith("vllm-"):
                out["values"].append(f"$.{name}.system_fingerprint: {mine['system_fingerprint']}")
    return out

