"""The engines' default transport raises what httpx's own transport raises, and traces what it traces.

Each case runs one request through ``httpx.AsyncClient`` on our aiohttp transport and on httpx's own
(httpcore) against the same hostile peer on loopback, and compares the outcome: the exception class, or
the body. The engines' error translation is written once against httpx's exceptions, so this is what
lets it hold on both.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest

from glmtts_plugins.engines.aiohttp_transport import AiohttpTransport

from ._peers import chunked, gzipped, raw_server, read_request, replying, response_head, unaccepted_port

Request = Callable[[httpx.AsyncClient], Awaitable[bytes]]
TIMEOUT = httpx.Timeout(connect=0.3, read=0.3, write=0.3, pool=0.3)


def clients() -> list[httpx.AsyncClient]:
    return [
        httpx.AsyncClient(transport=AiohttpTransport(), timeout=TIMEOUT, trust_env=False),
        httpx.AsyncClient(timeout=TIMEOUT, trust_env=False),
    ]


async def outcome(client: httpx.AsyncClient, url: str) -> str | bytes:
    """The body, or the name of the httpx exception the request raised."""
    try:
        async with client.stream("POST", url, json={"input": "你好"}) as response:
            return b"".join([chunk async for chunk in response.aiter_bytes()])
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def both(url: str) -> list[str | bytes]:
    results = []
    for client in clients():
        async with client:
            results.append(await outcome(client, url))
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_connect_is_connect_error_on_both() -> None:
    assert await both(f"http://127.0.0.1:{free_port()}/x") == ["ConnectError", "ConnectError"]


async def test_hanging_connect_is_connect_timeout_on_both() -> None:
    with unaccepted_port() as port:
        assert await both(f"http://127.0.0.1:{port}/x") == ["ConnectTimeout", "ConnectTimeout"]


async def test_stalled_head_and_stalled_body_are_read_timeouts_on_both() -> None:
    async def stall_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)

    async def stall_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response_head(Transfer_Encoding="chunked") + chunked(b"data: x\n\n"))
        await writer.drain()
        await asyncio.sleep(2)

    for handler in (stall_head, stall_body):
        async with raw_server(handler) as peer:
            assert await both(peer.base_url + "/x") == ["ReadTimeout", "ReadTimeout"]


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closed before any response
        response_head(Transfer_Encoding="chunked") + chunked(b"data: 1\n\n"),  # closed inside the body
        response_head(Content_Length="100") + b"short",  # closed before Content-Length
        b"NOT HTTP AT ALL\r\n\r\n",  # not HTTP
    ],
    ids=["no-response", "mid-chunked-body", "short-content-length", "garbage"],
)
async def test_a_broken_response_is_remote_protocol_error_on_both(reply: bytes) -> None:
    async with raw_server(replying(lambda head, body: reply)) as peer:
        assert await both(peer.base_url + "/x") == ["RemoteProtocolError", "RemoteProtocolError"]


async def test_bodies_and_content_encoding_arrive_the_same_on_both() -> None:
    body = b"data: " + "你好".encode() * 500 + b"\n\n"
    plain = (
        response_head(Transfer_Encoding="chunked") + chunked(body[:700]) + chunked(body[700:]) + chunked(b"")
    )
    packed = gzipped(body)
    compressed = response_head(Content_Encoding="gzip", Content_Length=str(len(packed))) + packed
    for reply in (plain, compressed):
        async with raw_server(replying(lambda head, data, reply=reply: reply)) as peer:
            assert await both(peer.base_url + "/x") == [body, body]


async def test_trace_events_on_a_new_and_a_reused_connection_match_httpcore() -> None:
    followed = ("connection.connect_tcp.started", "http11.send_request_headers.started")

    def reply(head: bytes, body: bytes) -> bytes:
        return response_head(Content_Length="2") + b"ok"

    async with raw_server(replying(reply, keep_open=True)) as peer:
        seen: list[list[list[str]]] = []
        for client in clients():
            async with client:
                per_request = []
                for _ in range(2):
                    events: list[str] = []

                    async def trace(name: str, info: dict[str, object], events: list[str] = events) -> None:
                        if name.endswith(followed):
                            events.append(name.split(".", 1)[1])

                    response = await client.post(peer.base_url + "/x", extensions={"trace": trace})
                    assert response.content == b"ok"
                    per_request.append(events)
                seen.append(per_request)
    new, reused = ["connect_tcp.started", "send_request_headers.started"], ["send_request_headers.started"]
    assert seen == [[new, reused], [new, reused]]


async def test_a_response_closed_mid_body_closes_its_connection_and_a_read_one_is_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(response_head(Transfer_Encoding="chunked") + chunked(b"a" * 10))
            await writer.drain()
            await asyncio.sleep(0.2)  # the rest of the body comes later
            writer.write(chunked(b"b" * 10) + chunked(b""))
            await writer.drain()

    async with raw_server(handler) as peer:
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
            async with client.stream("POST", peer.base_url + "/x") as response:
                async for _ in response.aiter_raw():
                    break  # leave mid-body
            assert (transport.pool().active, transport.pool().idle) == (0, 0)
            assert await peer.all_closed()  # the server saw the connection close
            response = await client.post(peer.base_url + "/x")
            assert response.content == b"a" * 10 + b"b" * 10
            assert (transport.pool().active, transport.pool().idle) == (0, 1)  # read to the end: kept
        assert peer.opened == 2
