"""An ``httpx`` transport over aiohttp: the HTTP engines' default, because aiohttp parses HTTP in C.

httpx stays the client users see (``http_client=`` still takes any ``httpx.AsyncClient``); only what
moves bytes changes. Measured in ``bench/capacity.py``, httpx's own transport (h11 and httpcore in pure
Python) spends more CPU per streamed event than the rest of the speech path together; this one about a
third of it. What it keeps from httpx's transport, so the engines behave the same over either:

* httpx's exceptions (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError`` for
  a connection that broke before or inside a body, ``ReadError``/``WriteError``), so the engines'
  error translation is one piece of code;
* httpcore's ``trace`` extension, for the events the engines follow: ``connection.connect_tcp.started``
  (a new connection), ``connection.start_tls.started`` (reported when a request fails or is cancelled
  with its TCP connection up and its TLS handshake not finished: aiohttp connects and handshakes in one
  call) and ``http11.send_request_headers.started`` (the connection is ready);
* httpx's timeouts: ``connect`` (TCP and TLS), ``pool`` (waiting for a free connection and connecting),
  ``read`` (between two reads; ``None`` leaves reads unbounded for a caller that bounds them itself).
  ``write`` is not enforced (aiohttp has no write timeout; request bodies here are a few KB).

The response body arrives as aiohttp reads it, not decompressed (``httpx.Response.aiter_bytes`` decodes a
``Content-Encoding``). Closing a response whose body was not read to the end closes its connection; a
complete one goes back to the pool. Not supported: proxies, HTTP/2 and client certificates; pass an
``httpx.AsyncClient`` of your own for those.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport", "PoolState", "shared_ssl_context"]

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]
_NO_CEIL = 1e9  # aiohttp rounds timeouts at or above ``ceil_threshold`` up to whole seconds: never
_CURRENT: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar(
    "glmtts_aiohttp_request", default=None
)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying client context (httpx's: the certifi bundle) for every engine in the process.

    Building one costs ~34 ms of CPU and ~850 KB; a context is safe to share between connections."""
    return httpx.create_ssl_context(trust_env=False)  # as the engines' client: no SSL_CERT_* variables


@dataclass(frozen=True, slots=True)
class PoolState:
    """Connections of a transport's pool: ``active`` (serving a request) and ``idle`` (kept alive)."""

    active: int
    idle: int


class _RequestState:
    """What one request's connection set-up did, for its trace."""

    __slots__ = ("connecting", "headers_sent", "socks", "tls", "trace")

    def __init__(self, trace: Trace | None, tls: bool) -> None:
        self.trace, self.tls = trace, tls
        self.socks: list[socket.socket] = []  # happy eyeballs may try several addresses
        self.connecting = False  # a new connection was started (else: waiting for a pooled one)
        self.headers_sent = False

    def in_handshake(self) -> bool:
        """TCP connected, TLS not done: the request failed or was stopped inside the handshake."""
        if not self.tls or self.headers_sent:
            return False
        for sock in self.socks:
            try:
                sock.getpeername()
            except OSError:  # not connected, or already closed (a losing attempt)
                continue
            return True
        return False


def _socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    state = _CURRENT.get()
    if state is not None:
        state.socks.append(sock)
    return sock


async def _on_create_start(_session: object, ctx: SimpleNamespace, _params: object) -> None:
    state = ctx.trace_request_ctx
    if state is not None:
        state.connecting = True
        if state.trace is not None:
            await state.trace("connection.connect_tcp.started", {})


async def _on_headers_sent(_session: object, ctx: SimpleNamespace, _params: object) -> None:
    state = ctx.trace_request_ctx
    if state is not None:
        state.headers_sent = True
        state.socks.clear()
        if state.trace is not None:
            await state.trace("http11.send_request_headers.started", {})


