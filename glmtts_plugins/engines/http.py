"""What the HTTP engines share: the pooled client, one stream loop with pluggable decoders, the
whole-WAV request, per-attempt deadlines, and retries only before audio.

Each engine supplies only what differs: ``url``, ``_request_body``, ``_decoder`` (how a response body
becomes PCM: the cloud's SSE events, or raw PCM), ``_error_from`` (how an error body maps to the error
hierarchy) and ``_gain``. A decoder follows httpx's decoders: ``feed(data)`` returns the PCM in a read,
``flush()`` the PCM left at the end of the body; it reports an in-stream error through ``error`` (so
the audio that came before the error, even in the same read, is delivered first) and the logical end
of the audio through ``finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypedDict

import httpx

from ..audio.wav import wav_to_pcm
from ..errors import EngineClosedError, GLMTTSError, InvalidRequestError, ServerError
from ..text.limit import MAX_INPUT_CHARS, split_text
from .aiohttp_transport import AiohttpTransport
from .base import BaseEngine, check_timeout
from .deadline import ReadDeadline
from .transport import (
    Attempt,
    BearerAuth,
    ConnectionInfo,
    Secret,
    check_base_url,
    reap_orphans,
    translate_errors,
)

__all__ = ["AudioDecoder", "ConnectionInfo", "HTTPEngine", "HTTPOptions", "RetryPolicy", "check_base_url"]

logger = logging.getLogger("glmtts_plugins.http")

DRAIN_TIMEOUT = 0.25
"""After the audio's logical end, how long the rest of the body may take to arrive (so the connection
goes back to the pool) before the connection is closed instead."""
MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error body read for its message; the rest is not read."""
MAX_WAV_BODY = 256 * 1024 * 1024
"""A whole-WAV body larger than this is refused (about 90 minutes at 24 kHz: far above 1024 characters)."""
PROGRESS_SLACK = 1.0
"""Seconds of audio the progress rule forgives (a stream may pause once it is ahead)."""
_NOT_AUDIO = ("text/html", "application/xhtml", "text/xml", "application/xml")


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


class HTTPOptions(TypedDict, total=False):
    """The keywords every HTTP engine takes besides its own."""

    connect_timeout: float
    """TCP connect and TLS handshake (default 5 s)."""
    first_byte_timeout: float
    """From sending a request to its first audio, connection included (default 10 s; vLLM-Omni 15 s);
    a request's ``timeout=`` replaces it."""
    read_timeout: float
    """Between two pieces of audio once audio flows (default 10 s)."""
    min_realtime: float
    """The progress rule: once audio flows it must keep up with this fraction of real time (default 0.2,
    0 turns the rule off); slower is an ``APITimeoutError`` ("read") before audio runs dry."""
    retry: RetryPolicy | None
    http_client: httpx.AsyncClient | None
    """A client of your own (left open by the engine); by default the engine makes and closes one."""


