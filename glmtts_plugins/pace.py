"""Real-time pacing for devices that play what they receive: a small pre-buffer, then real time.

A speaker's firmware plays packets as they arrive and cannot un-play what it holds. Sending a reply as
fast as it is synthesized fills (or overflows: xiaozhi-esp32 drops packets beyond 40) the device's
queue, and after a barge-in the user hears everything queued. :func:`pace` releases the first
``prebuffer_ms`` of audio at once (to ride out network jitter) and then each frame only when the
device, playing in real time, would hold no more than ``prebuffer_ms`` once that frame is added. So a
bridge that stops sending on barge-in leaves at most ``prebuffer_ms`` of stale audio on the device.

The device's playback clock is modelled, not assumed: when frames arrive late (the engine was slower
than real time) the device ran dry and restarts with the next frame, so the schedule restarts there
too, and the bound still holds after a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable

from .errors import InvalidRequestError
from .synthesizer import SpeechFrame

__all__ = ["pace"]


def pace(
    frames: AsyncIterable[SpeechFrame], *, prebuffer_ms: float = 300
) -> AsyncGenerator[SpeechFrame, None]:
    """Yield ``frames`` no faster than a device plays them, ``prebuffer_ms`` ahead of real time.

    Works for any encoding (``duration_ms`` is what counts). Closing the returned iterator
    (``aclose()``, ``contextlib.aclosing``) or cancelling the task iterating it closes ``frames`` at
    once: for an :class:`~glmtts_plugins.Utterance` that cancels it (every request closed, no task left).
    """
    if (
        not isinstance(prebuffer_ms, int | float)
        or isinstance(prebuffer_ms, bool)
        or not 0 <= prebuffer_ms < float("inf")
    ):
        raise InvalidRequestError(
            f"prebuffer_ms must be a number of milliseconds >= 0; got {prebuffer_ms!r}", field="prebuffer_ms"
        )
    if not isinstance(frames, AsyncIterable):
        raise InvalidRequestError(
            f"frames must be an async iterable of SpeechFrame, got {type(frames).__name__}", field="frames"
        )
    return _paced(frames, prebuffer_ms / 1000)


async def _paced(frames: AsyncIterable[SpeechFrame], prebuffer: float) -> AsyncGenerator[SpeechFrame, None]:
    source = aiter(frames)
    playing_until = 0.0  # monotonic time at which the device will have played everything released
    try:
        async for frame in source:
            duration = frame.duration_ms / 1000
            now = time.monotonic()
            if playing_until < now:  # the device is idle (start, or it ran dry): it plays from now
                playing_until = now
            wait = playing_until + duration - now - prebuffer
            if wait > 0:
                await asyncio.sleep(wait)
            playing_until += duration
            yield frame
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # a generator already running elsewhere
                await aclose()
