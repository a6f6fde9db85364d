"""One exception hierarchy for every engine, rooted at :class:`GLMTTSError`.

Each error carries the business ``code`` (a string, as the cloud sends it), the HTTP ``status``,
whether a retry may help (``retryable``) and the ``request_id`` when the server gave one.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "ContentBlockedError",
    "EngineClosedError",
    "GLMTTSError",
    "InvalidRequestError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "TruncatedStreamError",
    "error_from_code",
]


class _Details(TypedDict, total=False):
    """The keyword arguments of :class:`GLMTTSError` after the message."""

    code: str | None
    status: int | None
    retryable: bool | None
    request_id: str | None


class GLMTTSError(Exception):
    """Base of every error this package raises."""

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        request_id: str | None = None,
    ) -> None:
        message = message if isinstance(message, str) else _text(message)  # a server may send any JSON
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{name}={value}"
            for name, value in (("status", self.status), ("code", self.code), ("request_id", self.request_id))
            if value is not None
        ]
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, status={self.status!r})"


class AuthenticationError(GLMTTSError):
    """Missing, invalid or expired API key, or no permission for the API (HTTP 401/434, codes 1000-1004)."""


class RateLimitError(GLMTTSError):
    """Concurrency or frequency limit (codes 1302/1303): worth retrying after a back-off."""

    default_retryable = True


class QuotaExceededError(GLMTTSError):
    """Balance exhausted, account in arrears or daily quota reached (1110-1121, 1304, 1308): not retryable."""


class InvalidRequestError(GLMTTSError, ValueError):
    """A field the API rejects (unknown voice 1214, input too long 1261, out-of-range speed, ...).

    Raised before any request when local validation catches it; ``field`` then names the field. It is
    also a ``ValueError``, so a bad constructor or option argument is caught as frameworks expect.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Unpack[_Details]) -> None:
        super().__init__(message, **kwargs)
        self.field = field


class ContentBlockedError(GLMTTSError):
    """The text was blocked by the provider's safety review (code 1301)."""


class ServerError(GLMTTSError):
    """HTTP 5xx, platform overloaded or model busy (1305/1312): retryable."""

    default_retryable = True


class APIConnectionError(GLMTTSError):
    """The connection could not be made or broke before a response."""

    default_retryable = True


class APITimeoutError(APIConnectionError):
    """Connect, first-byte or read timeout."""


class EngineClosedError(GLMTTSError):
    """The engine was used after ``aclose()``: a programming error, never retried."""


class TruncatedStreamError(GLMTTSError):
    """The stream ended without ``finish_reason: "stop"``: the utterance is incomplete."""

    default_retryable = True


_AUTH_CODES = {str(c) for c in range(1000, 1005)}
_QUOTA_CODES = {str(c) for c in range(1110, 1122)} | {"1304", "1308"}
_RATE_CODES = {"1302", "1303"}
_BUSY_CODES = {"1305", "1312", "500"}  # overloaded, busy, internal error (business code 500)
_INVALID_CODES = {"1210", "1211", "1213", "1214", "1261"}
_BLOCKED_CODES = {"1301"}


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _code(code: object) -> str | None:
    """A business code as the cloud spells it: ``1302``, ``1302.0`` and ``"1302"`` are all ``"1302"``."""
    if code is None:
        return None
    if isinstance(code, float) and code.is_integer():
        return str(int(code))
    return code.strip() if isinstance(code, str) else _text(code)


def error_from_code(
    status: int | None,
    code: object,
    message: object = None,
    *,
    request_id: str | None = None,
) -> GLMTTSError:
    """Classify an API error by its business code first, then by its HTTP status.

    HTTP 429 means either a rate limit (retryable) or an exhausted balance (not), so the code decides.
    """
    code_s = _code(code)
    text = message if isinstance(message, str) and message else _text(message or "GLM-TTS request failed")
    kwargs: _Details = {"code": code_s, "status": status, "request_id": request_id}
    if code_s in _AUTH_CODES:
        return AuthenticationError(text, **kwargs)
    if code_s in _QUOTA_CODES:
        return QuotaExceededError(text, **kwargs)
    if code_s in _RATE_CODES:
        return RateLimitError(text, **kwargs)
    if code_s in _BUSY_CODES:
        return ServerError(text, **kwargs)
    if code_s in _INVALID_CODES:
        return InvalidRequestError(text, **kwargs)
    if code_s in _BLOCKED_CODES:
        return ContentBlockedError(text, **kwargs)
    if status in (401, 403, 434):
        return AuthenticationError(text, **kwargs)
    if status == 429:
        return RateLimitError(text, **kwargs)
    if status is not None and status >= 500:
        return ServerError(text, **kwargs)
    if status is not None and 400 <= status < 500:
        return InvalidRequestError(text, **kwargs)
    return GLMTTSError(text, **kwargs)
