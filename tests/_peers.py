"""Hostile peers on loopback for faults the local server cannot produce: a raw asyncio server driven by
a handler, a listener that accepts and never answers (HTTP or TLS), and a port whose connect hangs."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Peer:
    """A running raw server: its URL, and what it saw (connections opened, closed by the client)."""

    port: int
    opened: int = 0
    closed: int = 0
    requests: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def all_closed(self, within: float = 2.0) -> bool:
        """Whether every connection the client opened was closed by it, waiting up to ``within`` s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self.closed < self.opened:
                    self.changed.clear()
                    await self.changed.wait()
        return self.closed == self.opened


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[Peer]:
    """Serve ``handler`` on a loopback port; every connection is counted and closed at the end."""
    peer = Peer(0)
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.opened += 1
        writers.add(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            peer.closed += 1
            peer.changed.set()
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        for writer in list(writers):
            writer.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request: its head and its body (Content-Length only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer: no HTTP response, no TLS ServerHello. Returns when the client leaves."""
    while await reader.read(65536):
        pass


def response_head(status: int = 200, content_type: str = "text/event-stream", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: keep-alive"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sse_event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def audio_event(pcm: bytes) -> bytes:
    import base64

    return sse_event({"choices": [{"index": 0, "delta": {"content": base64.b64encode(pcm).decode()}}]})


FINISH_EVENT = sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def replying(
    make_reply: Callable[[bytes, bytes], bytes | list[bytes]], *, keep_open: bool = False
) -> Handler:
    """A handler answering each request with ``make_reply(head, body)``: bytes, or a list of writes
    (each flushed on its own); the connection then closes unless ``keep_open``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            reply = make_reply(head, body)
            for part in [reply] if isinstance(reply, bytes) else reply:
                writer.write(part)
                await writer.drain()
            if not keep_open:
                return

    return handle


@contextlib.contextmanager
def unaccepted_port() -> Iterator[int]:
    """A port whose TCP connect hangs: a listener with a full backlog that never accepts (the kernel
    drops further SYNs, so the client waits in the connect phase)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
