"""What the HTTP engines share: the key, the pooled client, timeouts, and retries only before audio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import ClassVar

import httpx

from ..audio.wav import wav_to_pcm
from ..errors import (
    APIConnectionError,
    APITimeoutError,
    EngineClosedError,
    GLMTTSError,
    InvalidRequestError,
    ServerError,
    TruncatedStreamError,
)
from ..text.limit import MAX_INPUT_CHARS, split_text
from .base import BaseEngine, check_timeout

__all__ = ["ConnectionInfo", "HTTPEngine", "RetryPolicy", "check_base_url"]

logger = logging.getLogger("glmtts_plugins.http")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries for retryable errors, only before the first audio byte of a request was handed on.

    Back-off is "full jitter": a random wait in ``[0, min(max_delay, base_delay * 2**attempt)]``.
    A plain HTTP 500 is retried at most once, as the API reference advises.
    """

    max_retries: int = 2
    base_delay: float = 0.2
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2**attempt)))


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """How the last request got its connection, for metrics (LiveKit's ``TTSMetrics``).

    ``reused``: a pooled keep-alive connection was used (``None`` when the transport does not say);
    ``acquire_time``: seconds from sending the request until the connection was ready for it
    (includes TCP connect and TLS for a new connection).
    """

    reused: bool | None
    acquire_time: float


class _Attempt:
    """One HTTP attempt, followed through httpcore's ``trace`` extension: which phase it is in (to
    name a timeout), whether its connection was reused, and the raw TCP stream of a connection still
    being set up.

    httpcore does not close that stream when the TLS handshake fails or is cancelled (the socket would
    linger until garbage collection), so :meth:`abandon` closes it.
    """

    __slots__ = ("_raw", "acquire_time", "phase", "reused", "started")

    def __init__(self) -> None:
        self.phase = "first byte"  # until httpcore reports a connect (a transport that does not trace)
        self.reused: bool | None = None
        self.acquire_time: float | None = None
        self.started = time.perf_counter()
        self._raw: object = None

    async def trace(self, name: str, info: dict) -> None:
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
                await raw.aclose()  # type: ignore[attr-defined]

    def connection(self) -> ConnectionInfo | None:
        if self.acquire_time is None:
            return None
        return ConnectionInfo(self.reused, self.acquire_time)


