"""The local server's ASGI app: the cloud's ``POST /api/paas/v4/audio/speech``, from any engine.

It also answers vLLM-Omni's OpenAI-compatible ``POST /v1/audio/speech`` (``ref_audio`` + ``ref_text``,
raw PCM streaming), so a client for a self-hosted GLM-TTS can be tested offline.

Built on Starlette (routing, requests) with a hand-written streaming response, because tests need to
know exactly when the client went away: the response races the audio against ``http.disconnect``, and
every request leaves a :class:`RequestRecord` saying how it ended.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import secrets
import struct
import threading
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..audio.wav import pcm_to_wav, wav_to_pcm
from ..engines.base import SAMPLE_RATE, Engine
from ..errors import GLMTTSError, InvalidRequestError
from ..text.limit import MAX_INPUT_CHARS
from ..voices import DEFAULT_VOICE, VOICES
from .faults import FAULT_HEADER, Faults

__all__ = [
    "MAX_BODY_BYTES",
    "VLLM_MAX_BODY_BYTES",
    "VLLM_PATH",
    "RequestRecord",
    "ServerState",
    "create_app",
]

logger = logging.getLogger("glmtts_plugins.server")

MAX_BODY_BYTES = 64 * 1024
MAX_RECORDS = 10_000
CLOUD_PATH = "/api/paas/v4/audio/speech"
VLLM_PATH = "/v1/audio/speech"
VLLM_MAX_BODY_BYTES = 16 * 1024 * 1024  # a data-URI reference recording is large


class AbortConnection(Exception):
    """Raised inside a response to drop the TCP connection mid-stream (fault injection)."""


class _InjectedStreamError(Exception):
    """Raised by the pacing loop when the ``error_after`` fault is due."""


@dataclass
class RequestRecord:
    """What the server saw of one request; tests read these to prove client behaviour."""

    id: str
    path: str
    body: dict = field(default_factory=dict)
    #: request headers, names lower-cased; an ``authorization`` value is masked as ``Bearer ***``
    headers: dict[str, str] = field(default_factory=dict)
    fault: str = ""
    status: int = 200
    code: str | None = None
    events: int = 0
    audio_bytes: int = 0
    outcome: str = "running"  # completed | disconnected | aborted | error | rejected
    started: float = field(default_factory=time.monotonic)
    first_audio_at: float | None = None  # time.monotonic() when the first audio event was written
    ended: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.ended = time.monotonic()
        self.done.set()


@dataclass
class ServerState:
    """Per-app state: the engine, auth, default faults and the log of requests."""

    engine: Engine
    tokens: frozenset[str] | None = None
    faults: Faults = field(default_factory=Faults)
    voices: Collection[str] = field(default_factory=lambda: tuple(VOICES))
    fault_header: bool = True
    records: list[RequestRecord] = field(default_factory=list)
    #: ``(method, path, client port)`` of every HTTP request, to show connection reuse.
    requests_seen: list[tuple[str, str, int]] = field(default_factory=list)
    _fault_counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str) -> RequestRecord:
        rec = RequestRecord(id=secrets.token_hex(8), path=path)
        with self._lock:
            if len(self.records) >= MAX_RECORDS:  # a long-running server keeps only recent history
                del self.records[: MAX_RECORDS // 2]
                del self.requests_seen[: len(self.requests_seen) // 2]
            self.records.append(rec)
        return rec

    def take_failure(self, faults: Faults, spec: str) -> bool:
        """Whether this request gets the injected HTTP error (honouring ``times``)."""
        if not faults.status and not faults.code:
            return False
        if faults.times < 0:
            return True
        with self._lock:
            used = self._fault_counts.get(spec, 0)
            self._fault_counts[spec] = used + 1
        return used < faults.times


def _error(status: int, code: str, message: str, rec: RequestRecord) -> JSONResponse:
    rec.status, rec.code = status, code
    rec.finish("rejected")
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers={"X-Request-Id": rec.id}
    )


def _check_body(body: object, voices: Collection[str]) -> tuple[int, str, str] | None:
    """Validate like the cloud does; return ``(status, code, message)`` for the first problem."""
    if not isinstance(body, dict):
        return 400, "1210", "request body must be a JSON object"
    if "model" not in body:
        return 400, "1213", "missing parameter: model"
    if body["model"] != "glm-tts":
        return 400, "1211", f"model does not exist: {body['model']!r}"
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        return 400, "1213", "missing parameter: input"
    if len(text) > MAX_INPUT_CHARS:
        return 400, "1261", f"input is longer than {MAX_INPUT_CHARS} characters"
    voice = body.get("voice", "tongtong")
    if voice not in voices:
        return 400, "1214", "音色id不存在 (unknown voice)"
    for name, lo, hi, lo_open in (("speed", 0.5, 2.0, False), ("volume", 0.0, 10.0, True)):
        value = body.get(name, 1.0)
        if value is None:
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value > hi or value < lo or (lo_open and value <= lo):
            return 400, "1214", f"illegal parameter: {name}"
    fmt = body.get("response_format") or "pcm"
    if fmt not in ("pcm", "wav"):
        return 400, "1214", "illegal parameter: response_format"
    if body.get("stream") and fmt != "pcm":
        return 400, "1214", "streaming supports response_format pcm only"
    if (body.get("encode_format") or "base64") not in ("base64", "hex"):
        return 400, "1214", "illegal parameter: encode_format"
    return None


async def _rechunk(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    pending = bytearray()
    async for chunk in source:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


class _AudioStreamResponse(Response):
    """Streams an engine's audio, paced by the faults, racing it against the client going away.

    Subclasses write the chunks (``_produce``); the base owns the race, the pacing and the bookkeeping.
    """

    def __init__(
        self, audio: AsyncIterator[bytes], *, faults: Faults, rec: RequestRecord, content_type: str
    ) -> None:
        super().__init__(media_type=content_type)
        self.audio, self.faults, self.rec = audio, faults, rec
        self.raw_headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", rec.id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        producer = asyncio.ensure_future(self._produce(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
            aclose = getattr(self.audio, "aclose", None)
            if aclose is not None:
                await aclose()
        if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
            if self.rec.outcome == "running":
                self.rec.finish("disconnected")
            return
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            if self.rec.outcome == "running":  # an unexpected failure still ends the record
                self.rec.finish("error")
            raise producer.exception()  # type: ignore[misc]

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _write(self, send: Send, data: bytes) -> None:
        if not self.faults.split:
            await send({"type": "http.response.body", "body": data, "more_body": True})
            return
        while data:
            n = random.randint(1, 7)
            await send({"type": "http.response.body", "body": data[:n], "more_body": True})
            data = data[n:]
            await asyncio.sleep(0)

    async def _paced(self) -> AsyncIterator[bytes]:
        """The audio re-cut and paced as the faults say; raises for ``disconnect_after``/``error_after``."""
        f, rec = self.faults, self.rec
        audio = _rechunk(self.audio, f.chunk_bytes) if f.chunk_bytes > 0 else self.audio
        t0 = None
        sent_seconds = 0.0
        if f.first_byte_ms:
            await asyncio.sleep(f.first_byte_ms / 1000)
        async for chunk in audio:
            if rec.events == f.disconnect_after:
                raise AbortConnection
            if rec.events == f.error_after:
                raise _InjectedStreamError
            if t0 is None:
                t0 = time.monotonic()
            if f.rtf > 0:
                delay = t0 + sent_seconds * f.rtf - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif f.chunk_ms and rec.events:
                await asyncio.sleep(f.chunk_ms / 1000)
            sent_seconds += len(chunk) / (2 * SAMPLE_RATE)
            if f.stamp and len(chunk) >= 8:
                chunk = struct.pack("<Q", time.monotonic_ns()) + chunk[8:]
            yield chunk

    def _sent(self, chunk: bytes) -> None:
        rec = self.rec
        if rec.first_audio_at is None:
            rec.first_audio_at = time.monotonic()
        rec.events += 1
        rec.audio_bytes += len(chunk)

    async def _produce(self, send: Send) -> None:
        raise NotImplementedError


class SSEAudioResponse(_AudioStreamResponse):
    """Streams an engine's audio as the cloud's SSE events, watching for the client going away."""

    def __init__(
        self, audio: AsyncIterator[bytes], *, faults: Faults, encode: str, rec: RequestRecord
    ) -> None:
        super().__init__(audio, faults=faults, rec=rec, content_type="text/event-stream; charset=utf-8")
        self.encode = encode

    def _event(self, obj: dict, *, last: bool = False) -> bytes:
        eol = self.faults.eol
        head = b": keep-alive" + eol + eol if self.faults.comments else b""
        extra = b"event: message" + eol + b"id: %d" % self.rec.events + eol if self.faults.comments else b""
        tail = b"" if last and self.faults.no_trailing_newline else eol + eol
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        return head + extra + b"data: " + data + tail

    async def _produce(self, send: Send) -> None:
        f, rec = self.faults, self.rec
        created = int(time.time())
        base = {"id": rec.id, "created": created, "model": "glm-tts"}
        try:
            async with contextlib.aclosing(self._paced()) as chunks:
                async for chunk in chunks:
                    content = base64.b64encode(chunk).decode() if self.encode == "base64" else chunk.hex()
                    delta = {"role": "assistant", "return_sample_rate": SAMPLE_RATE, "content": content}
                    event = {**base, "choices": [{"index": rec.events, "delta": delta}]}
                    await self._write(send, self._event(event))
                    self._sent(chunk)
            if not f.no_finish:
                final = {"choices": [{"finish_reason": "stop", "index": rec.events}], **base}
                await self._write(send, self._event(final, last=not f.done))
            if f.done:
                await self._write(send, b"data: [DONE]" + (b"" if f.no_trailing_newline else f.eol * 2))
        except _InjectedStreamError:
            rec.code = f.error_code
            error = {"error": {"code": f.error_code, "message": "injected error"}}
            await self._write(send, self._event(error, last=True))
        except AbortConnection:
            rec.finish("aborted")
            raise
        except GLMTTSError as exc:
            code = exc.code or ("1214" if isinstance(exc, InvalidRequestError) else "500")
            rec.code = code
            await self._write(send, self._event({"error": {"code": code, "message": exc.message}}, last=True))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        rec.finish("error" if rec.code else "completed")


class PCMAudioResponse(_AudioStreamResponse):
    """vLLM-Omni's ``stream_format: "audio"`` reply: raw s16le PCM in a chunked body, nothing else.

    Raw PCM has no way to say "failed": an engine error or the ``error_after`` fault mid-stream drops the
    connection (outcome ``error``), so the client sees a broken transfer instead of a clean, short end.
    """

    def __init__(self, audio: AsyncIterator[bytes], *, faults: Faults, rec: RequestRecord) -> None:
        super().__init__(audio, faults=faults, rec=rec, content_type="audio/pcm")

    async def _produce(self, send: Send) -> None:
        f, rec = self.faults, self.rec
        try:
            async with contextlib.aclosing(self._paced()) as chunks:
                async for chunk in chunks:
                    await self._write(send, chunk)
                    self._sent(chunk)
        except AbortConnection:
            rec.finish("aborted")
            raise
        except _InjectedStreamError:
            rec.code = f.error_code
            rec.finish("error")
            raise AbortConnection from None
        except GLMTTSError as exc:
            rec.code = exc.code or ("1214" if isinstance(exc, InvalidRequestError) else "500")
            rec.finish("error")
            raise AbortConnection from exc
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        rec.finish("completed")


async def _read_body(request: Request, rec: RequestRecord, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit``; a client gone mid-body is recorded as such."""
    raw = bytearray()
    try:
        async for part in request.stream():
            raw += part
            if len(raw) > limit:
                return None
    except ClientDisconnect:
        rec.finish("disconnected")
        raise
    return bytes(raw)


