"""The one request handler both speech APIs run, over a :class:`SpeechAPI` that supplies what differs.

The steps, in order: record the request (headers masked), authenticate, enforce the body limit, read the
body (bounded in time), parse the fault header, parse the JSON, validate, apply ``when_input``, inject an
HTTP failure, then let the API produce the audio (a stream, or a whole reply after the first-byte delay).
Every way out ends the request's record; none leaves it ``running`` (a streamed reply's response ends it
when the stream ends, however it ends, cancellation at shutdown included).
"""

from __future__ import annotations

import abc
import asyncio
import hmac
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..audio.wav import pcm_to_wav
from ..engines.base import SAMPLE_RATE, Engine
from ..voices import VOICES
from .faults import FAULT_HEADER, Faults
from .records import RequestLog, RequestRecord

__all__ = ["BODY_TIMEOUT", "Problem", "ServerState", "SpeechAPI", "bearer_token", "handle", "token_ok"]

BODY_TIMEOUT = 30.0  # seconds for a request body to arrive in full, once its head has
#: business codes the cloud sends with HTTP 429 (rate limits, exhausted balance or quota)
_LIMIT_CODES = frozenset({"1302", "1303", "1113", "1304", "1308"})
_NO_BODY = (204, 304)  # statuses HTTP forbids a body for


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a request is refused: an HTTP status, a message, and what the API names in its error."""

    status: int
    message: str
    code: str | None = None  # the cloud's business code; None: the API's default for the status
    param: str | None = None  # the field at fault, for an API that names it


@dataclass
class ServerState:
    """Per-app state: the engine, auth, default faults, the body deadline and the bounded request log."""

    engine: Engine
    tokens: frozenset[str] | None = None
    faults: Faults = field(default_factory=Faults)
    voices: Collection[str] = field(default_factory=lambda: tuple(VOICES))
    fault_header: bool = True
    body_timeout: float = BODY_TIMEOUT
    log: RequestLog = field(default_factory=RequestLog)

    @property
    def records(self) -> list[RequestRecord]:
        return self.log.records

    @property
    def requests_seen(self) -> Collection[tuple[str, str, int]]:
        """``(method, path, client port)`` of recent HTTP requests, to show connection reuse."""
        return self.log.seen

    @property
    def _fault_counts(self) -> dict[str, int]:
        return self.log.fault_counts


class SpeechAPI(abc.ABC):
    """What one speech API does differently: path, body limit, authentication, validation, error shape,
    and how the audio is produced. :func:`handle` runs the shared steps around these."""

    path: ClassVar[str]
    max_body_bytes: ClassVar[int]

    @abc.abstractmethod
    def authenticate(self, authorization: str, tokens: frozenset[str] | None) -> Problem | None:
        """The problem with the ``Authorization`` header, or None when the request may proceed."""

    @abc.abstractmethod
    def error_body(self, problem: Problem) -> tuple[str | None, dict[str, Any]]:
        """``(code for the record, JSON body)`` of the API's error reply."""

    @abc.abstractmethod
    def check(self, body: object, state: ServerState) -> tuple[dict[str, Any], Problem | None]:
        """``(what the record keeps of the body, the first problem or None)``."""

    @abc.abstractmethod
    def injected(self, status: int, code: str) -> Problem:
        """The reply to an injected ``status=``/``code=`` fault."""

    @abc.abstractmethod
    async def reply(
        self, body: dict[str, Any], state: ServerState, faults: Faults, rec: RequestRecord
    ) -> Response:
        """Produce the audio for a valid request: a streaming response, or :func:`whole`."""


def bearer_token(authorization: str) -> bytes:
    """The token of a ``Bearer`` header, or b"" when there is none."""
    if not authorization.lower().startswith("bearer "):
        return b""
    return authorization[7:].strip().encode()


def token_ok(given: bytes, tokens: Collection[str]) -> bool:
    """Whether ``given`` is one of ``tokens`` (constant-time per token)."""
    return bool(given) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


