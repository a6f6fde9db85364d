"""The connection side of the HTTP engines: the key kept out of sight, the URL check, following one
attempt through httpcore's ``trace`` extension, and translating transport failures to our errors."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import (
    APIConnectionError,
    APITimeoutError,
    GLMTTSError,
    InvalidRequestError,
    TruncatedStreamError,
)

if TYPE_CHECKING:
    from httpcore import AsyncNetworkStream

__all__ = [
    "Attempt",
    "BearerAuth",
    "ConnectionInfo",
    "Secret",
    "check_base_url",
    "reap_orphans",
    "translate_errors",
]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """How the last request got its connection, for metrics (LiveKit's ``TTSMetrics``).

    ``reused``: a pooled keep-alive connection was used (``None`` when the transport does not say);
    ``acquire_time``: seconds from sending the request until the connection was ready for it
    (includes TCP connect and TLS for a new connection).
    """

    reused: bool | None
    acquire_time: float


class Attempt:
    """One HTTP attempt, followed through httpcore's ``trace`` extension: which phase it is in (to
    name a timeout), whether its connection was reused, and the raw TCP stream of a connection still
    being set up.

    httpcore does not close that stream when the TLS handshake fails or is cancelled (the socket would
    linger until garbage collection), so :meth:`abandon` closes it.
    """

    __slots__ = ("_raw", "acquire_time", "note", "phase", "reused", "started")

    def __init__(self) -> None:
        self.phase = "first byte"  # until httpcore reports a connect (a transport that does not trace)
        self.reused: bool | None = None
        self.acquire_time: float | None = None
        self.started = time.perf_counter()
        self._raw: AsyncNetworkStream | None = None
        self.note = ""  # said after the phase when a timeout hits

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        if name.endswith(".connect_tcp.complete"):
            self._raw = info.get("return_value")
            return
        if name.endswith(".start_tls.complete"):
            self._raw = None
            return
        if not name.endswith(".started"):
            return
        if ".connect_" in name:
            self.phase, self.reused = "connect", False
        elif ".start_tls." in name:
            self.phase = "TLS"
        elif name.endswith(".send_request_headers.started"):
            self._raw = None  # the connection is set up and owned by the pool
            self.phase = "first byte"
            if self.reused is None:
                self.reused = True
            if self.acquire_time is None:
                self.acquire_time = time.perf_counter() - self.started

    async def abandon(self) -> None:
        """Close the TCP stream of a connection whose set-up failed or was cancelled."""
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                await raw.aclose()

    def connection(self) -> ConnectionInfo | None:
        if self.acquire_time is None:
            return None
        return ConnectionInfo(self.reused, self.acquire_time)


async def reap_orphans(client: httpx.AsyncClient, attempt: Attempt) -> None:
    """After an attempt that ended by an error or a cancellation: repair what a cancellation inside
    httpcore can leave in the pool, so no connection (and no socket) is held for ever.

    httpcore 1.0's close and acquire paths have checkpoints that asyncio's cancellation can hit (its
    shields are anyio's): a response close interrupted there leaves its connection ACTIVE with a stale
    request in the pool's queue, and a request cancelled between being given a new connection and
    connecting leaves that connection NEW. Neither is ever reused or expired. So this attempt's request
    (found by its trace hook) is dropped from the queue, and every connection that no queued request
    holds and that is neither idle nor closed is removed and closed. Pools of other transports are left
    alone.
    """
    pool: Any = getattr(getattr(client, "_transport", None), "_pool", None)  # httpcore internals
    try:
        with pool._optional_thread_lock:
            requests = pool._requests
            requests[:] = [r for r in requests if r.request.extensions.get("trace") != attempt.trace]
            held = {id(r.connection) for r in requests if r.connection is not None}
            connections = pool._connections
            orphans = [c for c in connections if id(c) not in held and not (c.is_idle() or c.is_closed())]
            for connection in orphans:
                connections.remove(connection)
    except AttributeError:  # not an httpcore pool, or a version with other internals
        return
    for connection in orphans:
        with contextlib.suppress(Exception):
            await connection.aclose()


def check_base_url(value: object) -> str:
    """``value`` without a trailing slash if it is an absolute http(s) URL with a host, a valid port and no
    credentials; else :class:`InvalidRequestError` naming ``base_url`` (never a retryable connection error
    later). A password in the URL is never repeated in the message."""
    hint = "an absolute http:// or https:// URL such as https://open.bigmodel.cn/api/paas/v4"
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"base_url must be {hint}, got {value!r}", field="base_url")
    shown = repr(re.sub(r"//[^/@]*@", "//***@", value))
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(
            f"base_url {shown} does not parse ({exc}); use {hint}", field="base_url"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(f"base_url {shown} lacks a scheme or host; use {hint}", field="base_url")
    if url.port is not None and not 0 < url.port < 65536:
        raise InvalidRequestError(f"base_url {shown}: port must be 1-65535", field="base_url")
    if url.userinfo:
        message = f"base_url {shown} carries credentials: pass the key as api_key instead"
        raise InvalidRequestError(message, field="base_url")
    return value.rstrip("/")


class BearerAuth(httpx.Auth):
    """Adds the key at send time, so no header dict holding it lives in our frames' locals."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "BearerAuth('***')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self._key.get()
        yield request


class Secret:
    """Holds the API key so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class translate_errors:
    """Map httpx and timeout failures to the package's errors, naming the attempt's phase (connect, TLS,
    first byte, read) when it timed out."""

    __slots__ = ("attempt", "request_id", "url")

    def __init__(self, url: str, attempt: Attempt, request_id: str | None = None) -> None:
        self.url, self.attempt, self.request_id = url, attempt, request_id

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or isinstance(exc, GLMTTSError):
            return False
        phase = self.attempt.phase
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            message = f"{phase} timeout from {self.url}{self.attempt.note}"
            raise APITimeoutError(message, request_id=self.request_id) from None
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) and phase == "read":
            raise TruncatedStreamError(
                f"the connection to {self.url} broke mid-stream ({type(exc).__name__})",
                request_id=self.request_id,
            ) from None
        if isinstance(exc, httpx.HTTPError):
            raise APIConnectionError(
                f"connection to {self.url} failed during {phase}: {type(exc).__name__}",
                request_id=self.request_id,
            ) from None
        return False
