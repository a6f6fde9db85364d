"""The per-request ``timeout``: it bounds each attempt's connect, TLS and first byte together, and the
error names the phase that hit it; against stalled listeners on loopback and the local server."""

from __future__ import annotations

import time

import httpx
import pytest

from glmtts_plugins import (
    APITimeoutError,
    CloudEngine,
    ConnectionInfo,
    RetryPolicy,
    VllmOmniEngine,
    as_engine,
)
from glmtts_plugins.testing import ToneEngine

from ._peers import raw_server, silent, unaccepted_port
from .conftest import API_KEY, collect_pcm, served

TEXT = "您好，这里是星河银行。"
NO_RETRY = RetryPolicy(max_retries=0)


async def failure(engine, **kw) -> tuple[APITimeoutError, float]:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        await collect_pcm(engine.stream(TEXT, **kw))
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_listener_that_never_answers_names_first_byte_or_tls(
    scheme: str, http_client: httpx.AsyncClient | None
) -> None:
    async with raw_server(silent) as peer:
        base = f"{scheme}://127.0.0.1:{peer.port}/api"
        async with CloudEngine(
            api_key=API_KEY, base_url=base, retry=NO_RETRY, http_client=http_client
        ) as cloud:
            error, elapsed = await failure(cloud, timeout=0.5)
        assert await peer.all_closed() and peer.opened == 1  # the attempt's connection was closed
    phase = "TLS" if scheme == "https" else "first byte"
    assert str(error).startswith(f"{phase} timeout"), error
    assert error.retryable
    assert 0.45 <= elapsed < 2.0  # the caller's 0.5 s, not the engine's 10 s first-byte default


async def test_a_connect_that_hangs_names_connect(http_client: httpx.AsyncClient | None) -> None:
    with unaccepted_port() as port:
        base = f"http://127.0.0.1:{port}/api"
        async with CloudEngine(
            api_key=API_KEY, base_url=base, retry=NO_RETRY, http_client=http_client
        ) as cloud:
            error, elapsed = await failure(cloud, timeout=0.4)
    assert str(error).startswith("connect timeout"), error
    assert 0.35 <= elapsed < 2.0


async def test_the_timeout_bounds_each_attempt_and_retries_stay_the_engine_policy(
    http_client: httpx.AsyncClient | None,
) -> None:
    retry = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
    async with raw_server(silent) as peer:
        async with CloudEngine(
            api_key=API_KEY, base_url=peer.base_url, retry=retry, http_client=http_client
        ) as vendor:
            error, elapsed = await failure(vendor, timeout=0.3)
        assert await peer.all_closed() and peer.opened == 3  # a try and two retries, each its own 0.3 s
    assert str(error).startswith("first byte timeout")
    assert 0.85 <= elapsed < 3.0


async def test_local_server_first_byte_delay_against_the_timeout(
    http_client: httpx.AsyncClient | None,
) -> None:
    # The timeout replaces first_byte_timeout for the request, either way.
    async with served(
        faults="first_byte_ms=600", first_byte_timeout=10.0, retry=NO_RETRY, http_client=http_client
    ) as (_, cloud):
        error, elapsed = await failure(cloud, timeout=0.2)
        assert str(error).startswith("first byte timeout")
        assert elapsed < 1.5
    tone = ToneEngine()
    async with served(tone, faults="first_byte_ms=300", first_byte_timeout=0.1, http_client=http_client) as (
        _srv,
        cloud,
    ):
        pcm = await collect_pcm(cloud.stream(TEXT, timeout=3.0))
        assert pcm == tone.pcm(TEXT)
        wav = await cloud.synthesize(TEXT, timeout=3.0)
        assert len(wav) == 44 + len(pcm)
        with pytest.raises(APITimeoutError, match="first byte"):
            await cloud.synthesize(TEXT, timeout=0.1)
    # a request timeout longer than both engine limits is the one that counts
    async with served(
        tone, faults="first_byte_ms=400", first_byte_timeout=0.1, read_timeout=0.15, http_client=http_client
    ) as (
        _,
        cloud,
    ):
        assert await collect_pcm(cloud.stream(TEXT, timeout=3.0)) == tone.pcm(TEXT)


async def test_read_timeout_after_audio_names_read(http_client: httpx.AsyncClient | None) -> None:
    async with served(faults="chunk_ms=500", read_timeout=0.15, http_client=http_client) as (_srv, cloud):
        got = bytearray()
        with pytest.raises(APITimeoutError) as info:
            await collect_pcm(cloud.stream(TEXT, timeout=5.0), into=got)
    assert str(info.value).startswith("read timeout")
    assert got and info.value.retryable is False


async def test_vllm_omni_timeout_names_the_phase(tmp_path, http_client) -> None:  # type: ignore[no-untyped-def]
    voices = {"v": {"audio_url": "https://example.invalid/v.wav", "text": "参考。"}}
    async with raw_server(silent) as peer:
        async with VllmOmniEngine(
            peer.base_url, voices=voices, retry=NO_RETRY, http_client=http_client
        ) as engine:
            error, elapsed = await failure(engine, voice="v", timeout=0.3)
    assert str(error).startswith("first byte timeout") and elapsed < 2.0


async def test_generic_timeout_for_a_users_engine() -> None:
    import asyncio

    class Slow:
        sample_rate = 24000

        async def stream(self, text, *, voice, speed, volume):  # type: ignore[no-untyped-def]
            await asyncio.sleep(5)
            yield b"\0\0"

    error, elapsed = await failure(as_engine(Slow()), timeout=0.2)
    assert str(error).startswith("first byte timeout") and error.retryable and elapsed < 1.5
    tone = ToneEngine()
    assert await collect_pcm(tone.stream(TEXT, timeout=1.0)) == tone.pcm(TEXT)


@pytest.mark.parametrize("timeout", [0, -1, "5", True, float("nan")])
async def test_a_bad_timeout_names_the_field_before_any_request(server, timeout) -> None:  # type: ignore[no-untyped-def]
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url) as cloud:
        with pytest.raises(ValueError) as info:
            await collect_pcm(cloud.stream(TEXT, timeout=timeout))
    assert info.value.field == "timeout"  # type: ignore[attr-defined]
    assert server.records == []


async def test_connection_metrics_reuse_and_acquire_time(server, http_client) -> None:  # type: ignore[no-untyped-def]
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url, http_client=http_client) as cloud:
        assert cloud.last_connection is None
        await collect_pcm(cloud.stream(TEXT))
        first = cloud.last_connection
        await collect_pcm(cloud.stream(TEXT))
        second = cloud.last_connection
    assert isinstance(first, ConnectionInfo) and first.reused is False and first.acquire_time > 0
    assert second is not None and second.reused is True
    assert second.acquire_time < first.acquire_time
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url, http_client=http_client) as cloud:
        await cloud.prewarm()
        await collect_pcm(cloud.stream(TEXT))
        assert cloud.last_connection is not None and cloud.last_connection.reused is True
