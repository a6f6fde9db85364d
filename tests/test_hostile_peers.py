"""The HTTP engines against hostile peers on loopback (raw asyncio servers from ``tests/_peers.py``):
what the local server cannot be made to send."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import tracemalloc

import pytest

from glmtts_plugins import (
    APITimeoutError,
    CloudEngine,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    VllmOmniEngine,
)
from glmtts_plugins.audio import pcm_to_wav
from glmtts_plugins.engines import http
from glmtts_plugins.engines.cloud import MAX_EVENT_BYTES
from glmtts_plugins.testing import ToneEngine

from ._peers import (
    FINISH_EVENT,
    audio_event,
    gzipped,
    raw_server,
    read_request,
    replying,
    response_head,
    sse_event,
)
from .conftest import FAST_RETRY as FAST
from .conftest import collect_pcm, served

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
    return await collect_pcm(engine.stream(TEXT, **kw), whole_samples=True)


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


# -- item 3: audio in the same read as an error is delivered first -------------------------------------


@pytest.mark.parametrize(("code", "error"), [(1214, InvalidRequestError), (1305, ServerError)])
async def test_audio_in_the_same_read_as_an_error_is_delivered_before_it(code: int, error: type) -> None:
    events = [audio_event(PCM[:480]), audio_event(PCM[480:960]), audio_event(PCM[960:])]
    events.append(sse_event({"error": {"code": str(code), "message": "boom"}}))
    async with raw_server(sse_reply(*events)) as peer:  # one write: the client reads it all at once
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=FAST) as cloud:
            got = bytearray()
            with pytest.raises(error) as info:
                await collect_pcm(cloud.stream(TEXT), into=got)
        assert peer.opened == 1  # audio was handed on: never retried
    assert bytes(got) == PCM  # all 1 024 bytes, then the error
    assert info.value.retryable is False


# -- item 4: every failure is typed --------------------------------------------------------------------

MALFORMED = {
    # (finish_reason keeps each off the audio fast path, which reads only the content string)
    "choices as a dict": {"choices": {"delta": {"content": "AAAA"}, "finish_reason": None}},
    "choices of strings": {"choices": ["AAAA"], "finish_reason": None},
    "delta as a string": {"choices": [{"delta": "AAAA", "finish_reason": None}]},
    "content as an int": {"choices": [{"delta": {"content": 7}, "finish_reason": None}]},
}


@pytest.mark.parametrize(
    "event",
    [sse_event(e) for e in MALFORMED.values()]
    + [
        b"data: {not json\n\n",
        b"data: "
        + b"[" * 100_000
        + b"]" * 100_000
        + b"\n\n",  # nested past the JSON parser's recursion limit
        b'data: {"choices":[{"delta":{"content":"not base64!"}}]}\n\n',
    ],
    ids=[*MALFORMED, "not json", "deeply nested", "bad base64"],
)
async def test_malformed_events_are_typed_errors(event: bytes) -> None:
    async with raw_server(sse_reply(event, FINISH_EVENT)) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            with pytest.raises(ServerError) as info:
                await collect(cloud)
    assert str(info.value)  # formatting the error never raises


@pytest.mark.parametrize("where", ["status", "stream"])
@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"code": 1302.0, "message": "busy"}, RateLimitError),  # a float code keeps its class
        ({"code": "1214", "message": {"detail": ["x"]}}, InvalidRequestError),  # a non-string message
        ({"code": 1113, "message": None}, QuotaExceededError),
        ("just a string", GLMTTSError),
    ],
)
async def test_odd_error_shapes_keep_their_class_and_format(where: str, error: object, cls: type) -> None:
    payload = json.dumps({"error": error}).encode()
    if where == "status":
        head = response_head(
            429 if cls is RateLimitError else 400, "application/json", Content_Length=str(len(payload))
        )
        handler = replying(lambda h, b: head + payload)
    else:
        handler = sse_reply(b"data: " + payload + b"\n\n")
    async with raw_server(handler) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            with pytest.raises(GLMTTSError) as info:
                await collect(cloud)
    assert isinstance(info.value, cls), repr(info.value)
    assert isinstance(str(info.value), str) and isinstance(info.value.message, str)


async def test_a_deeply_nested_error_body_is_typed() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    head = response_head(500, "application/json", Content_Length=str(len(body)))
    async with raw_server(replying(lambda h, b: head + body)) as peer:
        async with VllmOmniEngine(peer.base_url, voices=VOICES, retry=NO_RETRY) as vllm:
            with pytest.raises(ServerError):
                await vllm.synthesize(TEXT, voice="v")
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            with pytest.raises(ServerError):
                await cloud.synthesize(TEXT)


# -- item 5: compression -------------------------------------------------------------------------------


async def test_identity_is_asked_for_and_a_compressing_proxy_is_decoded() -> None:
    seen: list[bytes] = []
    sse = gzipped(audio_event(PCM[:500]) + audio_event(PCM[500:]) + FINISH_EVENT)
    pcm = gzipped(PCM)

    def reply(head: bytes, body: bytes) -> bytes:
        seen.append(head.lower())
        data, kind = (pcm, "audio/pcm") if b"/v1/" in head else (sse, "text/event-stream")
        return response_head(200, kind, Content_Length=str(len(data)), Content_Encoding="gzip") + data

    async with raw_server(replying(reply)) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            assert await collect(cloud) == PCM
        async with VllmOmniEngine(peer.base_url, voices=VOICES, retry=NO_RETRY) as vllm:
            assert await collect(vllm, voice="v") == PCM
    assert all(b"accept-encoding: identity" in head for head in seen)


# -- item 6: bounded buffering -------------------------------------------------------------------------


async def test_an_endless_event_line_is_refused_with_bounded_memory() -> None:
    block = b"A" * 65536
    sent = 0

    async def endless(reader, writer) -> None:  # type: ignore[no-untyped-def]
        nonlocal sent
        await read_request(reader)
        writer.write(response_head(200, "text/event-stream") + b"data: ")
        while sent < 64 * 1024 * 1024:
            writer.write(block)
            sent += len(block)
            await writer.drain()

    tracemalloc.start()
    try:
        async with raw_server(endless) as peer:
            async with CloudEngine(api_key="k", base_url=peer.base_url, retry=FAST) as cloud:
                with pytest.raises(ServerError, match="over") as info:
                    await collect(cloud)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not info.value.retryable and peer.opened == 1
    assert peak < 3 * MAX_EVENT_BYTES  # bounded by the limit, not by what the server sends
    assert sent < 64 * 1024 * 1024  # the client stopped reading


async def test_a_huge_error_body_is_read_only_as_far_as_the_message() -> None:
    sent = 0

    async def huge(reader, writer) -> None:  # type: ignore[no-untyped-def]
        nonlocal sent
        await read_request(reader)
        writer.write(response_head(503, "text/plain", Content_Length=str(300 * 1024 * 1024)))
        while sent < 300 * 1024 * 1024:
            writer.write(b"x" * 65536)
            sent += 65536
            await writer.drain()

    async with raw_server(huge) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=NO_RETRY) as cloud:
            with pytest.raises(ServerError) as info:
                await collect(cloud)
    assert info.value.status == 503 and len(info.value.message) <= 200
    assert sent < 32 * 1024 * 1024


async def test_a_whole_wav_body_over_the_cap_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(http, "MAX_WAV_BODY", 4096)
    wav = pcm_to_wav(PCM * 8, 24000)
    head = response_head(200, "audio/wav", Content_Length=str(len(wav)))
    async with raw_server(replying(lambda h, b: head + wav)) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=FAST) as cloud:
            with pytest.raises(ServerError, match="over 4096") as info:
                await cloud.synthesize(TEXT)
        assert peer.opened == 1 and not info.value.retryable


# -- item 8: the progress rule -------------------------------------------------------------------------


async def test_a_trickle_after_the_first_audio_fails_by_the_progress_rule() -> None:
    async def trickle(reader, writer) -> None:  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(response_head(200, "text/event-stream") + audio_event(PCM[:480]))
        while True:  # 2 bytes every 0.15 s: each read re-arms the read timeout, none keeps up
            await asyncio.sleep(0.15)
            writer.write(audio_event(b"\0\0"))
            await writer.drain()

    async with raw_server(trickle) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, min_realtime=2.0) as cloud:
            start = time.monotonic()
            with pytest.raises(APITimeoutError, match=r"read timeout .*below 2x real time") as info:
                await collect(cloud)
            elapsed = time.monotonic() - start
    # (0.01 s of audio + 1 s of slack) / 2x = about 0.5 s after the first audio; read_timeout is 10 s
    assert 0.4 < elapsed < 3.0 and not info.value.retryable


async def test_a_stream_at_real_time_passes_the_progress_rule() -> None:
    tone = ToneEngine()
    async with served(tone, faults="rtf=1", min_realtime=0.5) as (_, cloud):
        assert await collect(cloud) == tone.pcm(TEXT)


# -- item 10: a page is not audio ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "synthesize"])
async def test_an_html_portal_answering_200_is_not_retried(mode: str) -> None:
    page = b"<html><body>Please log in to the Wi-Fi</body></html>"
    head = response_head(200, "text/html; charset=utf-8", Content_Length=str(len(page)))
    async with raw_server(replying(lambda h, b: head + page, keep_open=True)) as peer:
        async with CloudEngine(api_key="k", base_url=peer.base_url, retry=FAST) as cloud:
            with pytest.raises(ServerError, match="text/html") as info:
                await (collect(cloud) if mode == "stream" else cloud.synthesize(TEXT))
        async with VllmOmniEngine(peer.base_url, voices=VOICES, retry=FAST) as vllm:
            with pytest.raises(ServerError, match="text/html"):
                await (collect(vllm, voice="v") if mode == "stream" else vllm.synthesize(TEXT, voice="v"))
        assert peer.opened == 2  # one request each: not retried
    assert info.value.retryable is False