async def _speech(request: Request) -> Response:
    state: ServerState = request.app.state.glmtts
    rec = state.record(request.url.path)
    rec.headers = _masked_headers(request)
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer ") or not auth[7:].strip():
        return _error(401, "1001", "Header中未收到Authorization参数，无法进行身份验证。", rec)
    given = auth[7:].strip().encode()
    if state.tokens is not None and not any(hmac.compare_digest(given, t.encode()) for t in state.tokens):
        return _error(401, "1002", "Authorization Token非法，请确认Authorization Token正确传递。", rec)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return _error(413, "1210", f"request body over {MAX_BODY_BYTES} bytes", rec)
    raw = await _read_body(request, rec, MAX_BODY_BYTES)
    if raw is None:
        return _error(413, "1210", f"request body over {MAX_BODY_BYTES} bytes", rec)
    spec = request.headers.get(FAULT_HEADER, "") if state.fault_header else ""
    rec.fault = spec
    try:
        faults = Faults.parse(spec, state.faults)
    except ValueError as exc:
        return _error(400, "1210", f"bad {FAULT_HEADER}: {exc}", rec)
    try:
        body = json.loads(raw)
    except ValueError:
        return _error(400, "1210", "request body is not valid JSON", rec)
    rec.body = body if isinstance(body, dict) else {}
    problem = _check_body(body, state.voices)
    if problem:
        return _error(*problem, rec)
    if faults.when_input and faults.when_input not in str(body.get("input", "")):
        faults = Faults()
    if state.take_failure(faults, spec or "<server>"):
        status = faults.status or (429 if faults.code in ("1302", "1303", "1113", "1304", "1308") else 400)
        code = faults.code or {401: "1002", 429: "1302"}.get(status, "500" if status >= 500 else "1210")
        return _error(status, code, "injected failure", rec)
    kwargs = {
        "voice": body.get("voice", "tongtong"),
        "speed": float(body.get("speed") or 1.0),
        "volume": float(body.get("volume") or 1.0),
    }
    if body.get("stream"):
        audio = state.engine.stream(body["input"], **kwargs)
        return SSEAudioResponse(audio, faults=faults, encode=body.get("encode_format") or "base64", rec=rec)
    try:
        pcm = bytearray()
        async for chunk in state.engine.stream(body["input"], **kwargs):
            pcm += chunk
    except GLMTTSError as exc:
        return _error(exc.status or 500, exc.code or "500", exc.message, rec)
    if faults.first_byte_ms:
        await asyncio.sleep(faults.first_byte_ms / 1000)
    rec.audio_bytes = len(pcm)
    rec.finish("completed")
    if body.get("response_format") == "wav":
        data, media = pcm_to_wav(bytes(pcm), SAMPLE_RATE), "audio/wav"
    else:
        data, media = bytes(pcm), "audio/pcm"
    return Response(data, media_type=media, headers={"X-Request-Id": rec.id})


