"""glmtts.TTS().stream() against LiveKit's default StreamAdapter (blingfire) over the same engine.

Run: ``.venv/bin/python -m bench.livekit_tts`` (``--replies 40`` for the whole corpus, the README's table).
The local server runs in its own process with the offline engine behind a 300 ms first byte and real-time
factor 0.5. Each corpus reply is pushed into a LiveKit ``SynthesizeStream`` as LLM tokens of 1-4
characters every 30 ms, then ``end_input()`` — what ``AgentSession`` does — and the stream's audio is
played by a simulated real-time listener, interleaved in one run:

* ``glmtts.TTS(...).stream()``: the core's segmenter (first piece at the first natural clause) and one
  piece of prefetch;
* ``StreamAdapter(tts=glmtts.TTS(...))``: what LiveKit builds around a TTS without streaming input —
  blingfire sentences (``min_sentence_len=20`` characters), one ``synthesize()`` per sentence, in turn.

Time to first audio counts from the first token; silence is the sum of playback gaps after the first
frame.

Then timeouts and failover as LiveKit defines them (``--failover-only`` runs just this part): a loopback
endpoint that accepts TCP and never answers (plain HTTP, and behind an https URL: a TLS handshake that
never completes) with LiveKit's own test settings (``timeout=2.5, max_retry=0``; ``timeout=0.5,
max_retry=3, retry_interval=0``), and ``FallbackAdapter([glmtts.TTS(<stalled>), glmtts.TTS(<server>)])``
with a 2 s caller timeout: the time until the secondary's first audio (median of ``--runs``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, APIError
from livekit.agents import tts as lk_tts
from livekit.plugins import glmtts

from glmtts_plugins import CloudEngine, RetryPolicy
from tests._livekit import StalledEndpoint

from . import _corpus
from ._playback import Listener, llm
from ._server import TOKEN, server_process

FAULTS = "first_byte_ms=300;rtf=0.5"


async def speak(stream: lk_tts.SynthesizeStream, tokens: AsyncIterator[str], ear: Listener) -> None:
    async def push() -> None:
        async for tok in tokens:
            stream.push_text(tok)
        stream.end_input()

    pusher = asyncio.create_task(push())
    async for ev in stream:
        ear.hear(1000 * ev.frame.duration)
    await pusher
    await stream.aclose()


FAILOVER_TEXT = "您好，这里是星河银行信用卡中心。请问有什么可以帮您？"


async def run_once(tts: lk_tts.TTS[Any], mode: str, conn: APIConnectOptions) -> tuple[float | None, float]:
    """(seconds to the first audio or None, seconds until the request ended, by audio or error)."""
    start = time.monotonic()
    first = None
    source: lk_tts.ChunkedStream | lk_tts.SynthesizeStream
    if mode == "synthesize":
        source = tts.synthesize(FAILOVER_TEXT, conn_options=conn)
    else:
        source = stream = tts.stream(conn_options=conn)
        if mode == "stream":
            stream.push_text(FAILOVER_TEXT)
            stream.end_input()
    try:
        async with source:
            async for _ in source:
                first = first or time.monotonic() - start
    except APIError:
        pass
    return first, time.monotonic() - start


async def failover(runs: int) -> None:
    timeouts = [
        (
            "stalled HTTP, `timeout=2.5, max_retry=0`",
            "http",
            APIConnectOptions(max_retry=0, timeout=2.5),
            "1.5-3.5 s",
        ),
        (
            "stalled HTTP, `timeout=0.5, max_retry=3, retry_interval=0`",
            "http",
            APIConnectOptions(max_retry=3, timeout=0.5, retry_interval=0.0),
            "1-3 s",
        ),
        (
            "TLS handshake never completes, `timeout=2.5, max_retry=0`",
            "https",
            APIConnectOptions(max_retry=0, timeout=2.5),
            "1.5-3.5 s",
        ),
    ]
    modes = ("synthesize", "stream")
    print(
        "\n| stalled endpoint, LiveKit's settings | synthesize(): error after | stream(): error after "
        "| LiveKit's window |"
    )
    print("|---|---:|---:|---|")
    async with StalledEndpoint() as stalled:
        for label, scheme, conn, window in timeouts:
            cells = []
            for mode in modes:
                took = []
                for _ in range(runs):
                    async with glmtts.TTS(api_key=TOKEN, base_url=stalled.url(scheme)) as tts:
                        took.append((await run_once(tts, mode, conn))[1])
                cells.append(f"{statistics.median(took):.1f} s")
            print(f"| {label} | {cells[0]} | {cells[1]} | {window} |")
        with server_process(FAULTS, engine="offline") as base_url:
            print(
                "\n| `FallbackAdapter([TTS(<stalled>), TTS(<server>)])`, caller `timeout=2` "
                "| synthesize(): secondary's first audio | stream(): secondary's first audio |"
            )
            print("|---|---:|---:|")
            for per_tts in (1, 2):
                cells = []
                for mode in modes:
                    took = []
                    for _ in range(runs):
                        primary = glmtts.TTS(api_key=TOKEN, base_url=stalled.url("http"))
                        secondary = glmtts.TTS(api_key=TOKEN, base_url=base_url)
                        adapter = lk_tts.FallbackAdapter([primary, secondary], max_retry_per_tts=per_tts)
                        first, _ = await run_once(adapter, mode, APIConnectOptions(max_retry=0, timeout=2.0))
                        await adapter.aclose()
                        await primary.aclose()
                        await secondary.aclose()
                        took.append(float("nan") if first is None else first)
                    cells.append(f"{statistics.median(took):.1f} s")
                print(
                    f"| `max_retry_per_tts={per_tts}`, `retry_interval=2` (LiveKit's) "
                    f"| {cells[0]} | {cells[1]} |"
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=12, help="how many corpus replies (max 40)")
    parser.add_argument("--token-ms", type=float, default=30.0, help="pause between LLM tokens")
    parser.add_argument("--runs", type=int, default=3, help="runs per timeout and failover case (median)")
    parser.add_argument("--failover-only", action="store_true", help="only the timeout and failover part")
    args = parser.parse_args()
    if not args.failover_only:
        await streaming(args)
    await failover(args.runs)


async def streaming(args: argparse.Namespace) -> None:
    replies = _corpus.replies()
    replies = random.Random(7).sample(replies, min(args.replies, len(replies)))
    names = ("glmtts.TTS().stream() (ours)", "StreamAdapter(blingfire) around the same engine")
    ttfa: dict[str, list[float]] = {n: [] for n in names}
    silence: dict[str, list[float]] = {n: [] for n in names}
    with server_process(FAULTS, engine="offline") as base_url:
        async with CloudEngine(api_key=TOKEN, base_url=base_url, retry=RetryPolicy(max_retries=0)) as engine:
            await engine.prewarm()
            ours = glmtts.TTS(engine=engine)
            adapted = lk_tts.StreamAdapter(tts=glmtts.TTS(engine=engine))
            for i, text in enumerate(replies):
                for name, tts in zip(names, (ours, adapted), strict=True):
                    ear = Listener(time.monotonic())
                    await speak(tts.stream(), llm(text, random.Random(i), args.token_ms), ear)
                    first, gaps = ear.result()
                    ttfa[name].append(first)
                    silence[name].append(gaps)
    print(f"{len(replies)} replies, tokens of 1-4 characters every {args.token_ms:.0f} ms, server {FAULTS}\n")
    print(
        "| way | time to first audio: median | p90 | silence between sentences per reply: median | p90 "
        "| mean | replies with any silence |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        t, s = ttfa[name], silence[name]
        print(
            f"| {name} | {statistics.median(t):.0f} ms | {np.percentile(t, 90):.0f} ms "
            f"| {statistics.median(s):.0f} ms | {np.percentile(s, 90):.0f} ms | {statistics.mean(s):.0f} ms "
            f"| {sum(x > 20 for x in s)}/{len(s)} |"
        )
    a, b = names
    ratio = statistics.median(ttfa[b]) / statistics.median(ttfa[a])
    extra = statistics.mean(silence[b]) - statistics.mean(silence[a])
    print(f"\nStreamAdapter / ours: time to first audio {ratio:.2f}x (median), silence {extra:+.0f} ms/reply")


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)  # LiveKit logs every failover at ERROR level
    asyncio.run(main())
