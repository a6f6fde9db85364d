"""Text in, timed audio frames out, stoppable at any instant: what every adapter shares.

A :class:`Synthesizer` holds an engine and the output format (rate, encoding, frame size) and voice
settings. Each :meth:`~Synthesizer.speak` or :meth:`~Synthesizer.speak_stream` call returns an
:class:`Utterance`: an async iterator of :class:`SpeechFrame` with ``await utterance.cancel()``.

Inside an utterance the text is cut into pieces (``speak``: only where the 1024-character limit forces
it; ``speak_stream``: by the streaming :class:`~glmtts_plugins.text.Segmenter`). One task reads the text
and starts a request per piece, at most ``prefetch`` pieces ahead of the one being played, each request
read into its own buffer by its own task; the iterator drains the buffers strictly in text order through
one resampler (flushed at the end of every piece, dropped on cancel) and a framer (frames never span
two pieces; a piece's last frame is short, or padded with silence when ``pad_frames`` is set).

The contract:

* Frames come in text order, each piece's audio complete (total samples per piece =
  ``round(engine samples × out_rate / engine_rate)``).
* ``cancel()`` (also ``aclose()``, leaving ``async with``, or cancelling the task that iterates) marks the
  utterance closed before its first await, so no frame is yielded after it; it then cancels and awaits
  every task, which closes every in-flight request (the server sees the disconnect), and returns.
  Calling it twice, or after the end, does nothing.
* An engine error surfaces from the iterator after every frame of audio received before it (the tail
  held in the resampler and framer included); the other requests are closed. The error gets a note
  naming the piece that failed.
* Once iterating, the utterance owns its text iterable: cancelling closes it (``aclose``) if it is an
  async generator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, get_args

from .audio.framer import FRAME_MS_CHOICES, Framer
from .audio.g711 import lin2alaw, lin2ulaw
from .audio.opus import OPUS_RATES, OpusEncoder
from .audio.stream_resampler import SUPPORTED_RATES, StreamResampler
from .engines.base import BaseEngine, Engine, as_engine
from .errors import GLMTTSError, InvalidRequestError
from .options import VoiceOptions
from .text import MAX_INPUT_CHARS, Segmenter, is_speakable, speech_units, split_text, spoken_prefix
from .voices import DEFAULT_VOICE

__all__ = ["ENCODINGS", "Encoding", "Segment", "SpeechFrame", "Synthesizer", "Utterance"]

Encoding = Literal["pcm_s16le", "mulaw", "alaw", "opus"]
ENCODINGS: tuple[str, ...] = get_args(Encoding)

_ENCODERS: dict[str, Callable[[bytes], bytes] | None] = {
    "pcm_s16le": None,
    "mulaw": lin2ulaw,
    "alaw": lin2alaw,
    "opus": None,  # one OpusEncoder per utterance, made in Utterance
}
_OPUS_FRAME_MS = (20, 40, 60)
_END = object()  # end of the text, or of a piece's audio
_WAKE = object()  # cancel() waking the iterator
_DEFAULT_MS_PER_UNIT = 230.0  # speech rate assumed for a piece not yet fully received (~4.3 syllables/s)


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    """One frame of output audio and where it sits in the utterance."""

    audio: bytes
    """Encoded audio: 16-bit little-endian PCM, one byte per sample for μ-law / A-law, or one Opus
    packet (``duration_ms`` is then the audio the packet carries)."""
    sample_rate: int
    encoding: Encoding
    segment_index: int
    """Which piece of the text this audio speaks (0-based, in text order)."""
    segment_text: str
    start_ms: float
    """Offset of the frame's first sample from the start of the utterance's audio."""
    duration_ms: float
    """``frame_ms``, except for a piece's last frame, which may be shorter (unless ``pad_frames``); with
    ``frame_ms=None``, whatever one engine chunk gave after resampling."""

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms


@dataclass(slots=True)
class Segment:
    """A piece of the utterance's text and how much audio it produced so far."""

    index: int
    text: str
    samples: int = 0
    """Output samples produced for this piece."""
    complete: bool = False
    """True once the engine finished the piece and its tail was flushed."""
    requested_at: float | None = None
    """``time.monotonic()`` when its request started."""
    first_audio_at: float | None = None
    """``time.monotonic()`` when its first audio reached the utterance's iterator."""