def _masked_headers(request: Request) -> dict[str, str]:
    """The request's headers for the record, with the bearer token masked."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if "authorization" in headers:
        headers["authorization"] = "Bearer ***"
    return headers


# --- vLLM-Omni's OpenAI-compatible speech API ---------------------------------------------------------

_DATA_PREFIXES = ("data:audio/wav;base64,", "data:audio/x-wav;base64,", "data:audio/wave;base64,")
_URL_PREFIXES = ("http://", "https://", "file://")
_REF_AUDIO_HELP = "a data:audio/wav;base64,... URI or an http://, https:// or file:// URL"
VLLM_SPEED_RANGE = (0.25, 4.0)


def _openai_type(status: int) -> str:
    if status == 401:
        return "AuthenticationError"
    if status == 429:
        return "RateLimitError"
    return "InternalServerError" if status >= 500 else "BadRequestError"


def _openai_error(status: int, message: str, rec: RequestRecord, param: str | None = None) -> JSONResponse:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}`` (``code`` = the status)."""
    rec.status, rec.code = status, str(status)
    rec.finish("rejected")
    error = {"message": message, "type": _openai_type(status), "param": param, "code": status}
    return JSONResponse({"error": error}, status_code=status, headers={"X-Request-Id": rec.id})


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


def _check_vllm_body(body: dict, ref_problem: str | None) -> tuple[str, str] | None:
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


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _open_stream(
    engine: Engine, text: str, *, voice: str, speed: float
) -> tuple[AsyncIterator[bytes], bytes | None]:
    """Start ``engine.stream`` and pull its first chunk, so a rejection still becomes an HTTP error.

    Falls back to :data:`DEFAULT_VOICE` when the engine rejects ``voice``.
    """
    for name in dict.fromkeys((voice, DEFAULT_VOICE)):
        stream = engine.stream(text, voice=name, speed=speed)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return stream, None
        except BaseException as exc:
            await _aclose(stream)
            if isinstance(exc, GLMTTSError) and name != DEFAULT_VOICE and _voice_rejected(exc):
                continue
            raise
        return stream, first
    raise AssertionError("unreachable")  # pragma: no cover


