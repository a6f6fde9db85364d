"""The engines' default transport raises what httpx's own transport raises, and traces what it traces.

Each case runs one request through ``httpx.AsyncClient`` on our aiohttp transport and on httpx's own
(httpcore) against the same hostile peer on loopback, and compares the outcome: the exception class, or
the body. The engines' error translation is written once against httpx's exceptions, so this is what
lets it hold on both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from bench._server import free_port
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


async def test_closing_the_client_ends_a_waiting_read_with_read_error_on_both() -> None:
    async def stall_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response_head(Transfer_Encoding="chunked") + chunked(b"data: x\n\n"))
        await writer.drain()
        await asyncio.sleep(5)

    async with raw_server(stall_body) as peer:
        results = []
        for client in clients():
            no_read_timeout = httpx.Timeout(connect=1.0, read=None, write=1.0, pool=1.0)
            async with client.stream("POST", peer.base_url + "/x", timeout=no_read_timeout) as response:
                reads = response.aiter_raw()
                await anext(reads)
                waiting = asyncio.create_task(anext(reads))
                await asyncio.sleep(0.1)
                await client.aclose()  # e.g. engine.aclose() from another task
                try:
                    async with asyncio.timeout(2):
                        await waiting
                    results.append("no error")
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)
        assert results == ["ReadError", "ReadError"]


async def test_a_failed_tls_handshake_is_traced_as_tls_on_both() -> None:
    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # the ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async with raw_server(plain_http) as peer:
        for client in clients():
            events: list[str] = []

            async def trace(name: str, info: dict[str, object], events: list[str] = events) -> None:
                if name.endswith(".started"):
                    events.append(name)

            async with client:
                with pytest.raises(httpx.ConnectError):
                    await client.post(f"https://127.0.0.1:{peer.port}/x", extensions={"trace": trace})
            assert "connection.start_tls.started" in events, events


async def test_a_streamed_request_body_arrives_whole_on_both() -> None:
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readexactly(2)
        else:
            length = next(
                int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
        seen.append(body)
        writer.write(response_head(Content_Length="2") + b"ok")
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"hello"
        yield b"world"

    async with raw_server(echo) as peer:
        for client in clients():
            async with client:
                response = await client.post(peer.base_url + "/x", content=parts())
                assert response.content == b"ok"
    assert seen == [b"helloworld", b"helloworld"]


async def test_waiting_for_a_free_connection_is_a_pool_timeout_on_both() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)

    async with raw_server(slow) as peer:
        results = []
        limits = httpx.Limits(max_connections=1)
        for client in (
            httpx.AsyncClient(transport=AiohttpTransport(max_connections=1), timeout=TIMEOUT),
            httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(connect=0.3, read=5, write=0.3, pool=0.3)),
        ):
            async with client:
                busy = asyncio.create_task(client.post(peer.base_url + "/x", timeout=5))
                await asyncio.sleep(0.1)
                results.append(await outcome(client, peer.base_url + "/x"))
                busy.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await busy
        assert results == ["PoolTimeout", "PoolTimeout"]


def test_an_engine_used_from_a_second_event_loop_still_speaks() -> None:
    from glmtts_plugins import CloudEngine

    from .conftest import API_KEY, local_server

    with local_server() as srv:
        engine = CloudEngine(api_key=API_KEY, base_url=srv.base_url)

        async def speak() -> int:
            return sum([len(chunk) async for chunk in engine.stream("你好。")])

        first = asyncio.run(speak())
        second = asyncio.run(speak())  # a new loop: the transport makes a new session for it
        asyncio.run(engine.aclose())
    assert first == second > 0
