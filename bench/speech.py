"""End to end: LLM tokens in, audio a listener hears out — time to first audio and silence between pieces.

Run: ``.venv/bin/python -m bench.speech`` (``--replies 40`` for the whole corpus). The local server runs in
its own process with the offline engine (real speech durations for Chinese and English) behind a 300 ms
first byte and real-time factor 0.5 (``--first-byte-ms 300 --rtf 0.5``, the defaults).
Each reply is streamed as LLM tokens of 1-4 characters every ``--token-ms`` (30 ms: ~80 characters a
second) and spoken three ways through the same ``CloudEngine``:

* ``speak_stream`` (this project): segmenter, next piece requested while the current one streams;
* the same pieces with ``prefetch=0``, to show what prefetch alone is worth;
* sequential per-sentence requests: sentences from Pipecat's ``SimpleTextAggregator``, each requested
  when the previous one has finished, as a TTS service that handles one sentence at a time does.

A simulated listener plays every frame in real time as soon as it has arrived and the previous one has
finished. Time to first audio counts from the first LLM token; silence is the sum of the gaps in
playback after the first frame (the listener waiting for audio mid-reply).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from glmtts_plugins import CloudEngine, RetryPolicy, Synthesizer

from . import _corpus
from ._playback import Listener, llm
from ._server import TOKEN, server_process


async def ours(engine: CloudEngine, tokens: AsyncIterator[str], ear: Listener, prefetch: int) -> int:
    utt = Synthesizer(engine, sample_rate=16000, prefetch=prefetch).speak_stream(tokens)
    async for frame in utt:
        ear.hear(frame.duration_ms)
    return len(utt.segments)


async def sequential(engine: CloudEngine, tokens: AsyncIterator[str], ear: Listener) -> int:
    from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

    sentences: asyncio.Queue[str | None] = asyncio.Queue()

    async def aggregate() -> None:
        agg = SimpleTextAggregator()
        async for tok in tokens:
            async for sentence in agg.aggregate(tok):
                sentences.put_nowait(sentence.text)
        rest = await agg.flush()
        if rest and rest.text.strip():
            sentences.put_nowait(rest.text)
        sentences.put_nowait(None)

    synth = Synthesizer(engine, sample_rate=16000, prefetch=0)
    feeder = asyncio.create_task(aggregate())
    requests = 0
    while (sentence := await sentences.get()) is not None:
        requests += 1
        async for frame in synth.speak(sentence):
            ear.hear(frame.duration_ms)
    await feeder
    return requests


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=12, help="how many corpus replies (max 40)")
    parser.add_argument("--token-ms", type=float, default=30.0, help="pause between LLM tokens")
    parser.add_argument("--first-byte-ms", type=float, default=300.0, help="server's time to first audio")
    parser.add_argument("--rtf", type=float, default=0.5, help="server's real-time factor")
    args = parser.parse_args()
    replies = _corpus.replies()
    replies = random.Random(7).sample(replies, min(args.replies, len(replies)))
    ways: dict[str, Callable[[CloudEngine, AsyncIterator[str], Listener], Awaitable[int]]] = {
        "speak_stream, prefetch 1 (ours)": lambda e, t, ear: ours(e, t, ear, 1),
        "speak_stream, prefetch 0": lambda e, t, ear: ours(e, t, ear, 0),
        "sequential per-sentence (Pipecat SimpleTextAggregator)": sequential,
    }
    ttfa: dict[str, list[float]] = {name: [] for name in ways}
    silence: dict[str, list[float]] = {name: [] for name in ways}
    requests: dict[str, list[int]] = {name: [] for name in ways}
    retry = RetryPolicy(max_retries=0)
    faults = f"first_byte_ms={args.first_byte_ms:g};rtf={args.rtf:g}"
    with server_process(faults, engine="offline") as base_url:
        async with CloudEngine(api_key=TOKEN, base_url=base_url, retry=retry) as engine:
            await engine.prewarm()
            for i, text in enumerate(replies):
                for name, way in ways.items():
                    ear = Listener(time.monotonic())
                    requests[name].append(await way(engine, llm(text, random.Random(i), args.token_ms), ear))
                    first, gaps = ear.result()
                    ttfa[name].append(first)
                    silence[name].append(gaps)
    print(f"{len(replies)} replies, tokens of 1-4 characters every {args.token_ms:.0f} ms, server {faults}\n")
    print(
        "| way | time to first audio: median | p90 | silence between pieces per reply: median | p90 "
        "| mean | replies with any silence | requests per reply |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ways:
        t, s = ttfa[name], silence[name]
        print(
            f"| {name} | {statistics.median(t):.0f} ms | {np.percentile(t, 90):.0f} ms "
            f"| {statistics.median(s):.0f} ms | {np.percentile(s, 90):.0f} ms | {statistics.mean(s):.0f} ms "
            f"| {sum(x > 20 for x in s)}/{len(s)} | {statistics.mean(requests[name]):.2f} |"
        )
    base_t = statistics.median(ttfa["speak_stream, prefetch 1 (ours)"])
    base_s = statistics.mean(silence["speak_stream, prefetch 1 (ours)"])
    for name in list(ways)[1:]:
        print(
            f"\n{name}: time to first audio {statistics.median(ttfa[name]) / base_t:.2f}x ours (median), "
            f"silence {statistics.mean(silence[name]) - base_s:+.0f} ms per reply (mean)"
        )


if __name__ == "__main__":
    asyncio.run(main())
