"""Room-less LiveKit test helpers: an audio output that plays in real time."""

from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

__all__ = ["RealtimeSink"]


class RealtimeSink(AudioOutput):
    """A room-less audio output that plays in real time and records what it was given."""

    def __init__(self) -> None:
        super().__init__(label="sink", capabilities=AudioOutputCapabilities(pause=False), sample_rate=None)
        self.frames: list[tuple[float, rtc.AudioFrame]] = []
        self.cleared_at: float | None = None
        self._start = self._pushed = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.frames.append((time.monotonic(), frame))
        if not self._pushed:
            self._start = time.time()
            self.on_playback_started(created_at=self._start)
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        if not self._pushed:
            return

        def done() -> None:
            self.on_playback_finished(playback_position=self._pushed, interrupted=False)
            self._pushed, self._timer = 0.0, None

        if self._timer:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, self._pushed - (time.time() - self._start)), done
        )

    def clear_buffer(self) -> None:
        self.cleared_at = time.monotonic()
        if not self._pushed:
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        played = min(self._pushed, time.time() - self._start)
        self.on_playback_finished(playback_position=played, interrupted=True)
        self._pushed = 0.0
