"""The streaming replies: the cloud's SSE events and vLLM-Omni's raw PCM, paced by the faults.

A hand-written ASGI response rather than Starlette's, because tests need to know exactly when the client
went away: the response races the audio against ``http.disconnect`` and ends the request's record with
what happened (``completed``, ``disconnected``, ``aborted``, ``error``; ``aborted`` also when the server
cancels the response at shutdown). The engine's stream is closed and the record ended however the response
ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..engines.base import SAMPLE_RATE
from ..errors import GLMTTSError, InvalidRequestError
from .faults import Faults
from .records import RequestRecord
from .streams import aclose_stream

__all__ = ["AbortConnection", "PCMAudioResponse", "SSEAudioResponse"]


class AbortConnection(Exception):
    """Raised inside a response to drop the TCP connection mid-stream (fault injection)."""


class _InjectedStreamError(Exception):
    """Raised by the pacing loop when the ``error_after`` fault is due."""


def error_code(exc: GLMTTSError) -> str:
    """The business code an engine error is reported with."""
    return exc.code or ("1214" if isinstance(exc, InvalidRequestError) else "500")


async def _rechunk(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    pending = bytearray()
    async for chunk in source:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


class _AudioStreamResponse(Response):
    """Streams an engine's audio, paced by the faults, racing it against the client going away.

    Subclasses write the chunks (``_produce``); the base owns the race, the pacing and the bookkeeping.
    """

    def __init__(
        self, audio: AsyncIterator[bytes], *, faults: Faults, rec: RequestRecord, content_type: str
    ) -> None:
        super().__init__(media_type=content_type)
        self.audio, self.faults, self.rec = audio, faults, rec
        self.raw_headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", rec.id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "error"  # how the record ends if nothing below ends it: an unexpected failure
        try:
            await self._respond(receive, send)
        except asyncio.CancelledError:
            outcome = "aborted"  # the server cut the stream short (it is shutting down)
            raise
        finally:
            if self.rec.outcome == "running":
                self.rec.finish(outcome)

    async def _respond(self, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        except BaseException:
            await aclose_stream(self.audio)
            raise
        producer = asyncio.ensure_future(self._produce(send))
        watcher = asyncio.ensure_future(self._watch(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                task.cancel()
            try:
                await asyncio.gather(producer, watcher, return_exceptions=True)
            finally:
                await aclose_stream(self.audio)
        if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
            if self.rec.outcome == "running":
                self.rec.finish("disconnected")
            return
        if producer.done() and not producer.cancelled() and (error := producer.exception()) is not None:
            raise error  # __call__ ends the record as an error unless the producer ended it

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _write(self, send: Send, data: bytes) -> None:
        if not self.faults.split:
            await send({"type": "http.response.body", "body": data, "more_body": True})
            return
        while data:
            n = random.randint(1, 7)
            await send({"type": "http.response.body", "body": data[:n], "more_body": True})
            data = data[n:]
            await asyncio.sleep(0)

    async def _paced(self) -> AsyncGenerator[bytes, None]:
        """The audio re-cut and paced as the faults say; raises for ``disconnect_after``/``error_after``."""
        f, rec = self.faults, self.rec
        audio = _rechunk(self.audio, f.chunk_bytes) if f.chunk_bytes > 0 else self.audio
        t0 = None
        sent_seconds = 0.0
        if f.first_byte_ms:
            await asyncio.sleep(f.first_byte_ms / 1000)
        async for chunk in audio:
            if rec.events == f.disconnect_after:
                raise AbortConnection
            if rec.events == f.error_after:
                raise _InjectedStreamError
            if t0 is None:
                t0 = time.monotonic()
            if f.rtf > 0:
                delay = t0 + sent_seconds * f.rtf - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif f.chunk_ms and rec.events:
                await asyncio.sleep(f.chunk_ms / 1000)
            sent_seconds += len(chunk) / (2 * SAMPLE_RATE)
            if f.stamp and len(chunk) >= 8:
                chunk = struct.pack("<Q", time.monotonic_ns()) + chunk[8:]
            yield chunk

    def _sent(self, chunk: bytes) -> None:
        rec = self.rec
        if rec.first_audio_at is None:
            rec.first_audio_at = time.monotonic()
        rec.events += 1
        rec.audio_bytes += len(chunk)

    async def _produce(self, send: Send) -> None:
        """Write the audio (``_stream``), then end the body and the record."""
        try:
            await self._stream(send)
        except AbortConnection:
            if self.rec.outcome == "running":
                self.rec.finish("aborted")
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.rec.finish("error" if self.rec.code else "completed")

    async def _stream(self, send: Send) -> None:
        raise NotImplementedError


class SSEAudioResponse(_AudioStreamResponse):
    """Streams an engine's audio as the cloud's SSE events, watching for the client going away."""

    def __init__(
        self, audio: AsyncIterator[bytes], *, faults: Faults, encode: str, rec: RequestRecord
    ) -> None:
        super().__init__(audio, faults=faults, rec=rec, content_type="text/event-stream; charset=utf-8")
        self.encode = encode

    def _event(self, obj: dict[str, Any], *, last: bool = False) -> bytes:
        eol = self.faults.eol
        head = b": keep-alive" + eol + eol if self.faults.comments else b""
        extra = b"event: message" + eol + b"id: %d" % self.rec.events + eol if self.faults.comments else b""
        tail = b"" if last and self.faults.no_trailing_newline else eol + eol
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        return head + extra + b"data: " + data + tail

    async def _stream(self, send: Send) -> None:
        f, rec = self.faults, self.rec
        created = int(time.time())
        base = {"id": rec.id, "created": created, "model": "glm-tts"}
        try:
            async with contextlib.aclosing(self._paced()) as chunks:
                async for chunk in chunks:
                    content = base64.b64encode(chunk).decode() if self.encode == "base64" else chunk.hex()
                    delta = {"role": "assistant", "return_sample_rate": SAMPLE_RATE, "content": content}
                    event = {**base, "choices": [{"index": rec.events, "delta": delta}]}
                    await self._write(send, self._event(event))
                    self._sent(chunk)
            if not f.no_finish:
                final = {"choices": [{"finish_reason": "stop", "index": rec.events}], **base}
                await self._write(send, self._event(final, last=not f.done))
            if f.done:
                await self._write(send, b"data: [DONE]" + (b"" if f.no_trailing_newline else f.eol * 2))
        except _InjectedStreamError:
            rec.code = f.error_code
            error = {"error": {"code": f.error_code, "message": "injected error"}}
            await self._write(send, self._event(error, last=True))
        except GLMTTSError as exc:
            rec.code = error_code(exc)
            event = {"error": {"code": rec.code, "message": exc.message}}
            await self._write(send, self._event(event, last=True))


class PCMAudioResponse(_AudioStreamResponse):
    """vLLM-Omni's ``stream_format: "audio"`` reply: raw s16le PCM in a chunked body, nothing else.

    Raw PCM has no way to say "failed": an engine error or the ``error_after`` fault mid-stream drops the
    connection (outcome ``error``), so the client sees a broken transfer instead of a clean, short end.
    """

    def __init__(self, audio: AsyncIterator[bytes], *, faults: Faults, rec: RequestRecord) -> None:
        super().__init__(audio, faults=faults, rec=rec, content_type="audio/pcm")

    async def _stream(self, send: Send) -> None:
        rec = self.rec
        try:
            async with contextlib.aclosing(self._paced()) as chunks:
                async for chunk in chunks:
                    await self._write(send, chunk)
                    self._sent(chunk)
        except _InjectedStreamError:
            rec.code = self.faults.error_code
            rec.finish("error")
            raise AbortConnection from None
        except GLMTTSError as exc:
            rec.code = error_code(exc)
            rec.finish("error")
            raise AbortConnection from exc
