"""Issue 2 benchmarks: CloudEngine's overhead per chunk and CPU per second of audio, beside zai-sdk.

Run: ``.venv/bin/python -m bench.client_overhead`` (about a minute). The server runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import struct
import time
from collections.abc import Generator

import httpx
from zai import ZhipuAiClient

from glmtts_plugins import CloudEngine

from ._server import TOKEN, server_process

STAMP_TEXT = "五个字的话"  # 5 characters x 40 ms = 200 ms of audio, 10 chunks of 20 ms


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def sdk_stream(client: ZhipuAiClient, text: str) -> Generator[bytes, None, None]:
    """What a user of the official SDK writes to get PCM chunks."""
    response = client.audio.speech(
        model="glm-tts",
        input=text,
        voice="tongtong",
        response_format="pcm",
        stream=True,
        encode_format="base64",
    )
    # stream=True gives a StreamResponse; the SDK's return type does not say so
    for chunk in response:  # type: ignore[union-attr]
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                yield base64.b64decode(choice.delta.content)


def overhead_ms(chunk: bytes) -> float:
    sent: int = struct.unpack("<Q", chunk[:8])[0]
    return (time.monotonic_ns() - sent) / 1e6


async def overhead(requests: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"glmtts CloudEngine": [], "zai-sdk": []}
    with server_process("stamp;chunk_ms=10") as url:
        client = ZhipuAiClient(api_key=TOKEN, base_url=url)
        async with CloudEngine(api_key=TOKEN, base_url=url) as engine:
            await engine.prewarm()
            for _ in range(requests):
                async for chunk in engine.stream(STAMP_TEXT):
                    out["glmtts CloudEngine"].append(overhead_ms(chunk))
                for chunk in sdk_stream(client, STAMP_TEXT):
                    out["zai-sdk"].append(overhead_ms(chunk))
    return out


async def cpu(chunk_bytes: int, requests: int, seconds: float) -> dict[str, list[float]]:
    """CPU milliseconds per second of audio delivered, per request."""
    text = "字" * int(seconds / 0.04)
    out: dict[str, list[float]] = {"glmtts CloudEngine": [], "on httpx's transport": [], "zai-sdk": []}
    with server_process(f"chunk_bytes={chunk_bytes}") as url:
        client = ZhipuAiClient(api_key=TOKEN, base_url=url)
        own = httpx.AsyncClient(trust_env=False)  # httpx's own transport (h11), the default before issue 15
        async with (
            CloudEngine(api_key=TOKEN, base_url=url) as engine,
            CloudEngine(api_key=TOKEN, base_url=url, http_client=own) as engine_h11,
            own,
        ):
            for _ in range(requests):
                for name, eng in (("glmtts CloudEngine", engine), ("on httpx's transport", engine_h11)):
                    t0, n = time.process_time(), 0
                    async for chunk in eng.stream(text):
                        n += len(chunk)
                    out[name].append((time.process_time() - t0) * 1000 / (n / 48000))
                t0, n = time.process_time(), 0
                for chunk in sdk_stream(client, text):
                    n += len(chunk)
                out["zai-sdk"].append((time.process_time() - t0) * 1000 / (n / 48000))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--cpu-requests", type=int, default=15)
    args = parser.parse_args()

    lat = await overhead(args.requests)
    print(f"\nClient overhead: server writes an audio chunk -> client yields it ({args.requests} requests)\n")
    print("| client | chunks | median | p99 |")
    print("|---|---:|---:|---:|")
    for name, values in lat.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.3f} ms | {pct(values, 0.99):.3f} ms |")

    print(f"\nClient CPU per second of audio, 24 kHz, 10 s per request, median of {args.cpu_requests}\n")
    print(
        "| audio per event | CloudEngine (default transport) | CloudEngine on httpx's transport | zai-sdk "
        "| SDK / ours |"
    )
    print("|---|---:|---:|---:|---:|")
    for chunk_bytes in (480, 960, 4800, 24000):
        res = await cpu(chunk_bytes, args.cpu_requests, 10.0)
        ours, h11, sdk = (statistics.median(v) for v in res.values())
        label = f"{chunk_bytes} B ({chunk_bytes / 48:.0f} ms)"
        print(f"| {label} | {ours:.2f} ms | {h11:.2f} ms | {sdk:.2f} ms | {sdk / ours:.1f}x |")


if __name__ == "__main__":
    asyncio.run(main())
