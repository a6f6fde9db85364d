"""The server under hostile clients: bounded memory, idle and slow-loris connections dropped, a cap on
connections (issue 13, items 1 and 7). Servers run in their own process so their memory and file
descriptors can be read from /proc; every loop is bounded and everything stays on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from bench._server import free_port, running
from glmtts_plugins.server import ConnectionLimits, LocalServer, ThreadedServer

from .conftest import local_server

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")

TOKEN = "limits-token"
LIMITED = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, max_connections=64)
_SERVE_LIMITED = (
    "import sys\n"
    "from glmtts_plugins.server import ConnectionLimits, serve\n"
    "from glmtts_plugins.testing import ToneEngine\n"
    "limits = ConnectionLimits(header_timeout=1.0, body_timeout=1.0, max_connections=64)\n"
    f"serve(ToneEngine(), port=int(sys.argv[1]), tokens=[{TOKEN!r}], limits=limits)\n"
)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _flood(port: int, requests: list[bytes], batch: int = 25) -> list[int]:
    """Send ``requests`` pipelined in batches over one keep-alive connection; the response statuses."""
    statuses = []
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as reader:
        for start in range(0, len(requests), batch):
            chunk = requests[start : start + batch]
            sock.sendall(b"".join(chunk))
            for _ in chunk:
                status = int(reader.readline().split()[1])
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                reader.read(length)
                statuses.append(status)
    return statuses


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def _post(path: str, body: bytes, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _hostile_mix(rounds: int) -> list[bytes]:
    """Unknown 8 KB paths, /health, and 60 KB bodies with and without a valid token (rejected: bad model)."""
    body = b'{"model": "glm-4", "input": "' + b"x" * 60_000 + b'"}'
    mix = []
    for i in range(rounds):
        mix.append(_get(f"/{i}/" + "p" * 8_000))
        mix.append(_get("/health"))
        if i % 7 == 0:
            mix.append(_post("/api/paas/v4/audio/speech", body, TOKEN))
            mix.append(_post("/api/paas/v4/audio/speech", body, None))
    return mix


def _closed_within(
    socks: list[socket.socket], within: float, poke: bytes = b"", since: float | None = None
) -> list[float | None]:
    """Seconds from ``since`` (default: now) until the server closed each socket (None: still open after
    ``within`` seconds from ``since``). With ``poke``, a few bytes are written to every open socket every
    0.2 s (a slow-loris client)."""
    t0 = time.monotonic() if since is None else since
    closed: list[float | None] = [None] * len(socks)
    with selectors.DefaultSelector() as sel:
        for i, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, i)
        while sel.get_map() and time.monotonic() - t0 < within:
            for key, _ in sel.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionError:
                    data = b""
                if not data:
                    closed[key.data] = time.monotonic() - t0
                    sel.unregister(key.fileobj)
            if poke:
                for key in list(sel.get_map().values()):
                    with contextlib.suppress(OSError):
                        key.fileobj.send(poke)  # type: ignore[union-attr]
    return closed


def test_request_log_is_bounded_by_count_and_bytes() -> None:
    with local_server(tokens=[TOKEN], max_records=100, max_record_bytes=1_000_000) as srv:
        statuses = _flood(srv.port, _hostile_mix(700))
        state = srv.state
        assert statuses.count(200) == 700 and statuses.count(404) == 700 and statuses.count(400) == 100
        assert 0 < len(srv.records) <= 100 and state.log.bytes <= 1_000_000
        assert sum(rec.size for rec in srv.records) == state.log.bytes
        assert 0 < len(state.requests_seen) <= 100
        assert all(len(path) <= 256 for _, path, _ in state.requests_seen)
        last = _flood(srv.port, [_post("/api/paas/v4/audio/speech", b'{"model": "last"}', TOKEN)])
        assert last == [400] and srv.records[-1].body == {"model": "last"}  # the newest is always kept


async def test_bodies_of_records_already_trimmed_do_not_count_and_the_newest_records_stay() -> None:
    """Twelve requests send their heads, then their 6 KB bodies: the first ones were trimmed (by count)
    while their bodies were still on the way, and those bodies must not count against the byte bound (they
    did, so the log's byte count grew past what it held and every later trim emptied it). Then more
    requests, one at a time: the log holds the newest records, up to both bounds, and counts their bytes
    exactly."""
    max_records, max_bytes = 8, 40_000
    body = b'{"model": "glm-4", "input": "' + b"x" * 6_000 + b'"}'  # rejected (bad model) once read

    def head(seq: int) -> bytes:
        return _post("/api/paas/v4/audio/speech", body, TOKEN).split(b"\r\n\r\n", 1)[0] + (
            f"\r\nX-Seq: {seq}\r\n\r\n".encode()
        )

    def seqs(srv: LocalServer) -> list[int]:
        return [int(rec.headers["x-seq"]) for rec in srv.records]

    async def status(reader: asyncio.StreamReader) -> int:
        return int((await reader.readline()).split()[1])

    with local_server(tokens=[TOKEN], max_records=max_records, max_record_bytes=max_bytes) as srv:
        log = srv.state.log
        streams = []
        for seq in range(12):  # heads only, in order: each request's record exists, its body is awaited
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(head(seq))
            streams.append((reader, writer))
            assert await srv.wait_for(lambda n=seq: bool(srv.records) and seqs(srv)[-1] == n)
        assert seqs(srv)[0] > 0  # the first records were trimmed while their bodies were still to come
        for _, writer in streams:
            writer.write(body)
        assert [await status(reader) for reader, _ in streams] == [400] * 12
        for _, writer in streams:
            writer.close()
        assert log.bytes == sum(rec.size for rec in srv.records) <= max_bytes

        for seq in range(12, 30):  # one at a time
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(head(seq) + body)
            assert await status(reader) == 400
            writer.close()
            held = seqs(srv)
            assert held == list(range(seq + 1 - len(held), seq + 1)), held  # the newest, in order
            assert log.bytes == sum(rec.size for rec in srv.records) <= max_bytes
            assert len(held) <= max_records
            # trimming keeps half of each bound: at least the records that fit in half the bytes
            assert len(held) >= min(seq - 11, (max_bytes // 2) // max(rec.size for rec in srv.records))


def test_glmtts_serve_memory_stays_bounded_and_idle_connections_drop() -> None:
    """``glmtts serve --token T`` keeps no records; 8 KB unknown paths, /health and 60 KB bodies do not
    grow it (each grew it before: 20 000 such requests took it from 52 to 210 MB). Idle connections opened
    at the start are dropped after the default 5 s header timeout."""
    port = free_port()
    argv = [sys.executable, "-m", "glmtts_plugins.cli", "serve", "--port", str(port), "--token", TOKEN]
    with running(argv, port, quiet=True) as proc:
        _flood(port, _hostile_mix(300))  # warm-up: allocator pools, caches
        with _connections(port, 20) as idle:
            opened = time.monotonic()
            before = _rss_bytes(proc.pid)
            statuses = _flood(port, _hostile_mix(1_500))
            after = _rss_bytes(proc.pid)
            assert len(statuses) == 3_000 + 2 * 215 and set(statuses) == {200, 400, 401, 404}
            closed = _closed_within(idle, within=5.0 + 4.0, since=opened)
    growth = after - before
    spread = f"{min(closed):.2f}-{max(closed):.2f} s" if None not in closed else closed  # type: ignore[type-var]
    print(f"RSS {before / 1e6:.1f} -> {after / 1e6:.1f} MB over 3430 requests; idle closed after {spread}")
    assert growth < 8_000_000, growth  # before: 27 MB for this flood, and growing with it
    assert None not in closed and 4.0 < min(closed) and max(closed) < 5.0 + 4.0, closed  # type: ignore[operator,type-var]


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[int, int]]:
    """``serve()`` with a 1 s header and body timeout and at most 64 connections: ``(port, pid)``."""
    port = free_port()
    with running([sys.executable, "-c", _SERVE_LIMITED, str(port)], port, quiet=True) as proc:
        yield port, proc.pid


@contextlib.contextmanager
def _connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(n)]


def test_idle_connections_are_dropped_and_capped(limited: tuple[int, int]) -> None:
    port, pid = limited
    baseline = _fds(pid)
    opened = time.monotonic()
    with _connections(port, 100) as socks:
        time.sleep(0.3)
        held = _fds(pid) - baseline
        assert held <= LIMITED.max_connections + 2, held  # the rest were refused at once
        closed = _closed_within(socks, within=LIMITED.header_timeout + 4.0, since=opened)
    refused = [c for c in closed if c is not None and c < 0.5 * LIMITED.header_timeout]
    dropped = [c for c in closed if c is not None and c >= 0.8 * LIMITED.header_timeout]
    print(
        f"fds held {held}; {len(refused)} refused; idle dropped after {min(dropped):.2f}-{max(dropped):.2f} s"
    )
    assert None not in closed
    assert len(refused) >= 100 - LIMITED.max_connections - 2 and len(refused) + len(dropped) == 100
    assert max(dropped) < LIMITED.header_timeout + 2.0
    assert _wait(lambda: _fds(pid) <= baseline + 2)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # still serving


def test_slow_loris_clients_are_dropped(limited: tuple[int, int]) -> None:
    port, pid = limited
    baseline = _fds(pid)
    opened = time.monotonic()
    with _connections(port, 30) as socks:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        poke = b"X-Slow: 1\r\n"
        closed = _closed_within(socks, within=LIMITED.header_timeout + 4.0, poke=poke, since=opened)
    print(f"slow-loris clients dropped after {min(closed):.2f}-{max(closed):.2f} s")  # type: ignore[type-var]
    assert None not in closed and max(closed) < LIMITED.header_timeout + 2.0  # type: ignore[type-var]
    assert min(closed) > 0.8 * LIMITED.header_timeout  # type: ignore[type-var,operator]
    assert _wait(lambda: _fds(pid) <= baseline + 2)


def test_a_slow_body_gets_408_and_the_connection_is_closed(limited: tuple[int, int]) -> None:
    port, _ = limited
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = _post("/api/paas/v4/audio/speech", b"", TOKEN).replace(
            b"Content-Length: 0", b"Content-Length: 900"
        )
        sock.sendall(head + b'{"model": "glm-tts", ')
        t0 = time.monotonic()
        sock.settimeout(LIMITED.body_timeout + 4.0)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        elapsed = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408 ") and b'"code":"1210"' in reply
    assert LIMITED.body_timeout * 0.8 < elapsed < LIMITED.body_timeout + 2.0


def test_a_kept_alive_connection_is_closed_after_the_header_timeout(limited: tuple[int, int]) -> None:
    port, _ = limited
    body = b'{"model": "glm-tts", "input": "\xe4\xbd\xa0\xe5\xa5\xbd", "response_format": "wav"}'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(2):  # a reused connection is served, then dropped once idle
            sock.sendall(_post("/api/paas/v4/audio/speech", body, TOKEN))
            time.sleep(0.3)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        closed = _closed_within([sock], within=LIMITED.header_timeout + 4.0)
    assert closed[0] is not None and closed[0] < LIMITED.header_timeout + 2.0


def test_limits_apply_to_local_server_too() -> None:
    limits = ConnectionLimits(header_timeout=0.5, max_connections=8)
    with local_server(limits=limits) as srv:
        with _connections(srv.port, 12) as socks:
            closed = _closed_within(socks, within=4.0)
        assert None not in closed and sum(c < 0.25 for c in closed) >= 4  # type: ignore[operator]
        assert httpx.get(srv.root_url + "/health").status_code == 200
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:  # an unfinished head is not buffered
            sock.sendall(_get("/" + "p" * limits.max_header_bytes)[:-2])  # without its final CRLF
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")


def _wait(predicate: object, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def test_an_upgraded_websocket_outlives_the_header_timeout() -> None:
    """The head deadline is for HTTP requests: a WebSocket that went quiet for longer stays open."""
    client = pytest.importorskip("websockets.asyncio.client")
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text(await ws.receive_text())

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    async with ThreadedServer(app, limits=ConnectionLimits(header_timeout=0.3)) as srv:
        async with client.connect(f"ws://127.0.0.1:{srv.port}/ws", ping_interval=None) as ws:
            await asyncio.sleep(1.0)
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 5) == "still here"