class _Channel:
    """An unbounded queue with one consumer: ``asyncio.Queue`` without the bookkeeping (task counts,
    putters, a deque of getters) that cost more per audio chunk than handing the chunk on itself."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[object] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> object:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class _Piece:
    __slots__ = ("chunks", "segment")

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.chunks = _Channel()


class Synthesizer:
    """Speaks text through ``engine`` as frames of ``frame_ms`` at ``sample_rate`` in ``encoding``.

    ``engine`` is a :class:`~glmtts_plugins.BaseEngine`, or anything with a ``sample_rate`` and an
    async-generator ``stream(text, *, voice, speed, volume)`` yielding 16-bit mono PCM, which
    :func:`~glmtts_plugins.as_engine` wraps (``synth.engine`` is then the wrapper). Output rates are those of
    :data:`~glmtts_plugins.audio.SUPPORTED_RATES`; an engine at the output rate passes through untouched.
    ``frame_ms=None`` skips framing: each engine chunk becomes one frame as soon as it is resampled (lowest
    latency, for frameworks that re-frame audio themselves). ``prefetch`` is how many pieces beyond the
    playing one may have a request running (0: strictly one request at a time). ``segmenter`` makes the
    text segmenter for each ``speak_stream`` utterance.
    """

    def __init__(
        self,
        engine: BaseEngine | Engine,
        *,
        sample_rate: int = 24000,
        encoding: Encoding = "pcm_s16le",
        frame_ms: int | None = 20,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        volume: float = 1.0,
        prefetch: int = 1,
        pad_frames: bool = False,
        segmenter: Callable[[], Segmenter] = Segmenter,
    ) -> None:
        engine = as_engine(engine)  # TypeError for anything that is not an engine
        rates = OPUS_RATES if encoding == "opus" else SUPPORTED_RATES
        if type(sample_rate) is not int or sample_rate not in rates:
            allowed = ", ".join(map(str, rates))
            raise InvalidRequestError(
                f"sample_rate must be one of {allowed}; got {sample_rate!r}", field="sample_rate"
            )
        if encoding not in ENCODINGS:
            raise InvalidRequestError(
                f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}", field="encoding"
            )
        if frame_ms is not None and (type(frame_ms) is not int or frame_ms not in FRAME_MS_CHOICES):
            allowed = ", ".join(map(str, FRAME_MS_CHOICES))
            raise InvalidRequestError(
                f"frame_ms must be one of {allowed}; got {frame_ms!r}", field="frame_ms"
            )
        if frame_ms is not None and sample_rate * frame_ms % 1000:
            raise InvalidRequestError(
                f"frame_ms={frame_ms} at {sample_rate} Hz is not a whole number of samples; use 20 or 40",
                field="frame_ms",
            )
        if encoding == "opus":  # whole Opus frames only; fail here (not mid-utterance) without PyAV
            if frame_ms not in _OPUS_FRAME_MS:
                raise InvalidRequestError(
                    f"frame_ms must be 20, 40 or 60 with encoding='opus'; got {frame_ms!r}", field="frame_ms"
                )
            OpusEncoder(sample_rate, frame_ms)
            pad_frames = True
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise InvalidRequestError(f"prefetch must be an integer >= 0; got {prefetch!r}", field="prefetch")
        options = VoiceOptions(voice, speed, volume)
        self.engine = engine
        self.sample_rate = sample_rate
        self.encoding: Encoding = encoding
        self.frame_ms = frame_ms
        self.prefetch = prefetch
        self.pad_frames = pad_frames
        self._segmenter = segmenter
        self._options = options

    @property
    def voice(self) -> str:
        return self._options.voice

    @property
    def speed(self) -> float:
        return self._options.speed

    @property
    def volume(self) -> float:
        return self._options.volume

    def update_options(
        self, *, voice: str | None = None, speed: float | None = None, volume: float | None = None
    ) -> None:
        """Change voice settings for utterances started from now on (a running one keeps its own)."""
        self._options = self._options.replace(voice=voice, speed=speed, volume=volume)

    @property
    def options(self) -> VoiceOptions:
        """The voice settings the next utterance uses."""
        return self._options

    def speak(self, text: str, *, timeout: float | None = None) -> Utterance:
        """Speak a whole text: one request, or several where the 1024-character limit forces a cut.

        Text with nothing to say (empty, whitespace, punctuation only) gives an utterance with no frames
        and makes no request. ``timeout`` bounds each request until its first audio (connect, TLS and
        first byte together), in place of the engine's own first-byte deadline.
        """
        if not isinstance(text, str):
            raise InvalidRequestError(f"text must be a string, got {type(text).__name__}", field="text")
        pieces = [p for p in split_text(text, MAX_INPUT_CHARS) if is_speakable(p)]
        return Utterance(self, _from_list(pieces), timeout=_checked_timeout(timeout))

    def speak_stream(
        self, texts: AsyncIterable[str] | Iterable[str], *, timeout: float | None = None
    ) -> Utterance:
        """Speak text as it streams in (LLM tokens): cut by the segmenter, the next piece prefetched.

        ``timeout`` bounds each piece's request until its first audio, as for :meth:`speak`."""
        if isinstance(texts, str) or not isinstance(texts, AsyncIterable | Iterable):
            raise InvalidRequestError(
                f"texts must be an (async) iterable of strings, got {type(texts).__name__}", field="texts"
            )
        return Utterance(self, _segmented(texts, self._segmenter()), timeout=_checked_timeout(timeout))

    def __repr__(self) -> str:
        return (
            f"Synthesizer(engine={type(self.engine).__name__}, sample_rate={self.sample_rate}, "
            f"encoding={self.encoding!r}, frame_ms={self.frame_ms}, voice={self.voice!r})"
        )