def reject(api: SpeechAPI, problem: Problem, rec: RequestRecord) -> Response:
    """The API's error reply for ``problem``; ends the record as ``rejected``."""
    rec.status = problem.status
    rec.code, content = api.error_body(problem)
    rec.finish("rejected")
    headers = {"X-Request-Id": rec.id}
    if problem.status == 408:  # a client too slow with its body does not get to keep the connection
        headers["Connection"] = "close"
    if problem.status in _NO_BODY:
        return Response(status_code=problem.status, headers=headers)
    return JSONResponse(content, status_code=problem.status, headers=headers)


async def whole(pcm: bytes, fmt: str, faults: Faults, rec: RequestRecord) -> Response:
    """A whole reply (``fmt`` ``wav`` or ``pcm``) after the ``first_byte_ms`` fault; ends the record."""
    if faults.first_byte_ms:
        await asyncio.sleep(faults.first_byte_ms / 1000)
    rec.audio_bytes = len(pcm)
    rec.finish("completed")
    if fmt == "wav":
        data, media = pcm_to_wav(pcm, SAMPLE_RATE), "audio/wav"
    else:
        data, media = pcm, "audio/pcm"
    return Response(data, media_type=media, headers={"X-Request-Id": rec.id})


async def handle(api: SpeechAPI, request: Request) -> Response:
    """Run one speech request through the shared steps; an unexpected failure still ends its record."""
    state: ServerState = request.app.state.glmtts
    rec = state.log.new(request.url.path)
    try:
        return await _handle(api, state, request, rec)
    except asyncio.CancelledError:
        if rec.outcome == "running":  # the server cut the request short (it is shutting down)
            rec.finish("aborted")
        raise
    except BaseException:
        if rec.outcome == "running":
            rec.finish("error")
        raise


async def _handle(api: SpeechAPI, state: ServerState, request: Request, rec: RequestRecord) -> Response:
    rec.headers = _masked_headers(request)
    state.log.hold(rec, sum(len(k) + len(v) for k, v in rec.headers.items()))
    problem = api.authenticate(request.headers.get("authorization", ""), state.tokens)
    if problem:
        return reject(api, problem, rec)
    too_big = Problem(413, f"request body over {api.max_body_bytes} bytes")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > api.max_body_bytes:
        return reject(api, too_big, rec)
    try:
        async with asyncio.timeout(state.body_timeout):
            raw = await _read_body(request, api.max_body_bytes)
    except ClientDisconnect:  # the client left mid-body: nobody will read a reply
        rec.finish("disconnected")
        return Response(status_code=400)
    except TimeoutError:
        return reject(api, Problem(408, f"request body not received within {state.body_timeout:g} s"), rec)
    if raw is None:
        return reject(api, too_big, rec)
    state.log.hold(rec, len(raw))
    spec = request.headers.get(FAULT_HEADER, "") if state.fault_header else ""
    rec.fault = spec
    try:
        faults = Faults.parse(spec, state.faults)
    except ValueError as exc:
        return reject(api, Problem(400, f"bad {FAULT_HEADER}: {exc}"), rec)
    try:
        body = json.loads(raw)
    except RecursionError:
        return reject(api, Problem(400, "request body is nested too deeply"), rec)
    except ValueError:
        return reject(api, Problem(400, "request body is not valid JSON"), rec)
    rec.body, problem = api.check(body, state)
    if problem:
        return reject(api, problem, rec)
    if faults.when_input and faults.when_input not in body["input"]:
        faults = Faults()
    if state.log.take(faults, spec or "<server>"):
        status = faults.status or (429 if faults.code in _LIMIT_CODES else 400)
        return reject(api, api.injected(status, faults.code), rec)
    return await api.reply(body, state, faults, rec)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is over ``limit``."""
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            return None
    return bytes(raw)


def _masked_headers(request: Request) -> dict[str, str]:
    """The request's headers for the record, with the bearer token masked."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    if "authorization" in headers:
        headers["authorization"] = "Bearer ***"
    return headers