class AudioDecoder(Protocol):
    """Turns a streamed response body into PCM (any length; the loop carries a split sample)."""

    finished: bool
    """The stream announced the end of its audio: stop reading."""
    error: GLMTTSError | None
    """An error the stream reported; raised once the audio before it has been yielded."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class HTTPEngine(BaseEngine):
    """An engine behind an HTTP API: one pooled keep-alive ``httpx.AsyncClient``, a bearer key that no
    repr, log or traceback shows, a connect timeout, a per-attempt deadline for the first audio and a
    read timeout re-armed by audio, and retries of retryable errors only before the first audio byte of
    a request was handed on.

    ``timeout`` (per request) replaces ``first_byte_timeout`` for that request: it bounds each attempt's
    connect, TLS and first byte together; a timeout names the phase it hit. ``last_connection`` tells
    whether the last request reused a pooled connection and how long getting it took.
    """

    _accept: ClassVar[dict[str, str]] = {}
    _native_timeout: ClassVar[bool] = True
    _first_byte_default: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        model: str,
        connect_timeout: float = 5.0,
        first_byte_timeout: float | None = None,
        read_timeout: float = 10.0,
        min_realtime: float = 0.2,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if (
            isinstance(min_realtime, bool)
            or not isinstance(min_realtime, int | float)
            or not 0 <= min_realtime < 100
        ):
            raise InvalidRequestError(
                f"min_realtime must be a number in [0, 100) (0: off), got {min_realtime!r}",
                field="min_realtime",
            )
        if first_byte_timeout is None:
            first_byte_timeout = self._first_byte_default
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(f"model must be a non-empty model name, got {model!r}", field="model")
        connect = check_timeout(connect_timeout, "connect_timeout", optional=False)
        first_byte = check_timeout(first_byte_timeout, "first_byte_timeout", optional=False)
        read = check_timeout(read_timeout, "read_timeout", optional=False)
        assert connect is not None and first_byte is not None and read is not None
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidRequestError(f"retry must be a RetryPolicy, got {retry!r}", field="retry")
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise InvalidRequestError("http_client must be an httpx.AsyncClient", field="http_client")
        self.base_url = check_base_url(base_url)
        if api_key is not None and (
            not isinstance(api_key, str)
            or not api_key.isascii()
            or not api_key.isprintable()
            or " " in api_key
        ):
            # (the key itself is never shown)
            raise InvalidRequestError("api_key must be printable ASCII with no spaces", field="api_key")
        self.model = model
        self._key = Secret(api_key) if api_key else None
        self._auth = BearerAuth(self._key) if self._key else None
        self.first_byte_timeout = first_byte
        self.read_timeout = read
        self.min_realtime = float(min_realtime)
        self.retry = retry or RetryPolicy()
        self.last_connection: ConnectionInfo | None = None
        self._connect_timeout = connect
        self._closed = False
        self._own_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            transport=AiohttpTransport(),
            timeout=httpx.Timeout(connect=connect, read=max(first_byte, read), write=connect, pool=connect),
            trust_env=False,
        )

    # -- what each engine supplies ----------------------------------------------------------------

    @property
    def url(self) -> str:
        raise NotImplementedError

    def _request_body(
        self, text: str, stream: bool, *, voice: str, speed: float, volume: float
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _decoder(self, response: httpx.Response, request_id: str | None) -> AudioDecoder:
        raise NotImplementedError

    def _error_from(self, status: int, body: bytes, request_id: str | None) -> GLMTTSError:
        raise NotImplementedError

    def _gain(self, pcm: bytes, volume: float) -> bytes:
        return pcm

    # -- life cycle -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._client.is_closed:
            raise EngineClosedError(
                f"this {type(self).__name__} was closed (aclose()); create a new engine to speak again"
            )

    async def prewarm(self) -> None:
        """Open the keep-alive connection now, so the first request skips TCP and TLS set-up."""
        self._check_open()
        attempt = Attempt()
        failed = True
        try:
            request = self._client.build_request(
                "HEAD", self.base_url + "/", extensions={"trace": attempt.trace}
            )
            await (await self._client.send(request)).aclose()
            failed = False
        except httpx.HTTPError as exc:
            logger.warning("prewarm could not reach %s: %s", self.base_url, type(exc).__name__)
        finally:
            if failed:  # also when cancelled (a framework cancels a prewarm it no longer needs)
                await attempt.abandon()
                await reap_orphans(self._client, attempt)

    async def aclose(self) -> None:
        """Close the pooled connections (of a client this engine made); later use raises
        :class:`~glmtts_plugins.EngineClosedError`."""
        self._closed = True
        if self._own_client:
            await self._client.aclose()

    # -- the engine: one request per piece of at most 1024 characters, in order --------------------

    async def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """PCM chunks (even lengths) as the server sends them: one request per piece of at most 1024
        characters, each retried (only before its first audio was handed on) by the retry policy."""
        self._check_open()
        limit = timeout or self.first_byte_timeout
        for piece in split_text(text, MAX_INPUT_CHARS):
            if not piece.strip():
                continue
            body = self._request_body(piece, True, voice=voice, speed=speed, volume=volume)
            attempt = 0
            while True:
                yielded = False
                try:
                    async with contextlib.aclosing(self._stream_once(body, limit)) as chunks:
                        async for chunk in chunks:
                            yielded = True
                            yield self._gain(chunk, volume)
                    break
                except GLMTTSError as exc:
                    if yielded or not self._should_retry(exc, attempt):
                        if yielded:
                            exc.retryable = False
                        raise
                    await self._backoff(exc, attempt)
                    attempt += 1

    async def _synthesize(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> bytes:
        """Whole-WAV mode: the PCM of one non-streaming request per piece, concatenated."""
        self._check_open()
        limit = timeout or self.first_byte_timeout
        pcm = bytearray()
        for piece in split_text(text, MAX_INPUT_CHARS):
            if piece.strip():
                body = self._request_body(piece, False, voice=voice, speed=speed, volume=volume)
                attempt = 0
                while True:
                    try:
                        pcm += await self._fetch_wav(body, limit)
                        break
                    except GLMTTSError as exc:
                        if not self._should_retry(exc, attempt):
                            raise
                        await self._backoff(exc, attempt)
                        attempt += 1
        return self._gain(bytes(pcm), volume)

    # -- retries ----------------------------------------------------------------------------------

    def _should_retry(self, exc: GLMTTSError, attempt: int) -> bool:
        if not exc.retryable or attempt >= self.retry.max_retries:
            return False
        return not (exc.status == 500 and exc.code in (None, "500") and attempt >= 1)

    async def _backoff(self, exc: GLMTTSError, attempt: int) -> None:
        delay = self.retry.delay(attempt)
        logger.info("retrying after %s in %.2fs (attempt %d)", type(exc).__name__, delay, attempt + 1)
        await asyncio.sleep(delay)

    # -- one attempt ------------------------------------------------------------------------------

    async def _open(
        self, body: dict[str, Any], deadline: float, attempt: Attempt, *, streamed: bool
    ) -> httpx.Response:
        """Send the request and wait for the response head, within the attempt's deadline; an error
        status (or a JSON body) raises the engine's error for it. A streamed body's reads are bounded by
        the stream's own :class:`ReadDeadline`, so the transport gets no read timeout to re-arm per read."""
        self._check_open()  # also for a retry after the engine was closed mid-request
        async with translate_errors(self.url, attempt), asyncio.timeout_at(deadline):
            # httpx's read timeout must not cut short a request timeout longer than first_byte_timeout.
            c = self._connect_timeout
            r = None if streamed else max(deadline - asyncio.get_running_loop().time(), self.read_timeout)
            request = self._client.build_request(
                "POST",
                self.url,
                json=body,
                headers=self._accept,
                timeout=httpx.Timeout(connect=c, read=r, write=c, pool=c),
                extensions={"trace": attempt.trace},
            )
            try:
                response = await self._client.send(request, auth=self._auth, stream=True)
            except BaseException:
                await attempt.abandon()
                await reap_orphans(self._client, attempt)
                raise
            finally:
                self.last_connection = attempt.connection() or self.last_connection
            attempt.phase = "first byte"
        if response.status_code != 200 or _media_type(response).startswith("application/json"):
            request_id = response.headers.get("x-request-id")
            failed = True
            try:
                async with translate_errors(self.url, attempt, request_id), asyncio.timeout_at(deadline):
                    data = await _read_capped(response, MAX_ERROR_BODY, truncate=True)
                failed = False
            finally:
                await self._release(response, attempt, failed)
            raise self._error_from(response.status_code, data, request_id)
        return response

    async def _release(self, response: httpx.Response, attempt: Attempt, failed: bool) -> None:
        """Close the response; after a failure or a cancellation also repair the pool, so the
        connection is returned or closed on every path."""
        try:
            await response.aclose()
        finally:
            if failed:
                await reap_orphans(self._client, attempt)

    async def _stream_once(self, body: dict[str, Any], timeout: float) -> AsyncGenerator[bytes, None]:
        """One streamed attempt: a deadline for the first audio (keep-alives do not extend it), then a
        read deadline moved on by each piece of audio; a sample split across reads is carried over."""
        loop = asyncio.get_running_loop()
        attempt = Attempt()
        deadline = loop.time() + timeout
        response = await self._open(body, deadline, attempt, streamed=True)
        request_id: str | None = response.headers.get("x-request-id")
        failed = True
        reads: AsyncIterator[bytes] | None = None
        timer = ReadDeadline(deadline)
        try:
            _refuse_a_page(response, request_id, "an audio stream")
            decoder = self._decoder(response, request_id)
            reads = _body_reads(response, self._own_client)
            carry = b""
            started = audio_bytes = 0.0
            ended = False
            async with translate_errors(self.url, attempt, request_id):
                while not (ended or decoder.finished):
                    with timer:
                        try:
                            pcm = decoder.feed(await anext(reads))
                        except StopAsyncIteration:
                            pcm, ended = decoder.flush(), True
                    if pcm:
                        if carry:
                            pcm = carry + pcm
                        cut = len(pcm) & ~1
                        carry = pcm[cut:]
                        if cut:
                            now = loop.time()
                            if attempt.phase != "read":
                                attempt.phase, started = "read", now
                            audio_bytes += cut
                            timer.when = self._next_deadline(attempt, now, started, audio_bytes)
                            yield pcm[:cut] if carry else pcm
                    if decoder.error is not None:
                        raise decoder.error
            if carry:
                # One rule for every engine: the stream ended cleanly inside a sample. The half sample
                # cannot be played; the utterance is otherwise whole, so it is dropped, not an error.
                logger.warning("%s: the audio ended inside a sample; dropped its last byte", self.url)
            if not ended:
                # Read the end of the body (normally already here) so the connection goes back to the
                # pool; a server that lingers after the end only costs the connection, never an error.
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(DRAIN_TIMEOUT):
                        async for _ in reads:
                            pass
            failed = False
        finally:
            timer.close()
            if reads is not None:  # closed here rather than by the garbage collector's finalizer task
                with contextlib.suppress(Exception):
                    await reads.aclose()  # type: ignore[attr-defined]
            await self._release(response, attempt, failed)

    def _next_deadline(self, attempt: Attempt, now: float, started: float, audio_bytes: float) -> float:
        """When the next audio is due: within ``read_timeout``, and (the progress rule) before the audio
        so far falls behind ``min_realtime`` times real time since the first audio (less a second of
        slack), so a trickle of bytes cannot hold a stream open for ever."""
        deadline = now + self.read_timeout
        if self.min_realtime:
            audio_s = audio_bytes / (2 * self.sample_rate)
            behind = started + (audio_s + PROGRESS_SLACK) / self.min_realtime
            if behind < deadline:
                attempt.note = f" (the audio fell below {self.min_realtime:g}x real time)"
                return behind
        attempt.note = ""
        return deadline

    async def _fetch_wav(self, body: dict[str, Any], timeout: float) -> bytes:
        """Whole-WAV mode: one request, the WAV body checked for our rate and one channel."""
        loop = asyncio.get_running_loop()
        attempt = Attempt()
        response = await self._open(body, loop.time() + timeout, attempt, streamed=False)
        request_id = response.headers.get("x-request-id")
        attempt.phase = "read"
        failed = True
        try:
            _refuse_a_page(response, request_id, "a WAV file")
            # The body of a long text takes a while: bounded per read by the client's read timeout.
            async with translate_errors(self.url, attempt, request_id):
                data = await _read_capped(response, MAX_WAV_BODY)
            failed = False
        finally:
            await self._release(response, attempt, failed)
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


