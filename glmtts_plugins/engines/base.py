"""The interface every engine implements, and the validation they share."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from ..audio.wav import pcm_to_wav
from ..errors import InvalidRequestError
from ..voices import DEFAULT_VOICE

__all__ = ["SAMPLE_RATE", "BaseEngine", "Engine", "validate_options", "validate_request"]

SAMPLE_RATE = 24000
SPEED_RANGE = (0.5, 2.0)
VOLUME_RANGE = (0.0, 10.0)


@runtime_checkable
class Engine(Protocol):
    """What the speech pipeline and the adapters need from an engine.

    ``stream`` yields 16-bit signed little-endian mono PCM at ``sample_rate``, chunk by chunk as it is
    produced; chunk lengths are always a whole number of samples.
    """

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
    validate_options(voice=voice, speed=speed, volume=volume)


def validate_options(*, voice: str, speed: float, volume: float) -> None:
    """Reject a bad voice, speed or volume, naming the field and what is allowed."""
    if not isinstance(voice, str) or not voice.strip():
        raise InvalidRequestError("voice must be a non-empty voice id such as 'tongtong'", field="voice")
    lo, hi = SPEED_RANGE
    if not _is_number(speed) or not lo <= speed <= hi:
        raise InvalidRequestError(f"speed must be a number in [{lo}, {hi}], got {speed!r}", field="speed")
    lo, hi = VOLUME_RANGE
    if not _is_number(volume) or not lo < volume <= hi:
        raise InvalidRequestError(f"volume must be a number in ({lo}, {hi}], got {volume!r}", field="volume")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class BaseEngine:
    """Shared plumbing: whole-WAV synthesis from ``stream``, ``prewarm``/``aclose`` and ``async with``."""

    sample_rate: int = SAMPLE_RATE

    def stream(
        self, text: str, *, voice: str = DEFAULT_VOICE, speed: float = 1.0, volume: float = 1.0
    ) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def synthesize(
        self, text: str, *, voice: str = DEFAULT_VOICE, speed: float = 1.0, volume: float = 1.0
    ) -> bytes:
        """Synthesize all of ``text`` and return one WAV file."""
        pcm = bytearray()
        async for chunk in self.stream(text, voice=voice, speed=speed, volume=volume):
            pcm += chunk
        return pcm_to_wav(bytes(pcm), self.sample_rate)

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
