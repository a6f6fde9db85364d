"""``CloudEngine``: the Zhipu open platform's GLM-TTS API (SSE streaming and whole-WAV)."""

from __future__ import annotations

import binascii
import json
import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar, Unpack

import httpx

from ..errors import GLMTTSError, InvalidRequestError, ServerError, TruncatedStreamError, error_from_code
from .base import SAMPLE_RATE
from .http import HTTPEngine, HTTPOptions, RetryPolicy
from .sse import SSEDecoder

__all__ = ["DEFAULT_BASE_URL", "MAX_EVENT_BYTES", "CloudEngine", "CloudStreamDecoder", "RetryPolicy"]

logger = logging.getLogger("glmtts_plugins.cloud")

DEFAULT_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
KEY_ENV_VARS = ("ZAI_API_KEY", "ZHIPUAI_API_KEY")
ENCODE_FORMATS = ("base64", "hex")
MAX_EVENT_BYTES = 16 * 1024 * 1024
"""An SSE event (or an unfinished line) larger than this is refused: real events are a few KB, the
largest the local server makes about 1.2 MB."""
# Compressed SSE would have to be decompressed before it can be read incrementally: ask for none.
_ACCEPT = {"Accept": "text/event-stream, audio/wav", "Accept-Encoding": "identity"}


class CloudEngine(HTTPEngine):
    """GLM-TTS through the cloud API (or any server that speaks its protocol, e.g. ``glmtts serve``).

    One pooled keep-alive ``httpx.AsyncClient`` per engine, so consecutive requests reuse the
    connection; ``prewarm()`` opens it before the first request. Text over 1024 characters is split at
    sentence or clause boundaries and streamed piece by piece, in order. The key comes from ``api_key``,
    else ``ZAI_API_KEY``, else ``ZHIPUAI_API_KEY``; without one, construction fails. ``options`` are the
    HTTP engines' ``connect_timeout``, ``first_byte_timeout``, ``read_timeout``, ``retry`` and
    ``http_client`` (:class:`~glmtts_plugins.engines.http.HTTPOptions`).
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
        **options: Unpack[HTTPOptions],
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
        base_url = base_url or os.environ.get("GLMTTS_BASE_URL") or DEFAULT_BASE_URL
        super().__init__(api_key=api_key, base_url=base_url, model=model, **options)
        self.encode_format = encode_format
        self.watermark_enabled = watermark_enabled

    def __repr__(self) -> str:
        return f"CloudEngine(base_url={self.base_url!r}, model={self.model!r}, api_key={self._key!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/audio/speech"

    def _request_body(
        self, text: str, stream: bool, *, voice: str, speed: float, volume: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
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

    def _decoder(self, response: httpx.Response, request_id: str | None) -> CloudStreamDecoder:
        return CloudStreamDecoder(self.encode_format, request_id)

    def _error_from(self, status: int, body: bytes, request_id: str | None) -> GLMTTSError:
        code = message = None
        try:
            data = json.loads(body)
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                code, message = error.get("code"), error.get("message")
            elif isinstance(error, str):
                message = error
        except (ValueError, RecursionError):
            message = body[:200].decode("utf-8", "replace") or None
        return error_from_code(status, code, message or f"HTTP {status}", request_id=request_id)


def _decode_base64(data: str | bytes) -> bytes:
    return binascii.a2b_base64(data, strict_mode=True)


def _decode_hex(data: str | bytes) -> bytes:
    return bytes.fromhex(data.decode() if isinstance(data, bytes) else data)


_CONTENT_KEY = b'"content"'


class CloudStreamDecoder:
    """The cloud's SSE stream as PCM: audio events decoded (base64 or hex), ``finish_reason: "stop"``
    noted, an in-stream error kept in ``error`` after the audio before it.

    Plain audio events (nearly all of them) skip the JSON parser: the base64 or hex text between
    ``"content":"`` and the next quote is decoded directly, which is several times cheaper. Anything the
    stream sends that is not the documented shape is a :class:`ServerError`, never a raw exception.
    """

    __slots__ = ("_decode", "_sse", "error", "finished", "request_id")

    def __init__(self, encode_format: str, request_id: str | None = None) -> None:
        self._decode: Callable[[str | bytes], bytes] = (
            _decode_base64 if encode_format == "base64" else _decode_hex
        )
        self._sse = SSEDecoder()
        self.finished = False
        self.error: GLMTTSError | None = None
        self.request_id = request_id

    def feed(self, data: bytes) -> bytes:
        pcm = self._audio(self._sse.feed(data))
        if self.error is None and self._sse.pending > MAX_EVENT_BYTES:
            self.error = ServerError(
                f"the server sent an event over {MAX_EVENT_BYTES} bytes; refused",
                retryable=False,
                request_id=self.request_id,
            )
        return pcm

    def flush(self) -> bytes:
        pcm = self._audio(self._sse.close())  # the last event may lack its trailing newline
        if not self.finished and self.error is None:
            self.error = TruncatedStreamError(
                "the audio stream ended without finish_reason 'stop'; the utterance is incomplete",
                request_id=self.request_id,
            )
        return pcm

    def _audio(self, payloads: list[bytes]) -> bytes:
        audio: list[bytes] = []
        for payload in payloads:
            if self.error is not None:
                break
            try:
                self._event(payload, audio)
            except GLMTTSError as exc:
                self.error = exc
        return audio[0] if len(audio) == 1 else b"".join(audio)

    def _event(self, payload: bytes, audio: list[bytes]) -> None:
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
                audio.append(self._content(payload[start:end]))
                return
        if payload.strip() == b"[DONE]":
            return
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            raise ServerError(
                "the server sent an event that is not JSON", request_id=self.request_id
            ) from None
        if not isinstance(event, dict):
            return
        request_id = event.get("request_id") or event.get("id")
        if isinstance(request_id, str):
            self.request_id = request_id
        error = event.get("error")
        if error:
            err = error if isinstance(error, dict) else {"message": error}
            raise error_from_code(None, err.get("code"), err.get("message"), request_id=self.request_id)
        choices = event.get("choices") or ()
        if not isinstance(choices, list):
            raise self._malformed("choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise self._malformed("a choice is not an object")
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise self._malformed("delta is not an object")
            content = delta.get("content")
            if content:
                if not isinstance(content, str):
                    raise self._malformed("content is not a string")
                audio.append(self._content(content))
            if choice.get("finish_reason") == "stop":
                self.finished = True

    def _content(self, data: str | bytes) -> bytes:
        try:
            return self._decode(data)
        except (binascii.Error, ValueError):
            raise ServerError(
                "the server sent audio that does not decode", request_id=self.request_id
            ) from None

    def _malformed(self, what: str) -> ServerError:
        return ServerError(f"the server sent a malformed event: {what}", request_id=self.request_id)
