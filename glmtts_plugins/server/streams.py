"""An engine's audio stream as the server handles it, closed on every path.

Every way a request can end (completed, rejected by the engine, the client gone, a fault) goes through
:func:`aclose_stream`, so an engine's generator always runs its ``finally`` and frees its connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

from ..engines.base import Engine
from ..errors import GLMTTSError

__all__ = ["aclose_stream", "collect", "open_stream", "prepend"]


async def aclose_stream(stream: AsyncIterator[bytes]) -> None:
    """Close an engine's stream (a no-op for an iterator without ``aclose``)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    """All of ``stream``'s audio; the stream is closed however this ends."""
    pcm = bytearray()
    try:
        async for chunk in stream:
            pcm += chunk
    finally:
        await aclose_stream(stream)
    return bytes(pcm)


async def open_stream(
    engine: Engine,
    text: str,
    voices: Iterable[str],
    *,
    retry_if: Callable[[GLMTTSError], bool],
    **options: float,
) -> tuple[AsyncIterator[bytes], bytes | None]:
    """Start ``engine.stream`` and pull its first chunk, so a rejection can still become an HTTP error.

    Tries each of ``voices`` in turn while the engine's error satisfies ``retry_if``; returns the open
    stream and its first chunk (None for a stream without audio).
    """
    names = list(dict.fromkeys(voices))
    for i, name in enumerate(names):
        stream = engine.stream(text, voice=name, **options)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return stream, None
        except BaseException as exc:
            await aclose_stream(stream)
            if isinstance(exc, GLMTTSError) and i + 1 < len(names) and retry_if(exc):
                continue
            raise
        return stream, first
    raise ValueError("open_stream needs at least one voice")


async def prepend(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` then the rest of the stream; closing this closes the engine's stream."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await aclose_stream(rest)
