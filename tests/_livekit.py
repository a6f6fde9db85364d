"""LiveKit test helpers: a room-less audio output that plays in real time, and loopback endpoints for
faults the local server cannot produce (no answer at all, a TLS handshake or TCP connect that never
completes)."""

from __future__ import annotations

import asyncio
import socket
import time

from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities
from livekit.agents.voice.transcription import TranscriptSynchronizer

__all__ = ["HeadCounter", "RealtimeSink", "StalledEndpoint", "assert_pushed_audio", "start_roomless"]


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


class StalledEndpoint:
    """Loopback endpoints that never answer, standing in for LiveKit's toxiproxy ``timeout`` toxic.

    ``url("http")``: TCP accepted, the request read, no response ever (a stalled first byte).
    ``url("https")``: the same listener behind an https URL: the TLS handshake never completes.
    ``connect_url``: a listener whose accept queue is full, so a new TCP connect never completes.
    ``open`` counts accepted connections the client has not closed yet (so a test can check that a
    timed-out attempt closed its connection).
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._full: socket.socket | None = None
        self._filler: socket.socket | None = None

    async def __aenter__(self) -> StalledEndpoint:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._full = socket.socket()
        self._full.bind(("127.0.0.1", 0))
        self._full.listen(0)
        self._filler = socket.create_connection(self._full.getsockname())  # fills the accept queue
        self.connect_port = self._full.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._full is not None and self._filler is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        await self._server.wait_closed()
        self._filler.close()
        self._full.close()

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/api/paas/v4"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}/api/paas/v4"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()


class HeadCounter:
    """A minimal HTTP/1.1 keep-alive server that answers every request with an empty 200 and counts
    them by method; ``hold`` makes it wait before answering (a prewarm still in flight)."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HeadCounter:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/api/paas/v4"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.methods.append(head.split(b" ", 1)[0].decode())
                await self.hold.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
