"""Shared fixtures: a real local server on loopback and a CloudEngine pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from glmtts_plugins import CloudEngine, RetryPolicy
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

API_KEY = "test-key-5f2b9c0e7d1a4b38"
FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)


@contextlib.asynccontextmanager
async def served(
    engine: object | None = None, *, faults: str | None = None, **cloud_options: object
) -> AsyncIterator[tuple[LocalServer, CloudEngine]]:
    """A local server (tone engine unless given) with ``faults``, and a CloudEngine pointed at it."""
    options = {"retry": FAST_RETRY, **cloud_options}
    with LocalServer(engine or ToneEngine(), tokens=[API_KEY], faults=faults) as srv:
        async with CloudEngine(api_key=API_KEY, base_url=srv.base_url, **options) as cloud:  # type: ignore[arg-type]
            yield srv, cloud


@pytest.fixture
def tone() -> ToneEngine:
    return ToneEngine()


@pytest.fixture
def server(tone: ToneEngine):
    with LocalServer(tone, tokens=[API_KEY]) as srv:
        yield srv


@pytest.fixture
async def cloud(server: LocalServer):
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url, retry=FAST_RETRY) as engine:
        yield engine


def other_tasks() -> set[asyncio.Task]:
    """Tasks on this loop besides the running test."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}
