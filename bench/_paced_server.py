"""A minimal, cheap stand-in for the cloud's streaming endpoint, paced at real time, for capacity runs.

The local server (Starlette + uvicorn, one Python process) spends so much per event that it cannot pace
more than about 70 concurrent streams in real time on the 2-core bench machine, and it shares those cores
with the client being measured. This one answers ``POST .../audio/speech`` (``stream: true``) with the
same SSE audio events as the local server (``data: {"id":…,"choices":[{"index":i,"delta":
{"role":"assistant","return_sample_rate":24000,"content":"<base64>"}}]}``, then ``finish_reason:
"stop"``), 40 ms of 24 kHz audio per input character in events of 20 ms, over HTTP/1.1 keep-alive with
chunked transfer; one 5 ms ticker writes every event that is due, so its cost per event is a few
microseconds. The audio is one tone chunk repeated (the client's cost does not depend on the samples).
``GET /health`` answers 200, as the local server's does (``_server.running`` waits for it).

Run: ``python -m bench._paced_server PORT [RTF]``; ``paced_server(rtf)`` runs it in a child process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import sys
import time
from collections.abc import Iterator

import numpy as np

from ._server import TOKEN, free_port, running

EVENT_S = 0.02  # 20 ms of audio per event, like GLM-TTS
CHUNK = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(480) / 24000)).astype("<i2").tobytes()
AUDIO_TAIL = b'"delta":{"role":"assistant","return_sample_rate":24000,"content":"%s"}}]}\n\n' % (
    base64.b64encode(CHUNK)
)


class _Stream:
    __slots__ = ("base", "conn", "events", "sent", "t0")

    def __init__(self, conn: _Conn, events: int, request_id: str, t0: float) -> None:
        self.conn, self.events, self.sent, self.t0 = conn, events, 0, t0
        self.base = b'{"id":"%s","created":%d,"model":"glm-tts","choices":[{"index":' % (
            request_id.encode(),
            int(time.time()),
        )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Conn(asyncio.Protocol):
    def __init__(self, server: PacedServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.stream: _Stream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's: a Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.server.streams.discard(self.stream)
            self.stream = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and self.stream is None:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4 : head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length :]
            self.request(head[0].split(" "), headers, body)

    def reply(self, status: str, body: bytes = b"") -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), len(body), body)
        )

    def request(self, line: list[str], headers: dict[str, str], body: bytes) -> None:
        method, path = line[0], line[1] if len(line) > 1 else ""
        if method == "GET" and path == "/health":
            self.reply("200 OK", b'{"status":"ok"}')
            return
        if method != "POST" or not path.endswith("/audio/speech"):
            self.reply("404 Not Found")
            return
        if headers.get("authorization") != f"Bearer {TOKEN}":
            self.reply("401 Unauthorized", b'{"error":{"code":"1001","message":"bad token"}}')
            return
        try:
            text = json.loads(body)["input"]
        except (ValueError, KeyError, TypeError):
            self.reply("400 Bad Request", b'{"error":{"code":"1213","message":"no input"}}')
            return
        request_id = secrets.token_hex(8)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache"
            b"\r\nx-request-id: %s\r\ntransfer-encoding: chunked\r\n\r\n" % request_id.encode()
        )
        self.stream = _Stream(self, 2 * len(text), request_id, time.monotonic())
        self.server.streams.add(self.stream)
        self.server.tick_one(self.stream)  # the first event goes out at once

    def done(self) -> None:
        self.stream = None
        if self.buf:
            self.data_received(b"")


class PacedServer:
    def __init__(self, rtf: float) -> None:
        self.rtf = rtf
        self.streams: set[_Stream] = set()

    def tick_one(self, s: _Stream) -> None:
        transport = s.conn.transport
        if transport is None:
            self.streams.discard(s)
            return
        due = s.events
        if self.rtf:
            due = min(due, int((time.monotonic() - s.t0) / (EVENT_S * self.rtf)) + 1)
        out = []
        while s.sent < due:
            out.append(_chunk(b"data: %s%d,%s" % (s.base, s.sent, AUDIO_TAIL)))
            s.sent += 1
        if s.sent >= s.events:
            out.append(_chunk(b'data: %s%d,"finish_reason":"stop"}]}\n\n' % (s.base, s.sent)) + b"0\r\n\r\n")
            self.streams.discard(s)
        if out:
            transport.write(b"".join(out))
        if s not in self.streams:
            s.conn.done()

    async def run(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", port, backlog=1024)
        async with server:
            while True:
                await asyncio.sleep(0.005)
                for s in list(self.streams):
                    self.tick_one(s)


@contextlib.contextmanager
def paced_server(rtf: float = 1.0) -> Iterator[str]:
    """Run the paced server in a child process; yield its base URL."""
    port = free_port()
    with running([sys.executable, "-m", "bench._paced_server", str(port), str(rtf)], port, within=20):
        yield f"http://127.0.0.1:{port}/api/paas/v4"


if __name__ == "__main__":
    asyncio.run(PacedServer(float(sys.argv[2]) if len(sys.argv) > 2 else 1.0).run(int(sys.argv[1])))