def check_base_url(value: object) -> str:
    """``value`` without a trailing slash if it is an absolute http(s) URL with a host and a valid port;
    else :class:`InvalidRequestError` naming ``base_url`` (never a retryable connection error later)."""
    hint = "an absolute http:// or https:// URL such as https://open.bigmodel.cn/api/paas/v4"
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"base_url must be {hint}, got {value!r}", field="base_url")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(
            f"base_url {value!r} does not parse ({exc}); use {hint}", field="base_url"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(f"base_url {value!r} lacks a scheme or host; use {hint}", field="base_url")
    if url.port is not None and not 0 < url.port < 65536:
        raise InvalidRequestError(f"base_url {value!r}: port must be 1-65535", field="base_url")
    return value.rstrip("/")


class _BearerAuth(httpx.Auth):
    """Adds the key at send time, so no header dict holding it lives in our frames' locals."""

    def __init__(self, key: _Secret) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_BearerAuth('***')"

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        request.headers["Authorization"] = "Bearer " + self._key.get()
        yield request


class _Secret:
    """Holds the API key so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class HTTPEngine(BaseEngine):
    """An engine behind an HTTP API: one pooled keep-alive ``httpx.AsyncClient``, a bearer key that no
    repr, log or traceback shows, a connect timeout, a per-attempt deadline for the first audio and a
    read timeout re-armed by audio, and retries of retryable errors only before the first audio byte of
    a request was handed on.

    ``timeout`` (per request) replaces ``first_byte_timeout`` for that request: it bounds each attempt's
    connect, TLS and first byte together; a timeout names the phase it hit. ``last_connection`` tells
    whether the last request reused a pooled connection and how long getting it took.

    Subclasses provide ``url``, ``_stream_once(body, timeout)`` (yields PCM) and ``_raise_for_response``.
    """

    _accept: ClassVar[dict[str, str]] = {}
    _native_timeout: ClassVar[bool] = True

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        connect_timeout: float,
        first_byte_timeout: float,
        read_timeout: float,
        retry: RetryPolicy | None,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        connect_timeout = check_timeout(connect_timeout, "connect_timeout", optional=False)  # type: ignore[assignment]
        first_byte_timeout = check_timeout(first_byte_timeout, "first_byte_timeout", optional=False)  # type: ignore[assignment]
        read_timeout = check_timeout(read_timeout, "read_timeout", optional=False)  # type: ignore[assignment]
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidRequestError(f"retry must be a RetryPolicy, got {retry!r}", field="retry")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise InvalidRequestError("http_client must be an httpx.AsyncClient", field="http_client")
        self.base_url = check_base_url(base_url)
        self._key = _Secret(api_key) if api_key else None
        self._auth = _BearerAuth(self._key) if self._key else None
        self.first_byte_timeout = first_byte_timeout
        self.read_timeout = read_timeout
        self.retry = retry or RetryPolicy()
        self.last_connection: ConnectionInfo | None = None
        self._closed = False
        self._own_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=max(first_byte_timeout, read_timeout),
                write=connect_timeout,
                pool=connect_timeout,
            ),
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60.0),
            trust_env=False,
        )

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _stream_once(self, body: dict, timeout: float) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def _raise_for_response(self, response: httpx.Response) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed or self._client.is_closed:
            raise EngineClosedError(
                f"this {type(self).__name__} was closed (aclose()); create a new engine to speak again"
            )

    async def prewarm(self) -> None:
        """Open the keep-alive connection now, so the first request skips TCP and TLS set-up."""
        self._check_open()
        try:
            response = await self._client.request("HEAD", self.base_url + "/")
            await response.aclose()
        except httpx.HTTPError as exc:
            logger.warning("prewarm could not reach %s: %s", self.base_url, type(exc).__name__)

    async def aclose(self) -> None:
        """Close the pooled connections (of a client this engine made); later use raises
        :class:`~glmtts_plugins.EngineClosedError`."""
        self._closed = True
        if self._own_client:
            await self._client.aclose()

    async def _stream_pieces(
        self, text: str, body: Callable[[str, bool], dict], timeout: float | None
    ) -> AsyncIterator[bytes]:
        """Stream ``text`` as one request per piece of at most 1024 characters, in order."""
        self._check_open()
        for piece in split_text(text, MAX_INPUT_CHARS):
            if piece.strip():
                chunks = self._stream_with_retry(body(piece, True), timeout or self.first_byte_timeout)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        yield chunk

    async def _fetch_pieces(
        self, text: str, body: Callable[[str, bool], dict], timeout: float | None
    ) -> bytes:
        """Whole-WAV mode: the PCM of one non-streaming request per piece, concatenated."""
        self._check_open()
        limit = timeout or self.first_byte_timeout
        pcm = bytearray()
        for piece in split_text(text, MAX_INPUT_CHARS):
            if piece.strip():
                request = body(piece, False)
                pcm += await self._with_retry(lambda b=request: self._fetch_wav(b, limit))
        return bytes(pcm)

    async def _with_retry(self, attempt_fn):  # type: ignore[no-untyped-def]
        attempt = 0
        while True:
            try:
                return await attempt_fn()
            except GLMTTSError as exc:
                if not self._should_retry(exc, attempt):
                    raise
                await self._backoff(exc, attempt)
                attempt += 1

    async def _stream_with_retry(self, body: dict, timeout: float) -> AsyncIterator[bytes]:
        attempt = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._stream_once(body, timeout)) as chunks:
                    async for chunk in chunks:
                        yielded = True
                        yield chunk
                return
            except GLMTTSError as exc:
                if yielded or not self._should_retry(exc, attempt):
                    if yielded:
                        exc.retryable = False
                    raise
                await self._backoff(exc, attempt)
                attempt += 1

    def _should_retry(self, exc: GLMTTSError, attempt: int) -> bool:
        if not exc.retryable or attempt >= self.retry.max_retries:
            return False
        return not (exc.status == 500 and exc.code in (None, "500") and attempt >= 1)

    async def _backoff(self, exc: GLMTTSError, attempt: int) -> None:
        delay = self.retry.delay(attempt)
        logger.info("retrying after %s in %.2fs (attempt %d)", type(exc).__name__, delay, attempt + 1)
        await asyncio.sleep(delay)

    async def _open(self, body: dict, deadline: float, attempt: _Attempt) -> httpx.Response:
        """Send the request and wait for the response head, within the attempt's deadline."""
        async with _translate_errors(self.url, attempt), asyncio.timeout_at(deadline):
            request = self._client.build_request(
                "POST", self.url, json=body, headers=self._accept, extensions={"trace": attempt.trace}
            )
            try:
                response = await self._client.send(request, auth=self._auth, stream=True)
            except BaseException:
                await attempt.abandon()
                raise
            finally:
                self.last_connection = attempt.connection() or self.last_connection
            attempt.phase = "first byte"
        if response.status_code != 200 or response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            try:
                async with _translate_errors(self.url, attempt), asyncio.timeout_at(deadline):
                    await self._raise_for_response(response)
            finally:
                await response.aclose()
        return response

    async def _fetch_wav(self, body: dict, timeout: float) -> bytes:
        """Whole-WAV mode: one request, the WAV body checked for our rate and one channel."""
        loop = asyncio.get_running_loop()
        attempt = _Attempt()
        response = await self._open(body, loop.time() + timeout, attempt)
        request_id = response.headers.get("x-request-id")
        attempt.phase = "read"
        try:
            # The body of a long text takes a while: bounded per read by the client's read timeout.
            async with _translate_errors(self.url, attempt, request_id):
                data = await response.aread()
        finally:
            await response.aclose()
        try:
            pcm, rate, channels = wav_to_pcm(data)
        except ValueError as exc:
            raise ServerError(f"the server sent an unreadable WAV: {exc}", request_id=request_id) from None
        if rate != self.sample_rate or channels != 1:
            raise ServerError(
                f"expected {self.sample_rate} Hz mono, got {rate} Hz with {channels} channels",
                request_id=request_id,
            )
        return pcm


class _translate_errors:
    """Map httpx and timeout failures to the package's errors, naming the attempt's phase (connect, TLS,
    first byte, read) when it timed out."""

    __slots__ = ("attempt", "request_id", "url")

    def __init__(self, url: str, attempt: _Attempt, request_id: str | None = None) -> None:
        self.url, self.attempt, self.request_id = url, attempt, request_id

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if exc is None or isinstance(exc, GLMTTSError):
            return False
        phase = self.attempt.phase
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            message = f"{phase} timeout from {self.url}"
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
