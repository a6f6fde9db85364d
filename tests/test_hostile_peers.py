"""The HTTP engines against hostile peers on loopback (raw asyncio servers from ``tests/_peers.py``):
what the local server cannot be made to send."""

from __future__ import annotations

import logging

import pytest

from glmtts_plugins import CloudEngine, RetryPolicy, VllmOmniEngine

from ._peers import FINISH_EVENT, audio_event, raw_server, replying, response_head

TEXT = "您好，这里是星河银行。"
NO_RETRY = RetryPolicy(max_retries=0)
VOICES = {"v": {"audio_url": "https://example.invalid/v.wav", "text": "参考。"}}
PCM = bytes(range(256)) * 4  # 1024 bytes, 512 samples


def sse_reply(*events: bytes, content_type: str = "text/event-stream", **headers: str):  # type: ignore[no-untyped-def]
    body = b"".join(events)
    return replying(
        lambda head, _: response_head(200, content_type, Content_Length=str(len(body)), **headers) + body
    )


def pcm_reply(body: bytes, content_type: str = "audio/pcm", **headers: str):  # type: ignore[no-untyped-def]
    return replying(
        lambda head, _: response_head(200, content_type, Content_Length=str(len(body)), **headers) + body
    )


async def collect(engine, **kw) -> bytes:  # type: ignore[no-untyped-def]
    out = bytearray()
    async for chunk in engine.stream(TEXT, **kw):
        assert len(chunk) % 2 == 0
        out += chunk
    return bytes(out)


# -- one rule for a stream that ends inside a sample --------------------------------------------------


async def test_cloud_stream_ending_inside_a_sample_drops_the_half_sample(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    async with raw_server(sse_reply(audio_event(PCM[:301]), audio_event(PCM[301:511]), FINISH_EVENT)) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            assert await collect(cloud) == PCM[:510]
    assert "inside a sample" in caplog.text


async def test_vllm_stream_ending_inside_a_sample_drops_the_half_sample(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    async with raw_server(pcm_reply(PCM[:511])) as peer:
        async with VllmOmniEngine(peer.base_url, voices=VOICES, retry=NO_RETRY) as vllm:
            assert await collect(vllm, voice="v") == PCM[:510]
    assert "inside a sample" in caplog.text


@pytest.mark.parametrize("cut", [1, 3, 255])
async def test_a_sample_split_across_reads_is_carried_over(cut: int) -> None:
    # Each event is its own write, so the split sample crosses reads (and events).
    events = [audio_event(PCM[:cut]), audio_event(PCM[cut:]), FINISH_EVENT]
    head = response_head(200, "text/event-stream", Content_Length=str(sum(map(len, events))))
    async with raw_server(replying(lambda h, b: [head, *events])) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            assert await collect(cloud) == PCM
