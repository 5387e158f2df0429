"""Prompts: the word list, unique deterministic prompts, and fitting them to a token count.

The sweep and the simulated endpoint share the word list (the simulator's output text is drawn
from it too). A prompt is seeded by run seed, concurrency and index, its unique words first so no
two requests share a prefix-cache block. A real tokenizer gives a word one to several tokens, so
each prompt is fitted through the server's `/tokenize` (docs/metrics.md, "Workload").
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import aiohttp

from bench import client

if TYPE_CHECKING:
    from bench.sweep import SweepConfig

WORDS = (
    "the of and to in is it that for on was with as at by be this from or an are not have "
    "but had they his her which one you all were we there can been has more when will would "
    "who so no if out time up into do about than them only other new some could these two may "
    "first then any like now my such over our even most made after also did many before must "
    "through back years where much your way well down should because each just those people "
    "how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three"
).split()

FIT_TRIES = 12  # /tokenize calls to find the word count, per prompt
FILL_TRIES = 48  # words tried, to fill a gap that one word more overshoots
FIT_PARALLEL = 8


def make_prompt(seed: int, c: int, i: int, words: int) -> str:
    """A unique, deterministic prompt of `words` words; the unique part comes first."""
    rng = random.Random(f"{seed}/{c}/{i}")
    head = [f"r{seed}c{c}i{i}"]
    body = [rng.choice(WORDS) for _ in range(max(0, words - 1))]
    return " ".join(head + body)


async def _count_tokens(session: aiohttp.ClientSession, cfg: SweepConfig,
                        prompt: str) -> int | None:
    body: dict[str, Any] = {"model": cfg.model}
    if cfg.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    try:
        async with session.post(cfg.base_url.rstrip("/") + "/tokenize", json=body) as resp:
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
            return int(data["count"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None


async def fit_prompt(session: aiohttp.ClientSession, cfg: SweepConfig, c: int, i: int,
                     words: int) -> tuple[str, int | None]:
    """Prompt `i` of point `c` with `input_len` tokens by the server's `/tokenize`, and its count.

    Real tokenizers give a word one to several tokens, so the word count that hits the target
    differs per prompt: search it from `words` (adding a word never removes tokens), then, when
    one word more overshoots, append other words that do not, until the count is exact. Returns
    the closest prompt not over the target when that fails, and count None without `/tokenize`.
    """
    target = cfg.input_len
    counts: dict[int, int] = {}
    lo, hi = 0, None  # the largest word count known under the target, the smallest over it
    w = max(1, words)
    for _ in range(FIT_TRIES):
        n = await _count_tokens(session, cfg, make_prompt(cfg.seed, c, i, w))
        if n is None:
            return make_prompt(cfg.seed, c, i, max(1, words)), None
        counts[w] = n
        if n == target:
            return make_prompt(cfg.seed, c, i, w), n
        if n < target:
            lo = max(lo, w)
        else:
            hi = w if hi is None else min(hi, w)
        if hi is not None and hi - lo <= 1:
            break
        step = round((target - n) * w / n) or (1 if n < target else -1)
        w = min(max(w + step, lo + 1), hi - 1 if hi is not None else w + step)
    if lo == 0:
        return make_prompt(cfg.seed, c, i, 1), counts.get(1)
    prompt, n = make_prompt(cfg.seed, c, i, lo), counts[lo]
    rng = random.Random(f"fill/{cfg.seed}/{c}/{i}")
    for word in rng.sample(WORDS, min(FILL_TRIES, len(WORDS))):
        m = await _count_tokens(session, cfg, f"{prompt} {word}")
        if m is not None and m <= target:
            prompt, n = f"{prompt} {word}", m
            if n == target:
                break
    return prompt, n


async def fit_prompts(cfg: SweepConfig, c: int, total: int, words: int) -> list[str]:
    """The prompts of one point, each fitted to `input_len` tokens (before the point starts)."""
    sem = asyncio.Semaphore(FIT_PARALLEL)
    async with client.make_session(FIT_PARALLEL, cfg.timeouts) as session:
        async def one(i: int) -> str:
            async with sem:
                return (await fit_prompt(session, cfg, c, i, words))[0]
        return list(await asyncio.gather(*(one(i) for i in range(total))))


async def calibrate_words(cfg: SweepConfig) -> tuple[int, bool]:
    """Words per prompt that make `input_len` tokens; (words, calibrated via /tokenize?)."""
    async with client.make_session(1, cfg.timeouts) as session:
        prompt, count = await fit_prompt(session, cfg, 0, 0, cfg.input_len)
    if count is None:
        return cfg.input_len, False
    return len(prompt.split()), True
