"""A read deadline that moves without re-arming a timer: one timer per stream instead of one per read.

``asyncio.timeout_at`` around every read of a stream creates and cancels a timer per read (an audio event
every 20 ms); moving a deadline forward is what nearly every read does. Here ``when`` is a plain
attribute: the timer, armed at most once at a time, looks at ``when`` only when it fires, and re-arms
itself if the deadline moved on (a deadline moved earlier, as from the first byte's to the first read's,
re-arms at the next read). So a stream that keeps its deadline ahead costs one timer per
``read_timeout``, not one per event.

Semantics match ``asyncio.timeout_at`` around each read: a read still waiting at ``when`` is cancelled
and ``TimeoutError`` raised from the ``with`` block (a cancellation from anyone else stays a
``CancelledError``); time spent outside the block (the consumer holding the stream at a ``yield``) is not
interrupted, and a read that completes without waiting is never cut, even past ``when``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["ReadDeadline"]


class ReadDeadline:
    """``with deadline: await read()`` raises ``TimeoutError`` if the read still waits at ``deadline.when``
    (loop time). Move ``when`` freely; :meth:`close` drops the timer when the stream ends."""

    __slots__ = ("_armed_at", "_cancelling", "_expired", "_handle", "_loop", "_reading", "_task", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._task: asyncio.Task[object] | None = None
        self._reading = False
        self._expired = False
        self._cancelling = 0

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ReadDeadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._reading = True
        if self._handle is not None and self.when < self._armed_at:  # moved earlier: re-arm (rare)
            self._handle.cancel()
            self._handle = None
        if self._handle is None:
            self._arm()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._reading = False
        if self._expired:
            self._expired = False
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def _on_timer(self) -> None:
        self._handle = None
        if not self._reading:  # the stream is with its consumer: the next read re-arms
            return
        if self._loop.time() < self.when:  # the deadline moved on since the timer was armed
            self._arm()
            return
        assert self._task is not None
        self._expired = True
        self._task.cancel()

    def _arm(self) -> None:
        self._armed_at = self.when
        self._handle = self._loop.call_at(self.when, self._on_timer)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
