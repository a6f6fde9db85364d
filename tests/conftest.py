"""Shared fixtures and helpers: a real local server on loopback, a CloudEngine pointed at it, and the
audio a stream or an utterance delivers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Collection
from typing import Any

import httpx
import pytest

from glmtts_plugins import CloudEngine, RetryPolicy, SpeechFrame
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

API_KEY = "test-key-5f2b9c0e7d1a4b38"
FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)


def local_server(
    engine: Any = None, *, tokens: Collection[str] | None = (API_KEY,), **options: Any
) -> LocalServer:
    """The local server every test uses, not started yet: enter it with ``with`` (or ``async with``).

    It runs ``engine`` (a fresh ``ToneEngine`` unless given) and accepts ``API_KEY`` unless ``tokens``
    says otherwise (``None``: no authentication). ``options`` go to ``LocalServer`` as they are:
    ``faults``, ``fault_header``, ``voices``, ``limits``, ``port``, ``max_records``, ...
    """
    return LocalServer(ToneEngine() if engine is None else engine, tokens=tokens, **options)


@contextlib.asynccontextmanager
async def served(
    engine: Any = None, *, faults: str | None = None, **cloud_options: Any
) -> AsyncIterator[tuple[LocalServer, CloudEngine]]:
    """A ``local_server(engine, faults=faults)`` and a CloudEngine pointed at it (fast retries unless
    ``cloud_options`` say otherwise)."""
    options = {"retry": FAST_RETRY, **cloud_options}
    with local_server(engine, faults=faults) as srv:
        async with CloudEngine(api_key=API_KEY, base_url=srv.base_url, **options) as cloud:
            yield srv, cloud


@pytest.fixture(params=["aiohttp", "httpcore"])
async def http_client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient | None]:
    """Runs a test on each transport: ``None`` (an engine's default, our aiohttp transport) and a client
    of the user's on httpx's own transport (httpcore), which the engine must handle the same way."""
    if request.param == "aiohttp":
        yield None
        return
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def collect_pcm(
    source: AsyncIterable[bytes] | AsyncIterable[SpeechFrame],
    *,
    into: bytearray | list[Any] | None = None,
    whole_samples: bool = False,
) -> bytes:
    """Every byte of audio ``source`` yields, joined: an engine's ``stream(...)``, an utterance (its
    frames' ``audio``) or an HTTP body's chunks.

    ``into`` gets the audio as it arrives (a bytearray: the bytes; a list: each chunk or frame itself),
    so a test that expects ``source`` to fail keeps what came before the error. ``whole_samples``:
    assert that every chunk holds whole 16-bit samples.
    """
    out = bytearray()
    async for item in source:
        audio = item.audio if isinstance(item, SpeechFrame) else item
        if whole_samples:
            assert len(audio) % 2 == 0, f"a chunk of {len(audio)} bytes splits a sample"
        out += audio
        if isinstance(into, bytearray):
            into += audio
        elif into is not None:
            into.append(item)
    return bytes(out)


@pytest.fixture
def tone() -> ToneEngine:
    return ToneEngine()


@pytest.fixture
def server(tone: ToneEngine):
    with local_server(tone) as srv:
        yield srv


@pytest.fixture
async def cloud(server: LocalServer):
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url, retry=FAST_RETRY) as engine:
        yield engine


def other_tasks() -> set[asyncio.Task]:
    """Tasks on this loop besides the running test."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}
