"""CloudEngine against the real local server on loopback, with the server's fault injection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback

import pytest

from glmtts_plugins import (
    APITimeoutError,
    AuthenticationError,
    CloudEngine,
    ContentBlockedError,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TruncatedStreamError,
)
from glmtts_plugins.audio import wav_to_pcm
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, collect_pcm, other_tasks, served

TEXT = "您好，这里是星河银行信用卡中心。Hello there!"


async def collect(engine: CloudEngine, text: str = TEXT, **kw: object) -> bytes:
    return await collect_pcm(engine.stream(text, **kw), whole_samples=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "faults",
    [
        "",
        "split",
        "newline=crlf",
        "newline=cr",
        "newline=crlf;split",
        "comments",
        "done",
        "no_trailing_newline",
        "done;no_trailing_newline;newline=crlf",
        "chunk_bytes=101",
        "chunk_bytes=101;split",
        "chunk_bytes=3",
        "chunk_bytes=900001",  # one SSE line of about 1.2 MB
    ],
)
async def test_stream_survives_wire_oddities(faults: str) -> None:
    tone = ToneEngine(ms_per_char=60 if "900001" not in faults else 800)
    async with served(tone, faults=faults) as (srv, cloud):
        pcm = await collect(cloud)
    assert pcm == tone.pcm(TEXT)
    assert [r.outcome for r in srv.records] == ["completed"]


async def test_hex_encoding() -> None:
    tone = ToneEngine()
    async with served(tone, faults="chunk_bytes=333", encode_format="hex") as (srv, cloud):
        assert await collect(cloud) == tone.pcm(TEXT)
    assert srv.records[0].body["encode_format"] == "hex"


async def test_stream_without_finish_is_truncated_not_short() -> None:
    tone = ToneEngine()
    async with served(tone, faults="no_finish") as (srv, cloud):
        got = bytearray()
        with pytest.raises(TruncatedStreamError) as info:
            await collect_pcm(cloud.stream(TEXT), into=got)
    assert bytes(got) == tone.pcm(TEXT)  # the audio before the error is kept
    assert info.value.retryable is False  # audio was handed on: a retry would repeat speech
    assert len(srv.records) == 1


async def test_drop_after_audio_is_not_retried() -> None:
    tone = ToneEngine()
    async with served(tone, faults="disconnect_after=3") as (srv, cloud):
        got = bytearray()
        with pytest.raises(TruncatedStreamError):
            await collect_pcm(cloud.stream(TEXT), into=got)
    assert bytes(got) == tone.pcm(TEXT)[: 3 * tone.chunk_bytes]
    assert len(srv.records) == 1


async def test_drop_before_audio_is_retried() -> None:
    async with served(faults="disconnect_after=0") as (srv, cloud):
        with pytest.raises(GLMTTSError) as info:
            await collect(cloud)
    assert info.value.retryable
    assert len(srv.records) == 3  # one try and max_retries=2 retries


@pytest.mark.parametrize(
    ("faults", "error", "requests"),
    [
        ("status=401;code=1002", AuthenticationError, 1),
        ("status=429;code=1113", QuotaExceededError, 1),  # balance exhausted: a 429 not worth retrying
        ("status=429;code=1304", QuotaExceededError, 1),
        ("status=429;code=1302", RateLimitError, 3),
        ("status=429;code=1303", RateLimitError, 3),
        ("status=503;code=1305", ServerError, 3),
        ("status=500;code=500", ServerError, 2),  # an internal error is retried once
        ("status=400;code=1214", InvalidRequestError, 1),
        ("status=400;code=1301", ContentBlockedError, 1),
        ("error_after=0;error_code=1301", ContentBlockedError, 1),
        ("error_after=0;error_code=1302", RateLimitError, 3),
    ],
)
async def test_error_classes_and_retry_decisions(faults: str, error: type, requests: int) -> None:
    async with served(faults=faults) as (srv, cloud):
        with pytest.raises(error) as info:
            await collect(cloud)
    assert len(srv.records) == requests
    err = info.value
    assert isinstance(err, GLMTTSError)
    assert err.code == faults.split("code=")[1].split(";")[0]
    assert err.request_id == srv.records[-1].id


async def test_in_stream_error_after_audio_is_not_retried() -> None:
    tone = ToneEngine()
    async with served(tone, faults="error_after=2;error_code=1302") as (srv, cloud):
        got = bytearray()
        with pytest.raises(RateLimitError) as info:
            await collect_pcm(cloud.stream(TEXT), into=got)
    assert bytes(got) == tone.pcm(TEXT)[: 2 * tone.chunk_bytes]
    assert info.value.retryable is False
    assert len(srv.records) == 1


async def test_retry_before_audio_then_success() -> None:
    tone = ToneEngine()
    async with served(tone, faults="status=429;code=1302;times=1") as (srv, cloud):
        assert await collect(cloud) == tone.pcm(TEXT)
    assert [r.outcome for r in srv.records] == ["rejected", "completed"]


async def test_unknown_voice_is_1214_from_the_server() -> None:
    async with served() as (srv, cloud):
        with pytest.raises(InvalidRequestError) as info:
            await collect(cloud, voice="nobody")
    assert info.value.code == "1214" and info.value.status == 400
    assert len(srv.records) == 1


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"text": ""}, "text", "empty"),
        ({"text": " \n\t "}, "text", "empty"),
        ({"speed": 0.49}, "speed", "[0.5, 2.0]"),
        ({"speed": 2.01}, "speed", "[0.5, 2.0]"),
        ({"volume": 0}, "volume", "(0.0, 10.0]"),
        ({"volume": 10.5}, "volume", "(0.0, 10.0]"),
        ({"speed": float("nan")}, "speed", "[0.5, 2.0]"),
    ],
)
async def test_validation_before_any_request(kwargs: dict, field: str, fragment: str) -> None:
    text = kwargs.pop("text", TEXT)
    async with served() as (srv, cloud):
        with pytest.raises(InvalidRequestError) as info:
            await collect(cloud, text, **kwargs)
        with pytest.raises(InvalidRequestError):
            await cloud.synthesize(text, **kwargs)
    assert info.value.field == field
    assert field in str(info.value) and fragment in str(info.value)
    assert srv.records == []


def test_unknown_encode_format_is_rejected_at_construction() -> None:
    with pytest.raises(InvalidRequestError, match="encode_format must be one of base64, hex"):
        CloudEngine(api_key="k", encode_format="base32")


async def test_long_text_is_split_into_requests_of_at_most_1024() -> None:
    sentence = "您的快递目前在上海浦东转运中心，预计明天上午送达。"
    text = sentence * 110  # 2750 characters
    tone = ToneEngine(ms_per_char=2)
    async with served(tone) as (srv, cloud):
        pcm = await collect(cloud, text)
        wav = await cloud.synthesize(text)
    inputs = [r.body["input"] for r in srv.records]
    assert len(inputs) == 6  # three streaming requests, three whole-WAV requests
    assert all(len(i) <= 1024 for i in inputs)
    assert "".join(inputs[:3]) == text and "".join(inputs[3:]) == text
    assert all(i.endswith("。") for i in inputs[:2])  # cut at sentence ends
    assert pcm == b"".join(tone.pcm(i) for i in inputs[:3])
    assert wav_to_pcm(wav)[0] == pcm


async def test_synthesize_returns_a_wav(server, cloud, tone) -> None:
    pcm, rate, channels = wav_to_pcm(await cloud.synthesize(TEXT))
    assert (rate, channels) == (24000, 1)
    assert pcm == tone.pcm(TEXT)
    assert server.records[0].body["response_format"] == "wav"
    assert server.records[0].body["stream"] is False


async def test_missing_key_names_the_variables(server, monkeypatch) -> None:
    monkeypatch.delenv("ZAI_API_KEY", raising=False)
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    # A configuration mistake: refused at construction (as a ValueError naming the field), not per request.
    with pytest.raises(InvalidRequestError, match=r"ZAI_API_KEY.*ZHIPUAI_API_KEY") as info:
        CloudEngine(base_url=server.base_url)
    assert info.value.field == "api_key" and isinstance(info.value, ValueError)
    assert server.records == []


async def test_key_and_base_url_from_environment(server, monkeypatch, tone) -> None:
    monkeypatch.delenv("ZAI_API_KEY", raising=False)
    monkeypatch.setenv("ZHIPUAI_API_KEY", API_KEY)
    monkeypatch.setenv("GLMTTS_BASE_URL", server.base_url)
    async with CloudEngine() as cloud:
        assert await collect(cloud) == tone.pcm(TEXT)
    monkeypatch.setenv("ZAI_API_KEY", "wrong-key")
    async with CloudEngine() as cloud:  # ZAI_API_KEY wins over ZHIPUAI_API_KEY
        with pytest.raises(AuthenticationError):
            await collect(cloud)
    assert [r.code for r in server.records] == [None, "1002"]


async def test_key_never_leaks(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    texts = []
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url) as cloud:
        texts.append(repr(cloud))
        await collect(cloud)
        await cloud.prewarm()
    for faults in ("status=401;code=1002", "disconnect_after=1", "status=500;code=500"):
        async with served(faults=faults) as (_, bad):
            with pytest.raises(GLMTTSError) as info:
                await collect(bad)
            texts += [repr(bad), str(info.value), repr(info.value)]
            texts += traceback.format_exception(info.value)
    async with CloudEngine(api_key=API_KEY, base_url="http://127.0.0.1:9/api", connect_timeout=0.5) as dead:
        with pytest.raises(GLMTTSError) as info:
            await collect(dead)
        texts += [str(info.value), *traceback.format_exception(info.value)]
    texts.append(caplog.text)
    assert caplog.records, "debug logging should have captured the HTTP client's traffic"
    for text in texts:
        assert API_KEY not in text


async def test_cancelling_the_consumer_closes_the_connection() -> None:
    tone = ToneEngine(ms_per_char=200)
    async with served(tone, faults="rtf=1;chunk_bytes=960") as (srv, cloud):
        before = other_tasks()
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in cloud.stream(TEXT):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2.0)
        assert srv.records[0].audio_bytes < len(tone.pcm(TEXT)) // 2
        assert other_tasks() == before


async def test_closing_the_iterator_closes_the_connection() -> None:
    async with served(ToneEngine(ms_per_char=200), faults="rtf=1") as (srv, cloud):
        before = other_tasks()
        async with contextlib.aclosing(cloud.stream(TEXT)) as chunks:
            async for _ in chunks:
                break
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2.0)
        assert other_tasks() == before


async def test_first_byte_timeout_is_retryable_and_retried() -> None:
    async with served(faults="first_byte_ms=400", first_byte_timeout=0.1) as (srv, cloud):
        with pytest.raises(APITimeoutError, match="first byte") as info:
            await collect(cloud)
    assert info.value.retryable
    assert len(srv.records) == 3
    assert await srv.wait_for(lambda: all(r.outcome == "disconnected" for r in srv.records), 2.0)


async def test_read_timeout_after_audio_is_not_retried() -> None:
    async with served(faults="chunk_ms=400", read_timeout=0.1, first_byte_timeout=2.0) as (srv, cloud):
        got = bytearray()
        with pytest.raises(APITimeoutError, match="read") as info:
            await collect_pcm(cloud.stream(TEXT), into=got)
    assert len(got) == 960  # the first chunk arrived; the second came too late
    assert info.value.retryable is False
    assert len(srv.records) == 1


async def test_connect_failure_is_a_connection_error() -> None:
    async with CloudEngine(api_key="k", base_url="http://127.0.0.1:9/v4", connect_timeout=0.5) as cloud:
        cloud.retry = type(cloud.retry)(max_retries=0)
        with pytest.raises(GLMTTSError) as info:
            await collect(cloud)
    assert info.value.retryable and "connection" in str(info.value).lower()


async def test_keep_alive_reuses_one_connection_and_prewarm_opens_it(server, cloud) -> None:
    await cloud.prewarm()
    await collect(cloud)
    await collect(cloud)
    await cloud.synthesize("再见。")
    ports = {port for _, _, port in server.state.requests_seen}
    methods = [m for m, _, _ in server.state.requests_seen]
    assert methods[0] == "HEAD"
    assert len(ports) == 1, server.state.requests_seen


def test_cloud_engine_defaults(monkeypatch) -> None:
    monkeypatch.delenv("GLMTTS_BASE_URL", raising=False)
    engine = CloudEngine(api_key="k")
    assert engine.url == "https://open.bigmodel.cn/api/paas/v4/audio/speech"
    assert engine.sample_rate == 24000
    assert os.environ.get("GLMTTS_BASE_URL") is None


async def test_key_not_in_traceback_locals(server) -> None:
    async with CloudEngine(api_key="wrong-" + API_KEY, base_url=server.base_url) as cloud:
        for call in (lambda: collect(cloud), lambda: cloud.synthesize(TEXT)):
            with pytest.raises(AuthenticationError) as info:
                await call()
            text = "".join(
                traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
            )
            assert API_KEY not in text


@pytest.mark.parametrize(
    ("text", "limit", "whole"),
    [
        ("a" * 1021 + " 3.14 end", 1024, "3.14"),
        ("好" * 1020 + "是3,268.50元", 1024, "3,268.50"),
        ("x" * 1018 + " v1.2.3.4 rest", 1024, "v1.2.3.4"),
    ],
)
def test_split_never_cuts_a_number_or_code(text: str, limit: int, whole: str) -> None:
    from glmtts_plugins.text import split_text

    pieces = split_text(text, limit)
    assert "".join(pieces) == text and all(len(p) <= limit for p in pieces)
    assert any(whole in p for p in pieces)
