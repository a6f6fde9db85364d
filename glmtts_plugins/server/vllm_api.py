"""vLLM-Omni's OpenAI-compatible ``POST /v1/audio/speech`` serving GLM-TTS: what differs from the shared
request handler.

Authentication only when the server has tokens (like ``vllm serve --api-key``); a 16 MiB body limit (a
data-URI reference recording is large); validation of ``ref_audio`` + ``ref_text`` with the field named;
OpenAI-shaped errors (``{"error": {"message", "type", "param", "code"}}``, ``code`` the status). The audio
is raw PCM (``stream``) or a whole WAV/PCM body, in a named voice picked by a stable hash of the reference,
falling back to the default voice when the engine rejects it. The engine's stream is opened before the
reply, so an engine error before audio is an HTTP error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from typing import Any

from starlette.responses import Response

from ..audio.wav import wav_to_pcm
from ..engines.base import SPEED_RANGE
from ..engines.references import _URL_PREFIXES
from ..errors import GLMTTSError, InvalidRequestError
from ..voices import DEFAULT_VOICE, VOICES
from .faults import Faults
from .handler import Problem, ServerState, SpeechAPI, bearer_token, reject, token_ok, whole
from .records import RequestRecord
from .responses import PCMAudioResponse
from .streams import collect, open_stream, prepend

__all__ = ["VLLM_MAX_BODY_BYTES", "VLLM_PATH", "VLLM_SPEED_RANGE", "VllmAPI"]

VLLM_PATH = "/v1/audio/speech"
VLLM_MAX_BODY_BYTES = 16 * 1024 * 1024  # a data-URI reference recording is large
VLLM_SPEED_RANGE = (0.25, 4.0)  # what vLLM-Omni's speech API accepts; the engine's range is narrower
_DATA_PREFIXES = ("data:audio/wav;base64,", "data:audio/x-wav;base64,", "data:audio/wave;base64,")
_REF_AUDIO_HELP = "a data:audio/wav;base64,... URI or an http://, https:// or file:// URL"


class VllmAPI(SpeechAPI):
    path = VLLM_PATH
    max_body_bytes = VLLM_MAX_BODY_BYTES

    def authenticate(self, authorization: str, tokens: frozenset[str] | None) -> Problem | None:
        if tokens is not None and not token_ok(bearer_token(authorization), tokens):
            return Problem(401, "missing or invalid bearer token in the Authorization header")
        return None

    def error_body(self, problem: Problem) -> tuple[str | None, dict[str, Any]]:
        status = problem.status
        error = {
            "message": problem.message,
            "type": _openai_type(status),
            "param": problem.param,
            "code": status,
        }
        return str(status), {"error": error}

    def check(self, body: object, state: ServerState) -> tuple[dict[str, Any], Problem | None]:
        if not isinstance(body, dict):
            return {}, Problem(400, "request body must be a JSON object")
        ref_summary, ref_problem = _summarize_ref_audio(body.get("ref_audio"))
        kept = {**body, "ref_audio": ref_summary} if "ref_audio" in body else dict(body)
        problem = _check_body(body, ref_problem)
        if problem is None:
            return kept, None
        param, message = problem
        return kept, Problem(400, message, param=param)

    def injected(self, status: int, code: str) -> Problem:
        return Problem(status, "injected failure" + (f" (code {code})" if code else ""))

    async def reply(
        self, body: dict[str, Any], state: ServerState, faults: Faults, rec: RequestRecord
    ) -> Response:
        speed = body.get("speed")
        lo, hi = SPEED_RANGE
        speed = 1.0 if speed is None else min(hi, max(lo, float(speed)))
        voices = (_voice_for(body["ref_audio"]), DEFAULT_VOICE)
        try:
            stream, first = await open_stream(
                state.engine, body["input"], voices, retry_if=_voice_rejected, speed=speed
            )
        except GLMTTSError as exc:
            return reject(self, _engine_problem(exc), rec)
        audio = prepend(first, stream)
        if body.get("stream"):
            return PCMAudioResponse(audio, faults=faults, rec=rec)
        try:
            pcm = await collect(audio)
        except GLMTTSError as exc:
            return reject(self, _engine_problem(exc), rec)
        return await whole(pcm, body.get("response_format") or "wav", faults, rec)


def _openai_type(status: int) -> str:
    if status == 401:
        return "AuthenticationError"
    if status == 429:
        return "RateLimitError"
    return "InternalServerError" if status >= 500 else "BadRequestError"


def _engine_problem(exc: GLMTTSError) -> Problem:
    status = exc.status or (400 if isinstance(exc, InvalidRequestError) else 500)
    return Problem(status, exc.message, param=getattr(exc, "field", None))


def _voice_for(ref_audio: str) -> str:
    """A named voice picked by a stable hash of the reference, so different references sound different."""
    names = list(VOICES)
    digest = hashlib.sha256(ref_audio.encode("utf-8", "surrogatepass")).digest()
    return names[int.from_bytes(digest[:8], "big") % len(names)]


def _voice_rejected(exc: GLMTTSError) -> bool:
    field_name = getattr(exc, "field", None)
    return isinstance(exc, InvalidRequestError) and (
        field_name == "voice" or (field_name is None and exc.code == "1214")
    )


def _summarize_ref_audio(value: object) -> tuple[object, str | None]:
    """``(what the record keeps instead of ref_audio, problem or None)``; a data URI must hold a WAV."""
    if not isinstance(value, str) or not value.strip():
        return value, f"ref_audio is required: {_REF_AUDIO_HELP}"
    if value.startswith(_URL_PREFIXES):
        return value, None  # accepted without fetching: the emulation only needs it to pick a voice
    if not value.startswith("data:"):
        return value[:200], f"ref_audio must be {_REF_AUDIO_HELP}, got {value[:40]!r}"
    prefix = next((p for p in _DATA_PREFIXES if value.startswith(p)), None)
    if prefix is None:
        head = value.split(",", 1)[0][:60]
        return {"kind": "data", "bytes": None}, (
            f"ref_audio data URI must start with 'data:audio/wav;base64,' (the local emulation reads WAV "
            f"only), got {head!r}"
        )
    try:
        raw = base64.b64decode(value[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        return {"kind": "data", "bytes": None}, "ref_audio data URI does not hold valid base64"
    summary = {"kind": "data", "bytes": len(raw)}
    try:
        pcm, _rate, _channels = wav_to_pcm(raw)
    except ValueError as exc:
        return summary, f"ref_audio must be a 16-bit PCM WAV file: {exc}"
    if not pcm:
        return summary, "ref_audio is a WAV file without audio; give a 3-10 s recording"
    return summary, None


def _check_body(body: dict[str, Any], ref_problem: str | None) -> tuple[str, str] | None:
    """Validate like vLLM-Omni serving GLM-TTS; return ``(param, message)`` for the first problem.

    ``ref_problem`` is what :func:`_summarize_ref_audio` found; unknown fields are ignored, like vLLM does.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "model", "model is required: a non-empty string naming the served model (zai-org/GLM-TTS)"
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        return "input", "input is required: a non-empty string of text to speak"
    if ref_problem is not None:
        return "ref_audio", ref_problem
    ref_text = body.get("ref_text")
    if not isinstance(ref_text, str) or not ref_text.strip():
        return "ref_text", "ref_text is required: the non-empty transcript of the reference recording"
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "stream", f"stream must be true or false, got {stream!r}"
    fmt = body.get("response_format")
    fmt = "wav" if fmt is None else fmt
    if fmt in ("mp3", "flac"):
        return "response_format", (
            f"response_format {fmt!r} is not supported: the local emulation of vLLM-Omni supports only "
            "pcm and wav"
        )
    if fmt not in ("pcm", "wav"):
        return "response_format", f"response_format must be 'pcm' or 'wav', got {fmt!r}"
    if stream:
        if fmt != "pcm":
            return "response_format", "streaming needs response_format 'pcm' (raw s16le 24 kHz mono)"
        stream_format = body.get("stream_format")
        if stream_format is not None and stream_format != "audio":
            return "stream_format", (
                f"stream_format must be 'audio' when stream is true (raw PCM), got {stream_format!r}"
            )
    speed = body.get("speed")
    if speed is not None:
        lo, hi = VLLM_SPEED_RANGE
        ok = isinstance(speed, int | float) and not isinstance(speed, bool) and math.isfinite(speed)
        if not ok or not lo <= speed <= hi:
            return "speed", f"speed must be a number in [{lo}, {hi}], got {speed!r}"
    return None
