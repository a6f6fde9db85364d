"""What the HTTP engines share: the key, the pooled client, timeouts, and retries only before audio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import ClassVar

import httpx

from ..audio.wav import wav_to_pcm
from ..errors import (
    APIConnectionError,
    APITimeoutError,
    GLMTTSError,
    InvalidRequestError,
    ServerError,
    TruncatedStreamError,
)
from ..text.limit import MAX_INPUT_CHARS, split_text
from .base import BaseEngine

__all__ = ["HTTPEngine", "RetryPolicy"]

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
    repr, log or traceback shows, a connect timeout, a first-byte deadline and a read timeout re-armed by
    audio, and retries of retryable errors only before the first audio byte of a request was handed on.

    Subclasses provide ``url``, ``_stream_once(body)`` (yields PCM) and ``_raise_for_response``.
    """

    _accept: ClassVar[dict[str, str]] = {}

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
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("first_byte_timeout", first_byte_timeout),
            ("read_timeout", read_timeout),
        ):
            if not value > 0:
                raise InvalidRequestError(f"{name} must be > 0 seconds, got {value!r}", field=name)
        self._key = _Secret(api_key) if api_key else None
        self._auth = _BearerAuth(self._key) if self._key else None
        self.base_url = base_url.rstrip("/")
        self.first_byte_timeout = first_byte_timeout
        self.read_timeout = read_timeout
        self.retry = retry or RetryPolicy()
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

    def _stream_once(self, body: dict) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def _raise_for_response(self, response: httpx.Response) -> None:
        raise NotImplementedError

    async def prewarm(self) -> None:
        """Open the keep-alive connection now, so the first request skips TCP and TLS set-up."""
        try:
            response = await self._client.request("HEAD", self.base_url + "/")
            await response.aclose()
        except httpx.HTTPError as exc:
            logger.warning("prewarm could not reach %s: %s", self.base_url, type(exc).__name__)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def _stream_pieces(self, text: str, body: Callable[[str, bool], dict]) -> AsyncIterator[bytes]:
        """Stream ``text`` as one request per piece of at most 1024 characters, in order."""
        for piece in split_text(text, MAX_INPUT_CHARS):
            if piece.strip():
                async with contextlib.aclosing(self._stream_with_retry(body(piece, True))) as chunks:
                    async for chunk in chunks:
                        yield chunk

    async def _fetch_pieces(self, text: str, body: Callable[[str, bool], dict]) -> bytes:
        """Whole-WAV mode: the PCM of one non-streaming request per piece, concatenated."""
        pcm = bytearray()
        for piece in split_text(text, MAX_INPUT_CHARS):
            if piece.strip():
                request = body(piece, False)
                pcm += await self._with_retry(lambda b=request: self._fetch_wav(b))
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

    async def _stream_with_retry(self, body: dict) -> AsyncIterator[bytes]:
        attempt = 0
        while True:
            yielded = False
            try:
                async with contextlib.aclosing(self._stream_once(body)) as chunks:
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

    async def _open(self, body: dict, deadline: float) -> httpx.Response:
        """Send the request and wait for the response head, within the first-byte deadline."""
        async with _translate_errors(self.url, "first byte"), asyncio.timeout_at(deadline):
            request = self._client.build_request("POST", self.url, json=body, headers=self._accept)
            response = await self._client.send(request, auth=self._auth, stream=True)
        if response.status_code != 200 or response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            try:
                async with _translate_errors(self.url, "first byte"), asyncio.timeout_at(deadline):
                    await self._raise_for_response(response)
            finally:
                await response.aclose()
        return response

    async def _fetch_wav(self, body: dict) -> bytes:
        """Whole-WAV mode: one request, the WAV body checked for our rate and one channel."""
        loop = asyncio.get_running_loop()
        response = await self._open(body, loop.time() + self.first_byte_timeout)
        request_id = response.headers.get("x-request-id")
        try:
            # The body of a long text takes a while: bounded per read by the client's read timeout.
            async with _translate_errors(self.url, "read", request_id):
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
    """Map httpx and timeout failures to the package's errors, naming the phase that failed."""

    __slots__ = ("phase", "request_id", "url")

    def __init__(self, url: str, phase: str, request_id: str | None = None) -> None:
        self.url, self.phase, self.request_id = url, phase, request_id

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:  # type: ignore[no-untyped-def]
        if exc is None or isinstance(exc, GLMTTSError):
            return False
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            message = f"{self.phase} timeout from {self.url}"
            raise APITimeoutError(message, request_id=self.request_id) from None
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) and self.phase == "read":
            raise TruncatedStreamError(
                f"the connection to {self.url} broke mid-stream ({type(exc).__name__})",
                request_id=self.request_id,
            ) from None
        if isinstance(exc, httpx.HTTPError):
            raise APIConnectionError(
                f"connection to {self.url} failed: {type(exc).__name__}", request_id=self.request_id
            ) from None
        return False