def _as_httpx(exc: aiohttp.ClientError, connecting: bool, pooled: bool = False) -> httpx.TransportError:
    """An aiohttp failure as the ``httpx`` exception httpx's own transport raises for it (``pooled``: the
    request was still waiting for a free connection)."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.PoolTimeout(message) if pooled else httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError
    ):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientOSError | aiohttp.ClientConnectionResetError):
        return httpx.ConnectError(message) if connecting else httpx.ReadError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    return httpx.TransportError(message)


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp reads it: each chunk as it arrives.

    Its own iterator rather than an async generator: httpx's wrapper closes what it iterates, but an
    async generator nested one level further down would be left to the garbage collector's finalizer."""

    __slots__ = ("_content", "_response")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except aiohttp.ClientError as exc:
            raise _as_httpx(exc, connecting=False) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def abort(self) -> None:
        """End a read that is waiting (the transport is closing): it raises ``ReadError``, as under httpx's
        own transport, instead of waiting for data that will never come."""
        self._content.set_exception(aiohttp.ClientOSError("the HTTP client was closed"))

    async def aclose(self) -> None:
        # A body read to its end returns its connection to the pool; any other closes it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` on an ``aiohttp`` session made on first use (in the running loop).

    ``max_connections``: connections open at once (0: no limit); ``keepalive_expiry``: seconds an idle
    connection is kept; ``ssl_context``: defaults to :func:`shared_ssl_context`.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bodies: weakref.WeakSet[_Body] = weakref.WeakSet()
        self._closed = False

    def pool(self) -> PoolState:
        """The pool's connections now (for tests and diagnostics)."""
        connector = self._session.connector if self._session is not None else None
        if connector is None:
            return PoolState(0, 0)
        idle = sum(len(conns) for conns in connector._conns.values())
        return PoolState(len(connector._acquired), idle)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport was closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # used from another event loop: the old session's sockets are the old
            self._session = None  # loop's (httpx's own pool behaves the same way)
            self._loop = loop
        if self._session is None or self._session.closed:
            tracing = aiohttp.TraceConfig()
            tracing.on_connection_create_start.append(_on_create_start)
            tracing.on_request_headers_sent.append(_on_headers_sent)
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                keepalive_timeout=self._keepalive,
                ssl=self._ssl or shared_ssl_context(),
                socket_factory=_socket_factory,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                trace_configs=[tracing],
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        timeouts = request.extensions.get("timeout", {})
        state = _RequestState(request.extensions.get("trace"), request.url.scheme == "https")
        headers = request.headers
        try:
            body: Any = request.content
        except httpx.RequestNotRead:  # a streamed body: sent whole, so not chunked
            body = await request.aread()
            headers = headers.copy()
            headers.pop("transfer-encoding", None)
            headers["content-length"] = str(len(body))
        token = _CURRENT.set(state)
        try:
            try:
                response = await session.request(
                    request.method,
                    URL(str(request.url), encoded=True),
                    headers=headers.multi_items(),
                    data=body or None,
                    allow_redirects=False,
                    compress=None,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        connect=timeouts.get("pool"),
                        sock_connect=timeouts.get("connect"),
                        sock_read=timeouts.get("read"),
                        ceil_threshold=_NO_CEIL,
                    ),
                    trace_request_ctx=state,
                )
            except aiohttp.ClientError as exc:
                pooled = not (state.connecting or state.headers_sent)
                raise _as_httpx(exc, connecting=not state.headers_sent, pooled=pooled) from exc
        except BaseException as exc:
            # aiohttp connects and handshakes in one call: say that the handshake is where it stopped (a
            # failed one has its socket closed already, but names itself).
            tls_failed = isinstance(exc.__cause__, aiohttp.ClientSSLError)
            if (tls_failed or state.in_handshake()) and state.trace is not None:
                await state.trace("connection.start_tls.started", {})
            raise
        finally:
            _CURRENT.reset(token)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
        body_stream = _Body(response)
        self._bodies.add(body_stream)
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=body_stream,
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        self._closed = True
        for body in list(self._bodies):  # a read waiting on a connection we close would wait for ever
            body.abort()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
