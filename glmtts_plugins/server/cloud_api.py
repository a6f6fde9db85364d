"""The cloud's ``POST /api/paas/v4/audio/speech``: what differs from the shared request handler.

A bearer token is always required (any non-empty one when the server has no tokens, like a dev server);
the body is validated as the cloud does, with its business codes; errors are ``{"error": {"code",
"message"}}`` with the code a string; the audio is SSE events (``stream``) or a whole WAV/PCM body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response

from ..engines.base import validate_options
from ..engines.cloud import DEFAULT_BASE_URL, ENCODE_FORMATS
from ..errors import GLMTTSError, InvalidRequestError
from ..text.limit import MAX_INPUT_CHARS
from ..voices import DEFAULT_VOICE
from .faults import Faults
from .handler import Problem, ServerState, SpeechAPI, bearer_token, reject, token_ok, whole
from .records import RequestRecord
from .responses import SSEAudioResponse
from .streams import collect

__all__ = ["CLOUD_PATH", "MAX_BODY_BYTES", "CloudAPI"]

CLOUD_PATH = urlsplit(DEFAULT_BASE_URL).path + "/audio/speech"
MAX_BODY_BYTES = 64 * 1024
FORMATS = ("pcm", "wav")
#: business code for an error given only an HTTP status; the reference documents none for 434 ("no
#: permission for this API"), so that error carries its status and message only
_CODE_FOR_STATUS: dict[int, str | None] = {401: "1002", 429: "1302", 434: None}


class CloudAPI(SpeechAPI):
    path = CLOUD_PATH
    max_body_bytes = MAX_BODY_BYTES

    def authenticate(self, authorization: str, tokens: frozenset[str] | None) -> Problem | None:
        given = bearer_token(authorization)
        if not given:
            return Problem(401, "Header中未收到Authorization参数，无法进行身份验证。", code="1001")
        if tokens is not None and not token_ok(given, tokens):
            return Problem(401, "Authorization Token非法，请确认Authorization Token正确传递。", code="1002")
        return None

    def error_body(self, problem: Problem) -> tuple[str | None, dict[str, Any]]:
        status = problem.status
        default = "500" if status >= 500 else "1210"
        code = problem.code or _CODE_FOR_STATUS.get(status, default)
        error = {"message": problem.message} if code is None else {"code": code, "message": problem.message}
        return code, {"error": error}

    def check(self, body: object, state: ServerState) -> tuple[dict[str, Any], Problem | None]:
        if not isinstance(body, dict):
            return {}, Problem(400, "request body must be a JSON object", code="1210")
        return body, _problem(body, state)

    def injected(self, status: int, code: str) -> Problem:
        return Problem(status, "injected failure", code=code or None)

    async def reply(
        self, body: dict[str, Any], state: ServerState, faults: Faults, rec: RequestRecord
    ) -> Response:
        options = {
            "voice": body.get("voice", DEFAULT_VOICE),
            "speed": float(body.get("speed") or 1.0),
            "volume": float(body.get("volume") or 1.0),
        }
        audio = state.engine.stream(body["input"], **options)
        if body.get("stream"):
            encode = body.get("encode_format") or "base64"
            return SSEAudioResponse(audio, faults=faults, encode=encode, rec=rec)
        try:
            pcm = await collect(audio)
        except GLMTTSError as exc:
            return reject(self, Problem(exc.status or 500, exc.message, code=exc.code or "500"), rec)
        return await whole(pcm, body.get("response_format") or "pcm", faults, rec)


def _problem(body: dict[str, Any], state: ServerState) -> Problem | None:
    """Validate like the cloud does: the first problem, with its business code."""
    if "model" not in body:
        return Problem(400, "missing parameter: model", code="1213")
    if body["model"] != "glm-tts":
        return Problem(400, f"model does not exist: {body['model']!r}", code="1211")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        return Problem(400, "missing parameter: input", code="1213")
    if len(text) > MAX_INPUT_CHARS:
        return Problem(400, f"input is longer than {MAX_INPUT_CHARS} characters", code="1261")
    voice = body.get("voice", DEFAULT_VOICE)
    if not isinstance(voice, str) or voice not in state.voices:
        return Problem(400, "音色id不存在 (unknown voice)", code="1214")
    speed, volume = body.get("speed"), body.get("volume")
    try:  # the engines' own ranges and number checks
        validate_options(
            voice=voice, speed=1.0 if speed is None else speed, volume=1.0 if volume is None else volume
        )
    except InvalidRequestError as exc:
        return Problem(400, f"illegal parameter: {exc.field} ({exc.message})", code="1214")
    fmt = body.get("response_format") or "pcm"
    if fmt not in FORMATS:
        return Problem(400, "illegal parameter: response_format", code="1214")
    if body.get("stream") and fmt != "pcm":
        return Problem(400, "streaming supports response_format pcm only", code="1214")
    if (body.get("encode_format") or "base64") not in ENCODE_FORMATS:
        return Problem(400, "illegal parameter: encode_format", code="1214")
    return None
