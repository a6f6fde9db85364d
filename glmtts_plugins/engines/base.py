"""The one engine contract (:class:`BaseEngine`), the validation every engine shares, and
:func:`as_engine`, which gives a user's minimal engine the whole contract."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, TypeGuard, cast, runtime_checkable

from ..audio.wav import pcm_to_wav
from ..errors import APITimeoutError, InvalidRequestError
from ..voices import DEFAULT_VOICE

if TYPE_CHECKING:
    from .transport import ConnectionInfo

__all__ = [
    "SAMPLE_RATE",
    "BaseEngine",
    "Engine",
    "as_engine",
    "check_timeout",
    "first_chunk_within",
    "validate_options",
    "validate_request",
]

SAMPLE_RATE = 24000
SPEED_RANGE = (0.5, 2.0)
VOLUME_RANGE = (0.0, 10.0)


@runtime_checkable
class Engine(Protocol):
    """The least an engine must have (what :func:`as_engine` accepts): a ``sample_rate`` and ``stream``
    yielding 16-bit signed little-endian mono PCM at that rate, chunk by chunk, each chunk a whole number
    of samples."""

    sample_rate: int

    def stream(
        self, text: str, *, voice: str = DEFAULT_VOICE, speed: float = 1.0, volume: float = 1.0
    ) -> AsyncIterator[bytes]: ...


def validate_request(text: str, *, voice: str, speed: float, volume: float) -> None:
    """Reject bad input before any request, naming the field and what is allowed."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"text must be a string, got {type(text).__name__}", field="text")
    if not text.strip():
        raise InvalidRequestError("text is empty or only whitespace; give at least one word", field="text")
    _check_encodable(text, "text")
    validate_options(voice=voice, speed=speed, volume=volume)


def validate_options(*, voice: str, speed: float, volume: float) -> None:
    """Reject a bad voice, speed or volume, naming the field and what is allowed."""
    if not isinstance(voice, str) or not voice.strip():
        raise InvalidRequestError("voice must be a non-empty voice id such as 'tongtong'", field="voice")
    _check_encodable(voice, "voice")
    lo, hi = SPEED_RANGE
    if not _is_number(speed) or not lo <= speed <= hi:
        raise InvalidRequestError(f"speed must be a number in [{lo}, {hi}], got {speed!r}", field="speed")
    lo, hi = VOLUME_RANGE
    if not _is_number(volume) or not lo < volume <= hi:
        raise InvalidRequestError(f"volume must be a number in ({lo}, {hi}], got {volume!r}", field="volume")


