"""When a GLM-TTS endpoint counts as down: the rule behind ``GLMHttpTTSService``'s ``is_usable``.

Pipecat's ``ServiceSwitcherStrategyFailover`` switches only once the active service reports itself
unusable. A dead endpoint (connection refused, no route, a connect or TLS timeout) must therefore turn the
service unusable quickly, while a blip must not: a failover changes the voice for the rest of the call.

The rule: a request that cannot connect is tried again, before any audio, every ``retry_every_s``, until
the endpoint has refused every connection for ``unusable_after_s`` (default 1.5 s). A blip shorter than
that delays the sentence and costs nothing else; an endpoint still down after it fails that one request,
and the service reports itself unusable. Nothing is ever retried after audio was handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import ClassVar

from glmtts_plugins import APIConnectionError, APITimeoutError, BaseEngine, GLMTTSError

__all__ = ["OutageGuard", "is_connect_failure"]


def is_connect_failure(exc: BaseException) -> bool:
    """A failure to reach the endpoint at all (refused, unroutable, a connect or TLS timeout), not a slow
    or failing server once connected. The HTTP engines name the phase in the message."""
    if not isinstance(exc, APIConnectionError):
        return False
    message = str(exc.message)
    if isinstance(exc, APITimeoutError):
        return message.lower().startswith(("connect", "tls"))
    return not ("during first byte" in message or "during read" in message)


class OutageGuard(BaseEngine):
    """An engine wrapper that rides out connection failures up to ``unusable_after_s``, then gives up.

    ``down_for`` says how long the endpoint has refused every connection (0 once any audio arrived), so
    the service can tell an outage from a blip. It speaks for the engine it wraps (same rate, model and
    provider); each attempt gets the request's ``timeout``.
    """

    _native_timeout: ClassVar[bool] = True  # the wrapped engine applies the timeout to each attempt

    def __init__(self, engine: BaseEngine, *, unusable_after_s: float, retry_every_s: float = 0.25) -> None:
        self.engine = engine
        self.sample_rate = engine.sample_rate
        self.provider, self.model = engine.provider, engine.model
        self.unusable_after_s = unusable_after_s
        self.retry_every_s = retry_every_s
        self._down_since: float | None = None

    @property
    def down_for(self) -> float:
        """Seconds since the first failed connection of the current outage (0 when none)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    @property
    def down(self) -> bool:
        return self._down_since is not None and self.down_for >= self.unusable_after_s

    def reset(self) -> None:
        """Forget the outage (an application brought the service back with ``set_usable(True)``)."""
        self._down_since = None

    async def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        while True:
            started = time.monotonic()
            yielded = False
            try:
                chunks = self.engine.stream(text, voice=voice, speed=speed, volume=volume, timeout=timeout)
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        if not yielded:
                            yielded = True
                            self._down_since = None
                        yield chunk
                return
            except GLMTTSError as exc:
                if yielded or not is_connect_failure(exc):
                    raise
                if self._down_since is None:
                    self._down_since = started
                if self.down_for >= self.unusable_after_s:
                    exc.add_note(f"the endpoint refused every connection for {self.down_for:.1f} s")
                    raise
                await asyncio.sleep(min(self.retry_every_s, self.unusable_after_s - self.down_for))
