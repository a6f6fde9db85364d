"""``VllmOmniEngine``: the open-source GLM-TTS served by vLLM-Omni (``POST /v1/audio/speech``).

vLLM-Omni clones a voice per request from ``ref_audio`` + ``ref_text``; named voices come from a
:class:`~glmtts_plugins.engines.references.VoiceRegistry`. Streaming asks for raw PCM
(``stream: true, response_format: "pcm", stream_format: "audio"``) and reads the body as it arrives,
carrying a sample split across chunks.

``volume`` is applied here as gain (samples saturate at the 16-bit limits instead of wrapping): vLLM's
API has no volume. ``speed`` is sent as vLLM-Omni's ``speed`` field when it is not 1.0 (its speech API
takes 0.25-4.0); whether the GLM-TTS model honours it is not verified, and a server that rejects it
answers with an error naming the field.

Verified only against the local server's emulation of this API (``glmtts serve`` answers
``/v1/audio/speech``); no test here ran a real GPU model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np

from ..errors import InvalidRequestError, ServerError, TruncatedStreamError, error_from_code
from .base import SAMPLE_RATE
from .http import HTTPEngine, RetryPolicy, _Attempt, _translate_errors, check_base_url
from .references import ReferenceVoice, VoiceRegistry

__all__ = ["DEFAULT_MODEL", "VllmOmniEngine"]

DEFAULT_MODEL = "zai-org/GLM-TTS"
KEY_ENV_VAR = "VLLM_API_KEY"
_RAW_PCM_TYPES = frozenset({"audio/pcm", "audio/l16", "application/octet-stream", ""})


class VllmOmniEngine(HTTPEngine):
    """GLM-TTS on your own GPUs through vLLM-Omni, with named voices.

    ``base_url`` is the server root (``http://gpu-host:8091``; a trailing ``/v1`` is accepted). ``voices`` is
    a directory, a TOML/JSON file, a mapping, or a ready :class:`VoiceRegistry`. ``api_key`` (or
    ``VLLM_API_KEY``) is sent as a bearer token when set.
    """

    sample_rate = SAMPLE_RATE
    provider = "vLLM-Omni"
    _accept: ClassVar[dict[str, str]] = {
        "Accept": "audio/pcm, audio/wav, application/json",
        "Accept-Encoding": "identity",  # raw audio is read as it arrives; never compressed
    }

    def __init__(
        self,
        base_url: str | None = None,
        *,
        voices: VoiceRegistry | str | Path | Mapping | None = None,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        first_byte_timeout: float = 15.0,
        read_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        base = base_url or os.environ.get("VLLM_OMNI_BASE_URL")
        if not base:
            raise InvalidRequestError(
                "base_url is required: the vLLM-Omni server root, e.g. http://gpu-host:8091", field="base_url"
            )
        base = check_base_url(base)
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(f"model must be a non-empty model name, got {model!r}", field="model")
        super().__init__(
            api_key=api_key or os.environ.get(KEY_ENV_VAR) or None,
            base_url=base[:-3] if base.endswith("/v1") else base,
            connect_timeout=connect_timeout,
            first_byte_timeout=first_byte_timeout,
            read_timeout=read_timeout,
            retry=retry,
            http_client=http_client,
        )
        self.model = model
        if voices is None or isinstance(voices, VoiceRegistry):
            self.voices = voices
        else:
            self.voices = VoiceRegistry.load(voices)

    def __repr__(self) -> str:
        return (
            f"VllmOmniEngine(base_url={self.base_url!r}, model={self.model!r}, "
            f"voices={sorted(self.voices or ())}, api_key={self._key!r})"
        )

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/audio/speech"

    def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """PCM chunks (even lengths) as the server produces them."""
        return self._gained(text, voice, speed, volume, timeout)

    async def _gained(
        self, text: str, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        body = functools.partial(self._body, reference=self._reference(voice), speed=speed)
        async with contextlib.aclosing(self._stream_pieces(text, body, timeout)) as chunks:
            async for chunk in chunks:
                yield _gain(chunk, volume)

    async def _synthesize(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> bytes:
        """Whole-WAV mode: one non-streaming request per piece of at most 1024 characters."""
        body = functools.partial(self._body, reference=self._reference(voice), speed=speed)
        return _gain(await self._fetch_pieces(text, body, timeout), volume)

    def _reference(self, voice: str) -> ReferenceVoice:
        if self.voices is None:
            raise InvalidRequestError(
                "no voices registered: vLLM-Omni needs a reference recording per request; pass "
                "voices=DIR (NAME.wav + NAME.txt per voice) or a TOML/JSON file",
                field="voice",
            )
        return self.voices.get_voice(voice)

    def _body(self, text: str, stream: bool, *, reference: ReferenceVoice, speed: float) -> dict:
        body: dict = {
            "model": self.model,
            "input": text,
            "ref_audio": reference.ref_audio,
            "ref_text": reference.ref_text,
            "stream": stream,
            "response_format": "pcm" if stream else "wav",
        }
        if stream:
            body["stream_format"] = "audio"
        if speed != 1.0:
            body["speed"] = speed
        return body

    async def _raise_for_response(self, response: httpx.Response) -> None:
        await _raise_openai_error(response)

    async def _stream_once(self, body: dict, timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        attempt = _Attempt()
        deadline = loop.time() + timeout
        response = await self._open(body, deadline, attempt)
        request_id = response.headers.get("x-request-id")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        encoding = response.headers.get("content-encoding", "identity").lower()
        if kind not in _RAW_PCM_TYPES or encoding != "identity":
            await response.aclose()
            raise ServerError(
                f"expected a raw PCM stream, got content-type {kind or 'none'!r} ({encoding})",
                request_id=request_id,
            )
        carry = b""
        got_audio = False
        try:
            reads = response.aiter_raw()
            while True:
                async with _translate_errors(self.url, attempt, request_id), asyncio.timeout_at(deadline):
                    try:
                        data = await anext(reads)
                    except StopAsyncIteration:
                        break
                pcm = carry + data
                cut = len(pcm) & ~1
                carry = pcm[cut:]
                if cut:
                    got_audio = True
                    attempt.phase = "read"
                    deadline = loop.time() + self.read_timeout
                    yield pcm[:cut]
        finally:
            await response.aclose()
        if not got_audio:
            raise ServerError("the server answered 200 with no audio", request_id=request_id)
        if carry:
            raise TruncatedStreamError("the audio stream ended inside a sample", request_id=request_id)


def _gain(pcm: bytes, volume: float) -> bytes:
    """Scale 16-bit PCM by ``volume``, saturating at the sample limits instead of wrapping around."""
    if volume == 1.0 or not pcm:
        return pcm
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) * volume
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


async def _raise_openai_error(response: httpx.Response) -> None:
    """Raise the core error for an OpenAI-shaped (or vLLM's flat, or FastAPI's) error body."""
    request_id = response.headers.get("x-request-id")
    body = await response.aread()
    message, field = None, None
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else {}
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            field = error.get("param")
        elif isinstance(error, str):
            message = error
    except ValueError:
        message = body[:200].decode("utf-8", "replace") or None
    exc = error_from_code(
        response.status_code, None, str(message or f"HTTP {response.status_code}"), request_id=request_id
    )
    if isinstance(exc, InvalidRequestError) and isinstance(field, str):
        exc.field = field
    raise exc