def check_timeout(value: object, field: str = "timeout", *, optional: bool = True) -> float | None:
    """``value`` as seconds if it is a positive finite number (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not _is_number(value) or not value > 0:
        raise InvalidRequestError(
            f"{field} must be a positive finite number of seconds, got {value!r}", field=field
        )
    return float(value)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_encodable(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{field} contains a lone surrogate ({value[exc.start]!r} at index {exc.start}); "
            "only valid Unicode text can be sent",
            field=field,
        ) from None


def _checked(text: str, voice: str, speed: float, volume: float, timeout: object) -> float | None:
    """Validate a request (naming the bad field); return its timeout in seconds."""
    validate_request(text, voice=voice, speed=speed, volume=volume)
    return check_timeout(timeout)


class _Closable(Protocol):
    def aclose(self) -> Awaitable[object]: ...


def _closable(obj: object) -> TypeGuard[_Closable]:
    return callable(getattr(obj, "aclose", None))


def _closing(chunks: AsyncIterator[bytes]) -> contextlib.AbstractAsyncContextManager[object]:
    """Close ``chunks`` on exit when it can be closed (an async generator); a plain iterator cannot."""
    if _closable(chunks):
        return contextlib.aclosing(chunks)
    return contextlib.nullcontext()


async def _raising(exc: BaseException) -> AsyncGenerator[bytes, None]:
    """A stream whose first iteration raises ``exc`` (a request refused before it was sent)."""
    raise exc
    yield b""  # pragma: no cover - makes this an async generator


async def _generator(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    async with _closing(chunks):
        async for chunk in chunks:
            yield chunk


async def first_chunk_within(chunks: AsyncIterator[bytes], timeout: float) -> AsyncGenerator[bytes, None]:
    """Yield ``chunks``, raising :class:`APITimeoutError` if the first one takes over ``timeout`` seconds.

    The generic per-request timeout, for engines with no finer one (no connect or TLS phase to name).
    """
    async with _closing(chunks):
        try:
            async with asyncio.timeout(timeout):
                first = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise APITimeoutError(f"first byte timeout: no audio within {timeout:g} s") from None
        yield first
        async for chunk in chunks:
            yield chunk


class BaseEngine:
    """The contract every engine satisfies, with safe defaults for what an engine may leave out.

    ``stream()`` and ``synthesize()`` validate the request (naming the bad field) before anything is
    sent, then call the subclass's ``_stream()`` (and ``_synthesize()``, by default built on
    ``_stream``). ``timeout`` bounds one attempt until its first audio; engines that can name the
    phase that timed out (the HTTP ones) set ``_native_timeout`` and apply it themselves; for the
    others the first chunk must arrive within it. ``prewarm()``/``aclose()`` default to doing nothing.
    """

    sample_rate: int = SAMPLE_RATE
    provider: str = "custom"
    """A stable brand name for metrics and logs."""
    model: str = "unknown"
    last_connection: ConnectionInfo | None = None
    """How the last request got its connection, for metrics; ``None`` when the engine cannot tell."""
    _native_timeout: ClassVar[bool] = False

    def stream(
        self,
        text: str,
        *,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        volume: float = 1.0,
        timeout: float | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """PCM chunks (whole samples) as the engine produces them: an async generator (close it, e.g. with
        ``contextlib.aclosing``, to end the request early). A bad request raises from its first iteration,
        before anything is sent. The engine's own generator is returned as it is (validated here, not by a
        wrapping generator), so no layer is added per chunk."""
        try:
            limit = _checked(text, voice, speed, volume, timeout)
        except InvalidRequestError as exc:
            return _raising(exc)
        return self._open_stream(text, voice, speed, volume, limit)

    async def synthesize(
        self,
        text: str,
        *,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        volume: float = 1.0,
        timeout: float | None = None,
    ) -> bytes:
        """Synthesize all of ``text`` and return one WAV file."""
        limit = _checked(text, voice, speed, volume, timeout)
        return pcm_to_wav(
            await self._synthesize(text, voice=voice, speed=speed, volume=volume, timeout=limit),
            self.sample_rate,
        )

    def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """The engine's own streaming, given a validated request."""
        raise NotImplementedError

    async def _synthesize(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> bytes:
        """The PCM of a validated request; by default the whole of ``_stream``."""
        pcm = bytearray()
        chunks = self._open_stream(text, voice, speed, volume, timeout)
        async with _closing(chunks):
            async for chunk in chunks:
                pcm += chunk
        return bytes(pcm)

    def _open_stream(
        self, text: str, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncGenerator[bytes, None]:
        chunks = self._stream(text, voice=voice, speed=speed, volume=volume, timeout=timeout)
        if timeout is not None and not self._native_timeout:
            return first_chunk_within(chunks, timeout)
        if isinstance(chunks, AsyncGenerator):
            return chunks
        return _generator(chunks)  # a user's iterator of another kind: give it aclose()

    async def prewarm(self) -> None:
        """Get ready for the first request (open connections, load data)."""

    async def aclose(self) -> None:
        """Release connections and other resources."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Adapted(BaseEngine):
    """A user's minimal engine given the whole contract; ``prewarm``/``aclose`` are forwarded when the
    engine has them, and ``timeout`` is the generic first-chunk bound."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.provider = str(getattr(inner, "provider", None) or type(inner).__name__)
        self.model = str(getattr(inner, "model", None) or type(inner).__name__)
        self._prewarm = getattr(inner, "prewarm", None)
        self._aclose = getattr(inner, "aclose", None)

    @property
    def sample_rate(self) -> int:  # type: ignore[override]  # read-only: always the inner engine's rate
        return self.inner.sample_rate

    def __repr__(self) -> str:
        return f"as_engine({self.inner!r})"

    def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        return self.inner.stream(text, voice=voice, speed=speed, volume=volume)

    async def prewarm(self) -> None:
        if callable(self._prewarm):
            await self._prewarm()

    async def aclose(self) -> None:
        if callable(self._aclose):
            await self._aclose()


def as_engine(obj: object) -> BaseEngine:
    """``obj`` as a :class:`BaseEngine`: returned as is when it already is one, else wrapped.

    A minimal engine needs only a positive integer ``sample_rate`` and ``stream(text, *, voice, speed,
    volume)`` (an async generator of PCM); the wrapper validates requests, applies ``timeout`` to the
    first chunk and gives it ``synthesize``, ``prewarm``, ``aclose`` and ``async with``. Anything else
    raises ``TypeError``.
    """
    if isinstance(obj, BaseEngine):
        return obj
    rate = getattr(obj, "sample_rate", None)
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int)
        or rate <= 0
        or not callable(getattr(obj, "stream", None))
    ):
        raise TypeError("engine must have an integer sample_rate and a stream(text, ...) method")
    return _Adapted(cast(Engine, obj))  # it has what the protocol asks, checked just above
