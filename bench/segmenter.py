"""Streaming segmentation over the corpus: how long each splitter makes the first request wait.

Run: ``.venv/bin/python -m bench.segmenter``. Every reply of ``shared/corpus/replies.jsonl`` is fed as
LLM tokens of 1-4 characters (seeded, the same tokens for every splitter) to:

* ``Segmenter`` (this project; defaults ``first_min_chars=6`` units, ``target_chars=80``),
* LiveKit's default for non-streaming TTS, ``StreamAdapter``'s ``blingfire.SentenceTokenizer``
  (``min_sentence_len=20`` characters, ``stream_context_len=10``): one TTS request per emitted token,
* Pipecat's ``SimpleTextAggregator`` (what ``TTSService`` aggregates with): one ``run_tts`` per sentence.

For each reply it records how many characters of the reply had arrived when the first request could
leave (the whole reply when only the end of the turn releases it), and how many requests the reply
took. Prints a markdown table of medians, 90th percentiles and means, and the ratios to ours.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from collections.abc import Awaitable, Callable

import numpy as np

from glmtts_plugins.testing import llm_tokens
from glmtts_plugins.text import Segmenter

from . import _corpus


async def ours(tokens: list[str]) -> tuple[int | None, int]:
    seg, first, requests, seen = Segmenter(), None, 0, 0
    for tok in tokens:
        seen += len(tok)
        pieces = seg.push(tok)
        if pieces and first is None:
            first = seen
        requests += len(pieces)
    requests += len(seg.flush())
    return first, requests


async def livekit(tokens: list[str]) -> tuple[int | None, int]:
    from livekit.agents.tokenize import blingfire

    stream = blingfire.SentenceTokenizer(retain_format=True).stream()  # what StreamAdapter builds
    first, requests, seen = None, 0, 0
    for tok in tokens:
        seen += len(tok)
        stream.push_text(tok)
        await asyncio.sleep(0)
        while stream._event_ch.qsize():  # tokens emitted so far (push_text emits synchronously)
            stream._event_ch.recv_nowait()
            requests += 1
            first = seen if first is None else first
    stream.end_input()
    async for _ in stream:
        requests += 1
    await stream.aclose()
    return first, requests


async def pipecat(tokens: list[str]) -> tuple[int | None, int]:
    from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

    agg = SimpleTextAggregator()
    first, requests, seen = None, 0, 0
    for tok in tokens:
        seen += len(tok)
        async for aggregation in agg.aggregate(tok):
            if aggregation.text.strip():
                requests += 1
                first = seen if first is None else first
    rest = await agg.flush()
    if rest and rest.text.strip():
        requests += 1
    return first, requests


SPLITTERS: dict[str, Callable[[list[str]], Awaitable[tuple[int | None, int]]]] = {
    "glmtts Segmenter (ours)": ours,
    "LiveKit StreamAdapter (blingfire, min_sentence_len=20)": livekit,
    "Pipecat SimpleTextAggregator": pipecat,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="token splittings per reply (seeds)")
    args = parser.parse_args()
    replies = _corpus.replies()
    waited: dict[str, list[int]] = {name: [] for name in SPLITTERS}
    requests: dict[str, list[int]] = {name: [] for name in SPLITTERS}
    only_at_end = dict.fromkeys(SPLITTERS, 0)
    for seed in range(args.runs):
        rng = random.Random(seed)
        for text in replies:
            tokens = llm_tokens(text, rng)
            for name, fn in SPLITTERS.items():
                first, n = await fn(tokens)
                if first is None:
                    only_at_end[name] += 1
                waited[name].append(len(text) if first is None else first)
                requests[name].append(n)
    total = len(replies) * args.runs
    print(f"{len(replies)} replies x {args.runs} token splittings (1-4 characters per token)\n")
    print(
        "| splitter | chars before 1st request: median | p90 | mean | vs ours (median) "
        "| 1st request only at end of reply | requests per reply (mean) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = statistics.median(waited["glmtts Segmenter (ours)"])
    for name in SPLITTERS:
        w = waited[name]
        print(
            f"| {name} | {statistics.median(w):.0f} | {np.percentile(w, 90):.0f} | {statistics.mean(w):.1f} "
            f"| {statistics.median(w) / base:.2f}x | {only_at_end[name] / total:.0%} "
            f"| {statistics.mean(requests[name]):.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