def _body_reads(response: httpx.Response, direct: bool) -> AsyncIterator[bytes]:
    """The body's reads. On our own transport (``direct``), straight from its stream unless a
    ``Content-Encoding`` (which we ask not to get) must be decoded: that skips two of httpx's per-read
    layers. Any other transport gets ``aiter_bytes``: under httpcore, closing the stream's own iterator
    mid-body can leave a pooled connection busy (``tests/test_pool_hygiene.py``)."""
    if direct and response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity"):
        return aiter(response.stream)  # type: ignore[arg-type]
    return response.aiter_bytes()


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower()


def _refuse_a_page(response: httpx.Response, request_id: str | None, expected: str) -> None:
    """A 200 that is a web page (a captive portal, a proxy's login) is not audio and retrying will not
    make it so: a non-retryable error naming what came."""
    kind = _media_type(response)
    if kind.startswith(_NOT_AUDIO):
        raise ServerError(
            f"expected {expected}, got a {kind} page (a proxy or portal in the way? check base_url)",
            retryable=False,
            request_id=request_id,
        )


async def _read_capped(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The (decoded) body, at most ``limit`` bytes: cut there when ``truncate``, else refused."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            if truncate:
                return bytes(data[:limit])
            raise ServerError(
                f"the response body is over {limit} bytes; refused",
                retryable=False,
                request_id=response.headers.get("x-request-id"),
            )
    return bytes(data)
