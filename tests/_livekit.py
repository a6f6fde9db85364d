"""Room-less LiveKit test helpers: an audio output that plays in real time."""

from __future__ import annotations

import asyncio
import time

from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities
from livekit.agents.voice.transcription import TranscriptSynchronizer

__all__ = ["RealtimeSink", "assert_pushed_audio", "start_roomless"]


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


def assert_pushed_audio(frames: list[rtc.AudioFrame], expected: bytes) -> None:
    """The audio LiveKit delivered is exactly ``expected`` (16-bit PCM), nothing lost or added, except
    the 10 ms of silence LiveKit's emitter appends as an end-of-segment marker when it had already
    flushed everything (it does so when audio arrived slower than real time)."""
    got = b"".join(bytes(f.data) for f in frames)
    rate = frames[0].sample_rate
    assert got[: len(expected)] == expected
    tail = got[len(expected) :]
    assert len(tail) in (0, 2 * rate // 100) and not any(tail), f"{len(tail)} extra bytes"


async def start_roomless(session: AgentSession, agent: Agent) -> tuple[RealtimeSink, TranscriptSynchronizer]:
    """Start ``session`` with no room: a real-time sink behind LiveKit's transcript synchronizer (what
    RoomIO adds in a room), so interrupted replies keep only the text that was played."""
    sink = RealtimeSink()
    sync = TranscriptSynchronizer(next_in_chain_audio=sink, next_in_chain_text=None)
    session.output.audio = sync.audio_output
    session.output.transcription = sync.text_output
    await session.start(agent=agent)
    return sink, sync
