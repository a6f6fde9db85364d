"""``CloudEngine``: the Zhipu open platform's GLM-TTS API (SSE streaming and whole-WAV)."""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx

from ..errors import (
    InvalidRequestError,
    ServerError,
    TruncatedStreamError,
    error_from_code,
)
from .base import SAMPLE_RATE
from .http import HTTPEngine, RetryPolicy, _Attempt, _translate_errors
from .sse import SSEDecoder

__all__ = ["DEFAULT_BASE_URL", "CloudEngine", "RetryPolicy"]

logger = logging.getLogger("glmtts_plugins.cloud")

DEFAULT_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
KEY_ENV_VARS = ("ZAI_API_KEY", "ZHIPUAI_API_KEY")
ENCODE_FORMATS = ("base64", "hex")
DRAIN_TIMEOUT = 0.25
_ACCEPT = {"Accept": "text/event-stream, audio/wav"}


class CloudEngine(HTTPEngine):
    """GLM-TTS through the cloud API (or any server that speaks its protocol, e.g. ``glmtts serve``).

    One pooled keep-alive ``httpx.AsyncClient`` per engine, so consecutive requests reuse the
    connection; ``prewarm()`` opens it before the first request. Text over 1024 characters is split at
    sentence or clause boundaries and streamed piece by piece, in order.
    """

    sample_rate = SAMPLE_RATE
    provider = "GLM-TTS"
    _accept: ClassVar[dict[str, str]] = _ACCEPT

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        model: str = "glm-tts",
        encode_format: str = "base64",
        watermark_enabled: bool | None = None,
        connect_timeout: float = 5.0,
        first_byte_timeout: float = 10.0,
        read_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if encode_format not in ENCODE_FORMATS:
            raise InvalidRequestError(
                f"encode_format must be one of {', '.join(ENCODE_FORMATS)}, got {encode_format!r}",
                field="encode_format",
            )
        api_key = api_key or next((os.environ[v] for v in KEY_ENV_VARS if os.environ.get(v)), None)
        if not api_key or not isinstance(api_key, str):
            raise InvalidRequestError(
                "no GLM-TTS API key: pass api_key=... or set ZAI_API_KEY (or ZHIPUAI_API_KEY)",
                field="api_key",
            )
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(f"model must be a non-empty model name, got {model!r}", field="model")
        super().__init__(
            api_key=api_key,
            base_url=base_url or os.environ.get("GLMTTS_BASE_URL") or DEFAULT_BASE_URL,
            connect_timeout=connect_timeout,
            first_byte_timeout=first_byte_timeout,
            read_timeout=read_timeout,
            retry=retry,
            http_client=http_client,
        )
        self.model = model
        self.encode_format = encode_format
        self.watermark_enabled = watermark_enabled

    def __repr__(self) -> str:
        return f"CloudEngine(base_url={self.base_url!r}, model={self.model!r}, api_key={self._key!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/audio/speech"

    # -- the engine ------------------------------------------------------------------------------

    def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """PCM chunks (even lengths) as the server sends them."""
        body = functools.partial(self._body, voice=voice, speed=speed, volume=volume)
        return self._stream_pieces(text, body, timeout)

    async def _synthesize(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> bytes:
        """Whole-WAV mode: one non-streaming request per piece of at most 1024 characters."""
        body = functools.partial(self._body, voice=voice, speed=speed, volume=volume)
        return await self._fetch_pieces(text, body, timeout)

    # -- request plumbing -------------------------------------------------------------------------

    def _body(self, text: str, stream: bool, *, voice: str, speed: float, volume: float) -> dict:
        body: dict = {
            "model": self.model,
            "input": text,
            "voice": voice,
            "speed": speed,
            "volume": volume,
            "stream": stream,
            "response_format": "pcm" if stream else "wav",
        }
        if stream:
            body["encode_format"] = self.encode_format
        if self.watermark_enabled is not None:
            body["watermark_enabled"] = self.watermark_enabled
        return body

    async def _raise_for_response(self, response: httpx.Response) -> None:
        await _raise_cloud_error(response)

    async def _stream_once(self, body: dict, timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        attempt = _Attempt()
        decode = _decode_base64 if self.encode_format == "base64" else _decode_hex
        decoder = SSEDecoder()
        carry = b""
        finished = False
        # One deadline for the first audio (keep-alives do not extend it); after that, each piece of
        # audio re-arms the read deadline.
        deadline = loop.time() + timeout
        response = await self._open(body, deadline, attempt)
        request_id: str | None = response.headers.get("x-request-id")
        try:
            reads = response.aiter_raw()
            ended = False
            while not finished and not ended:
                async with _translate_errors(self.url, attempt, request_id), asyncio.timeout_at(deadline):
                    try:
                        payloads = decoder.feed(await anext(reads))
                    except StopAsyncIteration:
                        # The last event may lack its trailing newline.
                        payloads, ended = decoder.close(), True
                audio: list[bytes] = []
                for payload in payloads:
                    finished, request_id = _handle_event(payload, decode, audio, finished, request_id)
                if audio:
                    pcm = carry + (audio[0] if len(audio) == 1 else b"".join(audio))
                    cut = len(pcm) & ~1
                    carry = pcm[cut:]
                    if cut:
                        attempt.phase = "read"
                        deadline = loop.time() + self.read_timeout
                        yield pcm[:cut]
            if not finished:
                raise TruncatedStreamError(
                    "the audio stream ended without finish_reason 'stop'; the utterance is incomplete",
                    request_id=request_id,
                )
            if not ended:
                # Read the end of the body (normally already here) so the connection goes back to the
                # pool; a server that lingers after "stop" only costs the connection, never an error.
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(DRAIN_TIMEOUT):
                        async for _ in reads:
                            pass
        finally:
            await response.aclose()


def _decode_base64(data: str | bytes) -> bytes:
    return binascii.a2b_base64(data, strict_mode=True)


def _decode_hex(data: str | bytes) -> bytes:
    return bytes.fromhex(data.decode() if isinstance(data, bytes) else data)


_CONTENT_KEY = b'"content"'


def _handle_event(
    payload: bytes, decode, audio: list[bytes], finished: bool, request_id: str | None
) -> tuple[bool, str | None]:
    """Apply one SSE event: collect its audio, note the finish, raise an in-stream error.

    Plain audio events (nearly all of them) skip the JSON parser: the base64 or hex text between
    ``"content":"`` and the next quote is decoded directly, which is several times cheaper.
    """
    key = payload.find(_CONTENT_KEY)
    if key >= 0 and b'"error"' not in payload and b"finish_reason" not in payload:
        start = payload.find(b'"', key + len(_CONTENT_KEY)) + 1
        end = payload.find(b'"', start)
        if (
            end > 0
            and payload[key + len(_CONTENT_KEY) : start - 1].strip() == b":"
            and payload.find(b"\\", start, end) < 0
            and payload.count(_CONTENT_KEY) == 1
        ):
            try:
                audio.append(decode(payload[start:end]))
            except (binascii.Error, ValueError):
                message = "the server sent audio that does not decode"
                raise ServerError(message, request_id=request_id) from None
            return finished, request_id
    if payload.strip() == b"[DONE]":
        return finished, request_id
    try:
        event = json.loads(payload)
    except ValueError:
        raise ServerError("the server sent an event that is not JSON", request_id=request_id) from None
    if not isinstance(event, dict):
        return finished, request_id
    request_id = event.get("request_id") or event.get("id") or request_id
    error = event.get("error")
    if error:
        err = error if isinstance(error, dict) else {"message": str(error)}
        raise error_from_code(None, err.get("code"), err.get("message"), request_id=request_id)
    for choice in event.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            try:
                audio.append(decode(content))
            except (binascii.Error, ValueError):
                message = "the server sent audio that does not decode"
                raise ServerError(message, request_id=request_id) from None
        if choice.get("finish_reason") == "stop":
            finished = True
    return finished, request_id


async def _raise_cloud_error(response: httpx.Response) -> None:
    request_id = response.headers.get("x-request-id")
    body = await response.aread()
    code = message = None
    try:
        error = json.loads(body).get("error") or {}
        code, message = error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace") or None
    raise error_from_code(
        response.status_code, code, message or f"HTTP {response.status_code}", request_id=request_id
    )