async def _prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` then the rest of the stream; closing this closes the engine's stream."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await _aclose(rest)


def _engine_error(exc: GLMTTSError, rec: RequestRecord) -> JSONResponse:
    status = exc.status or (400 if isinstance(exc, InvalidRequestError) else 500)
    return _openai_error(status, exc.message, rec, getattr(exc, "field", None))


async def _vllm_speech(request: Request) -> Response:
    state: ServerState = request.app.state.glmtts
    rec = state.record(request.url.path)
    rec.headers = _masked_headers(request)
    if state.tokens is not None:  # like ``vllm serve --api-key``: no tokens, no authentication
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip().encode() if auth.lower().startswith("bearer ") else b""
        if not given or not any(hmac.compare_digest(given, t.encode()) for t in state.tokens):
            return _openai_error(401, "missing or invalid bearer token in the Authorization header", rec)
    too_big = f"request body over {VLLM_MAX_BODY_BYTES} bytes"
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > VLLM_MAX_BODY_BYTES:
        return _openai_error(413, too_big, rec)
    raw = await _read_body(request, rec, VLLM_MAX_BODY_BYTES)
    if raw is None:
        return _openai_error(413, too_big, rec)
    spec = request.headers.get(FAULT_HEADER, "") if state.fault_header else ""
    rec.fault = spec
    try:
        faults = Faults.parse(spec, state.faults)
    except ValueError as exc:
        return _openai_error(400, f"bad {FAULT_HEADER}: {exc}", rec)
    try:
        body = json.loads(raw)
    except ValueError:
        return _openai_error(400, "request body is not valid JSON", rec)
    if not isinstance(body, dict):
        return _openai_error(400, "request body must be a JSON object", rec)
    ref_summary, ref_problem = _summarize_ref_audio(body.get("ref_audio"))
    rec.body = {**body, "ref_audio": ref_summary} if "ref_audio" in body else dict(body)
    problem = _check_vllm_body(body, ref_problem)
    if problem:
        param, message = problem
        return _openai_error(400, message, rec, param)
    if faults.when_input and faults.when_input not in body["input"]:
        faults = Faults()
    if state.take_failure(faults, spec or "<server>"):
        status = faults.status or (429 if faults.code in ("1302", "1303", "1113", "1304", "1308") else 400)
        detail = f" (code {faults.code})" if faults.code else ""
        return _openai_error(status, f"injected failure{detail}", rec)
    speed = body.get("speed")
    speed = 1.0 if speed is None else min(2.0, max(0.5, float(speed)))
    voice = _voice_for(body["ref_audio"])
    try:
        stream, first = await _open_stream(state.engine, body["input"], voice=voice, speed=speed)
    except GLMTTSError as exc:
        return _engine_error(exc, rec)
    audio = _prepend(first, stream)
    if body.get("stream"):
        return PCMAudioResponse(audio, faults=faults, rec=rec)
    pcm = bytearray()
    try:
        async for chunk in audio:
            pcm += chunk
    except GLMTTSError as exc:
        return _engine_error(exc, rec)
    finally:
        await audio.aclose()
    if faults.first_byte_ms:
        await asyncio.sleep(faults.first_byte_ms / 1000)
    rec.audio_bytes = len(pcm)
    rec.finish("completed")
    if (body.get("response_format") or "wav") == "wav":
        data, media = pcm_to_wav(bytes(pcm), SAMPLE_RATE), "audio/wav"
    else:
        data, media = bytes(pcm), "audio/pcm"
    return Response(data, media_type=media, headers={"X-Request-Id": rec.id})


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class _SeenMiddleware:
    """Notes each request's client port, so tests can tell a reused connection from a new one."""

    def __init__(self, app: Starlette, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client") or ("", 0)
            self.state.requests_seen.append((scope["method"], scope["path"], client[1]))
        await self.app(scope, receive, send)


def create_app(
    engine: Engine,
    *,
    tokens: Collection[str] | None = None,
    faults: Faults | str | None = None,
    voices: Collection[str] | None = None,
    fault_header: bool = True,
) -> Starlette:
    """Build the ASGI app serving ``engine`` with the cloud's protocol and vLLM-Omni's ``/v1/audio/speech``.

    ``tokens``: accepted bearer tokens (None accepts any non-empty key on the cloud path, like a dev
    server, and no key at all on the vLLM path, like ``vllm serve`` without ``--api-key``).
    ``faults``: faults applied to every request; with ``fault_header`` a request's ``X-GLMTTS-Fault``
    header adds to them (tests want that; a shared server should not let clients stall it).
    """
    app = Starlette(
        routes=[
            Route(CLOUD_PATH, _speech, methods=["POST"]),
            Route(VLLM_PATH, _vllm_speech, methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
        ]
    )
    app.state.glmtts = state = ServerState(
        engine=engine,
        tokens=frozenset(tokens) if tokens is not None else None,
        faults=faults if isinstance(faults, Faults) else Faults.parse(faults),
        voices=tuple(voices) if voices is not None else tuple(VOICES),
        fault_header=fault_header,
    )
    app.add_middleware(_SeenMiddleware, state=state)
    return app
