"""Barge-in never leaks a connection: after hundreds of randomized cancels and closes at every point of
a request (connecting, waiting for the head, mid-audio, draining after the end), the pool holds only
idle connections and the process holds no extra socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from glmtts_plugins import CloudEngine, RetryPolicy
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, local_server, other_tasks

CANCELS = 500  # about 10 s here; 1 000 were run by hand with the same result


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


Pool = Callable[[], tuple[int, int]]  # (connections serving a request, idle connections)


@contextlib.asynccontextmanager
async def engine(transport: str, base_url: str, **options: object) -> AsyncIterator[tuple[CloudEngine, Pool]]:
    """A CloudEngine on the default transport (aiohttp) or on httpx's own (httpcore), and its pool."""
    client = httpx.AsyncClient(trust_env=False) if transport == "httpcore" else None
    try:
        async with CloudEngine(api_key=API_KEY, base_url=base_url, http_client=client, **options) as cloud:  # type: ignore[arg-type]
            inner = cloud._client._transport  # type: ignore[attr-defined]

            def pool() -> tuple[int, int]:
                if transport == "httpcore":
                    conns = inner._pool.connections
                    return sum(not c.is_idle() for c in conns), sum(c.is_idle() for c in conns)
                state = inner.pool()
                return state.active, state.idle

            yield cloud, pool
    finally:
        if client is not None:
            await client.aclose()


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_randomized_barge_in_leaves_no_connection_and_no_socket(transport: str) -> None:
    rng = random.Random(13)
    with local_server(ToneEngine(ms_per_char=20), faults="chunk_ms=2") as srv:
        baseline = open_sockets()
        before = other_tasks()
        retry = RetryPolicy(max_retries=0)
        async with engine(transport, srv.base_url, retry=retry) as (cloud, pool):

            async def consume(close_after: int | None) -> None:
                chunks = cloud.stream("你好。" * rng.randint(1, 4))
                async with contextlib.aclosing(chunks):
                    n = 0
                    async for _ in chunks:
                        n += 1
                        if n == close_after:
                            return  # the consumer stops reading: the iterator is closed

            start = time.monotonic()
            for _ in range(CANCELS):
                if rng.random() < 0.75:  # cancel the consuming task at a random moment
                    task = asyncio.create_task(consume(None))
                    await asyncio.sleep(rng.uniform(0, 0.03))
                    task.cancel()
                else:  # or stop reading after a few chunks
                    task = asyncio.create_task(consume(rng.randint(1, 6)))
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                busy, idle = pool()
                assert busy == 0, busy  # every cancel path returned or closed its connection
            elapsed = time.monotonic() - start
            assert idle <= 1  # one keep-alive connection at most, reused
        # The client's sockets and the server's ends of them are gone (the server needs a moment).
        # (httpx leaves its inner body iterators to the loop's async-generator finalizer: give it a moment.)
        for _ in range(100):
            if open_sockets() <= baseline and other_tasks() == before:
                break
            await asyncio.sleep(0.05)
        assert open_sockets() <= baseline, (open_sockets(), baseline, idle)
        assert other_tasks() == before
    print(f"{CANCELS} cancels in {elapsed:.1f} s")


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_a_cancelled_prewarm_leaves_nothing_in_the_pool(transport: str) -> None:
    from ._peers import raw_server, silent

    async with raw_server(silent) as peer:
        for scheme in ("http", "https"):  # stuck waiting for the head, or inside the TLS handshake
            base = f"{scheme}://127.0.0.1:{peer.port}"
            async with engine(transport, base) as (cloud, pool):
                task = asyncio.create_task(cloud.prewarm())
                await asyncio.sleep(0.2)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                assert pool()[0] == 0
        assert await peer.all_closed() and peer.opened == 2