async def _from_list(pieces: list[str]) -> AsyncGenerator[str, None]:
    for piece in pieces:
        yield piece


async def _segmented(
    texts: AsyncIterable[str] | Iterable[str], segmenter: Segmenter
) -> AsyncGenerator[str, None]:
    if isinstance(texts, AsyncIterable):
        it = aiter(texts)
        async with _closing(it):
            async for text in it:
                for piece in segmenter.push(_checked(text)):
                    yield piece
    else:
        for text in texts:
            for piece in segmenter.push(_checked(text)):
                yield piece
    for piece in segmenter.flush():
        yield piece


def _checked_timeout(timeout: object) -> float | None:
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout < float("inf")
    ):
        message = f"timeout must be a number of seconds > 0; got {timeout!r}"
        raise InvalidRequestError(message, field="timeout")
    return timeout


def _checked(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidRequestError(f"streamed text must be strings, got {type(text).__name__}", field="texts")
    return text


class Utterance:
    """Frames of one reply, in order; ``await cancel()`` stops it at once. See the module docstring.

    Iterate it once (``async for frame in utterance``). The first iteration starts the work.
    """

    def __init__(
        self, synth: Synthesizer, pieces: AsyncGenerator[str, None], *, timeout: float | None = None
    ) -> None:
        self.sample_rate = synth.sample_rate
        self.encoding: Encoding = synth.encoding
        self.frame_ms = synth.frame_ms
        self.segments: list[Segment] = []
        """Every piece requested so far, in text order."""
        self.started_at: float | None = None
        """``time.monotonic()`` of the first iteration."""
        self.first_audio_at: float | None = None
        self._engine = synth.engine
        self._options = synth._options
        self._timeout = timeout
        self._source = pieces
        self._slots = asyncio.Semaphore(synth.prefetch + 1)
        self._resampler = StreamResampler(synth.engine.sample_rate, synth.sample_rate)
        self._encode = _ENCODERS[synth.encoding]
        # Opus: one encoder per utterance (its state never crosses utterances), dropped on cancel
        self._opus = OpusEncoder(synth.sample_rate, synth.frame_ms) if synth.encoding == "opus" else None  # type: ignore[arg-type]
        # frames are cut from 16-bit PCM and encoded one by one: PCM zeros encode to G.711 silence
        self._framer = (
            None
            if synth.frame_ms is None
            else Framer(synth.sample_rate, synth.frame_ms, pad_last=synth.pad_frames)
        )
        self._pieces = _Channel()
        self._piece: _Piece | None = None
        self._ready: collections.deque[SpeechFrame] = collections.deque()
        self._samples_out = 0  # samples framed so far (frames may still wait in _ready)
        self._yielded_ms = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._started = False
        self._closed = False

    # -- public ----------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the utterance ended, failed or was cancelled."""
        return self._closed

    @property
    def audio_ms(self) -> float:
        """Duration of the audio yielded so far."""
        return self._yielded_ms

    @property
    def ttfa_ms(self) -> float | None:
        """Time from the first iteration to the first audio, once there was audio."""
        if self.started_at is None or self.first_audio_at is None:
            return None
        return 1000 * (self.first_audio_at - self.started_at)

    @property
    def text(self) -> str:
        """The text of every piece requested so far."""
        return _join(s.text for s in self.segments)

    def heard_text(self, played_ms: float) -> str:
        """The text spoken in the first ``played_ms`` of this utterance's audio.

        Whole pieces while ``played_ms`` covers their measured duration; within a piece, the share of
        its speech units proportional to the share of its audio played (up to the last whole word). For
        a piece whose audio had not all arrived, its duration is estimated from the speech rate of the
        pieces before it (or ~230 ms per unit), and never less than what arrived.
        """
        heard: list[str] = []
        rate_ms = self._ms_per_unit()
        offset = 0.0
        for seg in self.segments:
            if seg.samples == 0 and not seg.complete:
                break
            got_ms = 1000 * seg.samples / self.sample_rate
            total_ms = got_ms if seg.complete else max(got_ms, speech_units(seg.text) * rate_ms)
            if played_ms >= offset + total_ms:
                heard.append(seg.text)
                offset += total_ms
                continue
            part = spoken_prefix(seg.text, (played_ms - offset) / total_ms if total_ms else 0.0)
            if part:
                heard.append(part)
            break
        return _join(heard)

    async def cancel(self) -> None:
        """Stop now: no frame after this returns, every request closed, no task left. Idempotent."""
        self._closed = True
        self._ready.clear()
        self._pieces.put_nowait(_WAKE)
        if self._piece is not None:
            self._piece.chunks.put_nowait(_WAKE)
        await self._shutdown()

    async def aclose(self) -> None:
        """Same as :meth:`cancel` (so ``contextlib.aclosing`` works)."""
        await self.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SpeechFrame:
        if not self._started:
            if self._closed:  # cancelled before it started: never start
                raise StopAsyncIteration
            self._start()
        try:
            while not self._ready:
                if self._closed:
                    raise StopAsyncIteration
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                await self._step()
            if self._closed:
                raise StopAsyncIteration
            frame = self._ready.popleft()
            self._yielded_ms = frame.end_ms
            return frame
        except StopAsyncIteration:
            raise
        except BaseException:  # an engine error, or the iterating task was cancelled
            self._closed = True
            await self._shutdown()
            raise

    def __repr__(self) -> str:
        state = "done" if self._closed else "running" if self._started else "new"
        return f"<Utterance {state} segments={len(self.segments)} audio_ms={self.audio_ms:.0f}>"

    # -- producer side ------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        self.started_at = time.monotonic()
        self._spawn(self._feed())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _feed(self) -> None:
        """Read pieces from the text and start each one's request, at most ``prefetch`` ahead."""
        try:
            async with contextlib.aclosing(self._source) as source:
                async for text in source:
                    await self._slots.acquire()
                    piece = _Piece(Segment(len(self.segments), text))
                    self.segments.append(piece.segment)
                    self._spawn(self._fetch(piece))
                    self._pieces.put_nowait(piece)
        except BaseException as exc:  # bad streamed text, or the text source failed (or was cancelled)
            self._pieces.put_nowait(_terminal(exc, self._closed, "the text source"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self._pieces.put_nowait(_END)

    async def _fetch(self, piece: _Piece) -> None:
        """Read one piece's audio into its buffer as fast as the engine gives it."""
        piece.segment.requested_at = time.monotonic()
        opts = self._options
        try:
            stream = self._engine.stream(
                piece.segment.text,
                voice=opts.voice,
                speed=opts.speed,
                volume=opts.volume,
                timeout=self._timeout,
            )
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    piece.chunks.put_nowait(chunk)
        except BaseException as exc:
            error = _terminal(exc, self._closed, "the engine's stream")
            error.add_note(f"while speaking segment {piece.segment.index}: {piece.segment.text[:80]!r}")
            piece.chunks.put_nowait(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            piece.chunks.put_nowait(_END)

    async def _shutdown(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._resampler.reset()
        if self._framer is not None:
            self._framer.reset()
        self._opus = None

    # -- consumer side ------------------------------------------------------------------------------

    async def _step(self) -> None:
        """Wait for the next event and turn it into ready frames (or an error, or the end)."""
        if self._piece is None:
            item = await self._pieces.get()
            if self._closed or item is _WAKE:
                return
            if item is _END:
                self._closed = True
                await self._shutdown()
                return
            if isinstance(item, BaseException):
                self._error = item
                return
            assert isinstance(item, _Piece)
            self._piece = item
            return
        piece = self._piece
        item = await piece.chunks.get()
        if self._closed or item is _WAKE:
            return
        if isinstance(item, bytes | bytearray | memoryview):
            self._frames(self._frame(self._resampler.process(bytes(item))), piece)
            return
        # end of the piece, or its failure: flush what it produced so far either way
        tail = self._frame(self._resampler.flush(), last=True)
        self._frames(tail, piece)
        self._piece = None
        self._slots.release()
        if item is _END:
            piece.segment.complete = True
        else:
            assert isinstance(item, BaseException)
            self._error = item

    def _frame(self, pcm: bytes, *, last: bool = False) -> list[bytes]:
        if self._framer is None:  # pass-through: one frame per resampled chunk
            return [pcm] if pcm else []
        return self._framer.push(pcm) + (self._framer.flush() if last else [])

    def _frames(self, frames: list[bytes], piece: _Piece) -> None:
        if self.encoding == "opus" and self._opus is None:  # shut down: the encoder is gone
            return
        seg = piece.segment
        if frames and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        if frames and seg.first_audio_at is None:
            seg.first_audio_at = time.monotonic()
        for pcm in frames:
            n = len(pcm) // 2
            self._ready.append(
                SpeechFrame(
                    audio=self._encode(pcm)
                    if self._encode
                    else self._opus.encode(pcm)
                    if self._opus
                    else pcm,
                    sample_rate=self.sample_rate,
                    encoding=self.encoding,
                    segment_index=seg.index,
                    segment_text=seg.text,
                    start_ms=1000 * self._samples_out / self.sample_rate,
                    duration_ms=1000 * n / self.sample_rate,
                )
            )
            self._samples_out += n
            seg.samples += n

    def _ms_per_unit(self) -> float:
        done = [s for s in self.segments if s.complete and s.samples]
        units = sum(speech_units(s.text) for s in done)
        if not units:
            return _DEFAULT_MS_PER_UNIT
        return 1000 * sum(s.samples for s in done) / self.sample_rate / units


def _terminal(exc: BaseException, closed: bool, what: str) -> BaseException:
    """What the iterator raises for a producer's failure. A ``CancelledError`` that we did not cause
    (the utterance is not closed) becomes an error, so the iterator ends instead of waiting forever."""
    if isinstance(exc, asyncio.CancelledError) and not closed:
        return GLMTTSError(f"{what} was cancelled by something other than this utterance")
    return exc


def _closing(stream: object) -> contextlib.AbstractAsyncContextManager[object]:
    return contextlib.aclosing(stream) if hasattr(stream, "aclose") else contextlib.nullcontext()


def _join(parts: Iterable[str]) -> str:
    """Join pieces, restoring the space the segmenter trimmed between two Latin-script pieces."""
    out = ""
    for part in parts:
        if out and part and out[-1].isascii() and not out[-1].isspace() and part[0].isascii():
            out += " "
        out += part
    return out
