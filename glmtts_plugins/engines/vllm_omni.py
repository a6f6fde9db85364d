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

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Unpack

import httpx
import numpy as np

from ..errors import GLMTTSError, InvalidRequestError, ServerError, error_from_code
from .base import SAMPLE_RATE
from .http import HTTPEngine, HTTPOptions, check_base_url
from .references import ReferenceVoice, VoiceRegistry

__all__ = ["DEFAULT_MODEL", "VllmOmniEngine"]

DEFAULT_MODEL = "zai-org/GLM-TTS"
KEY_ENV_VAR = "VLLM_API_KEY"
_RAW_PCM_TYPES = frozenset({"audio/pcm", "audio/l16", "application/octet-stream", ""})


class VllmOmniEngine(HTTPEngine):
    """GLM-TTS on your own GPUs through vLLM-Omni, with named voices.

    ``base_url`` is the server root (``http://gpu-host:8091``; a trailing ``/v1`` is accepted). ``voices`` is
    a directory, a TOML/JSON file, a mapping, or a ready :class:`VoiceRegistry`. ``api_key`` (or
    ``VLLM_API_KEY``) is sent as a bearer token when set. ``options`` are the HTTP engines' timeouts,
    ``retry`` and ``http_client`` (:class:`~glmtts_plugins.engines.http.HTTPOptions`).
    """

    sample_rate = SAMPLE_RATE
    provider = "vLLM-Omni"
    _first_byte_default: ClassVar[float] = 15.0
    _accept: ClassVar[dict[str, str]] = {
        "Accept": "audio/pcm, audio/wav, application/json",
        "Accept-Encoding": "identity",  # raw audio is read as it arrives; a compressed one is decoded
    }

    def __init__(
        self,
        base_url: str | None = None,
        *,
        voices: VoiceRegistry | str | Path | Mapping[str, Mapping[str, str]] | None = None,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        **options: Unpack[HTTPOptions],
    ) -> None:
        base = base_url or os.environ.get("VLLM_OMNI_BASE_URL")
        if not base:
            raise InvalidRequestError(
                "base_url is required: the vLLM-Omni server root, e.g. http://gpu-host:8091", field="base_url"
            )
        base = check_base_url(base)
        base = base[:-3] if base.endswith("/v1") else base
        api_key = api_key or os.environ.get(KEY_ENV_VAR) or None
        super().__init__(api_key=api_key, base_url=base, model=model, **options)
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

    def _reference(self, voice: str) -> ReferenceVoice:
        if self.voices is None:
            raise InvalidRequestError(
                "no voices registered: vLLM-Omni needs a reference recording per request; pass "
                "voices=DIR (NAME.wav + NAME.txt per voice) or a TOML/JSON file",
                field="voice",
            )
        return self.voices.get_voice(voice)

    def _request_body(
        self, text: str, stream: bool, *, voice: str, speed: float, volume: float
    ) -> dict[str, Any]:
        reference = self._reference(voice)
        body: dict[str, Any] = {
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

    def _decoder(self, response: httpx.Response, request_id: str | None) -> RawPCMDecoder:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in _RAW_PCM_TYPES:
            raise ServerError(
                f"expected a raw PCM stream, got content-type {kind!r}",
                retryable=False,
                request_id=request_id,
            )
        return RawPCMDecoder(request_id)

    def _error_from(self, status: int, body: bytes, request_id: str | None) -> GLMTTSError:
        return _openai_error(status, body, request_id)

    def _gain(self, pcm: bytes, volume: float) -> bytes:
        return _gain(pcm, volume)


class RawPCMDecoder:
    """A raw PCM body is its own audio; a body with none is a :class:`ServerError`."""

    __slots__ = ("_got", "error", "finished", "request_id")

    def __init__(self, request_id: str | None = None) -> None:
        self._got = False
        self.finished = False
        self.error: GLMTTSError | None = None
        self.request_id = request_id

    def feed(self, data: bytes) -> bytes:
        self._got = self._got or bool(data)
        return data

    def flush(self) -> bytes:
        if not self._got:
            self.error = ServerError("the server answered 200 with no audio", request_id=self.request_id)
        return b""


def _gain(pcm: bytes, volume: float) -> bytes:
    """Scale 16-bit PCM by ``volume``, saturating at the sample limits instead of wrapping around."""
    if volume == 1.0 or not pcm:
        return pcm
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) * volume
    clipped: np.ndarray = np.clip(np.rint(samples), -32768, 32767)
    return clipped.astype("<i2").tobytes()


def _openai_error(status: int, body: bytes, request_id: str | None) -> GLMTTSError:
    """The core error for an OpenAI-shaped (or vLLM's flat, or FastAPI's) error body."""
    message, field = None, None
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else {}
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            field = error.get("param")
        elif isinstance(error, str):
            message = error
    except (ValueError, RecursionError):
        message = body[:200].decode("utf-8", "replace") or None
    exc = error_from_code(status, None, str(message or f"HTTP {status}"), request_id=request_id)
    if isinstance(exc, InvalidRequestError) and isinstance(field, str):
        exc.field = field
    return exc
