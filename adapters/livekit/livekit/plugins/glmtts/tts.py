"""``glmtts.TTS``: GLM-TTS as a LiveKit Agents TTS with true streaming input.

The core does the work: ``stream()`` feeds the LLM's tokens to the plugin's one
:class:`glmtts_plugins.Synthesizer` (segmenter: first piece at the first natural clause; the next piece
requested while the current one plays), ``synthesize()`` speaks one text. This module translates:
options, LiveKit's ``conn_options`` (its ``timeout`` bounds each attempt of each request until its first
audio; ``max_retry``/``retry_interval`` are the only retries), LiveKit's emitter and segment rules, timed
transcripts, connection metrics, core errors to LiveKit's error types, and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Never

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    tts,
    utils,
)
from livekit.agents.voice.io import TimedString

import glmtts_plugins as core
from glmtts_plugins.text import is_speakable

from .log import logger

__all__ = ["TTS", "ChunkedStream", "SynthesizeStream"]

NOTHING_TO_SAY_MS = 10
"""LiveKit fails (and retries) a non-empty text that produced no audio, so a text with nothing to say
(punctuation or emoji only) gets this much silence instead of a request."""


class TTS(tts.TTS[Never]):  # no events beyond LiveKit's own
    """GLM-TTS for ``AgentSession``: ``glmtts.TTS(voice="tongtong")``.

    Engine: the GLM-TTS cloud by default (``api_key`` or ``ZAI_API_KEY`` / ``ZHIPUAI_API_KEY``); a
    self-hosted or local server speaking the cloud's API with ``base_url``; or any engine with ``engine``
    (which ``aclose`` then leaves open). Configuration mistakes raise ``InvalidRequestError`` (a
    ``ValueError``) naming the field, here, before any request. A cloud engine made here does not retry
    by itself: LiveKit's ``conn_options`` decide retries, and only before any audio was pushed.
    """

    def __init__(
        self,
        *,
        voice: str = core.DEFAULT_VOICE,
        speed: float = 1.0,
        volume: float = 1.0,
        sample_rate: int = 24000,
        api_key: str | None = None,
        base_url: str | None = None,
        engine: core.Engine | None = None,
        model: str = "glm-tts",
        prefetch: int = 1,
    ) -> None:
        options = core.VoiceOptions(voice, speed, volume)  # validated before an engine is made
        resolved, self._owns_engine = core.resolve_engine(
            engine, api_key, base_url, model=model, retry=core.RetryPolicy(max_retries=0)
        )
        self._synth = core.Synthesizer(
            resolved,
            sample_rate=sample_rate,
            frame_ms=None,  # the emitter frames audio itself; hand it each chunk as soon as it is resampled
            voice=options.voice,
            speed=options.speed,
            volume=options.volume,
            prefetch=prefetch,
        )
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._prewarm_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def model(self) -> str:
        return self._synth.engine.model

    @property
    def provider(self) -> str:
        """The engine's stable brand name ("GLM-TTS" for the cloud API); the host is in ``engine``'s
        ``base_url`` and in every error message."""
        return self._synth.engine.provider

    @property
    def engine(self) -> core.BaseEngine:
        """The engine in use: the one given (a minimal engine wrapped by ``glmtts_plugins.as_engine``) or
        the cloud engine this TTS made."""
        return self._synth.engine

    @property
    def options(self) -> core.VoiceOptions:
        """The voice settings the next stream or synthesis uses."""
        return self._synth.options

    def update_options(
        self, *, voice: str | None = None, speed: float | None = None, volume: float | None = None
    ) -> None:
        """Change the voice settings of streams and syntheses started from now on."""
        self._synth.update_options(voice=voice, speed=speed, volume=volume)

    def prewarm(self) -> None:
        """Open the engine's connection in the background (LiveKit calls this when an agent activity
        starts, on handoffs and on ``update_options(tts=)``): a new prewarm once the previous one ended,
        never two at once."""
        if self._closed or (self._prewarm_task is not None and not self._prewarm_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: nothing to warm up yet
            return
        self._prewarm_task = loop.create_task(self._synth.engine.prewarm())
        self._prewarm_task.add_done_callback(_log_prewarm_failure)

    async def aclose(self) -> None:
        """Stop any prewarm and close an engine this TTS made; using the TTS afterwards raises
        ``APIError`` (not retryable)."""
        self._closed = True
        if self._prewarm_task is not None:
            await utils.aio.cancel_and_wait(self._prewarm_task)
            self._prewarm_task = None
        if self._owns_engine:
            await self._synth.engine.aclose()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    def _check_open(self) -> None:
        if self._closed:
            raise APIError("GLM-TTS: this TTS was closed (aclose()); create a new one", retryable=False)


def _attempt_timeout(conn_options: APIConnectOptions) -> float | None:
    """``conn_options.timeout`` bounds each attempt until its first audio; LiveKit allows 0, which (as
    for aiohttp) means no bound of our own: the engine's defaults apply."""
    return conn_options.timeout or None


class ChunkedStream(tts.ChunkedStream):
    """One text, pushed as PCM as it arrives."""

    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._tts._check_open()
        _initialize(output_emitter, self._tts.sample_rate, stream=False)
        utterance = self._tts._synth.speak(self.input_text, timeout=_attempt_timeout(self._conn_options))
        await _push(utterance, output_emitter, timed=False, on_first_audio=self._note_connection)
        if not is_speakable(self.input_text):
            _push_silence(output_emitter, self._tts.sample_rate)
        # no flush() here: the base class ends the input, which marks the held-back tail final; a flush
        # first would make LiveKit append a synthetic 10 ms silence marker instead

    def _note_connection(self) -> None:
        self._acquire_time, self._connection_reused = _connection(self._tts.engine)


class SynthesizeStream(tts.SynthesizeStream):
    """LLM tokens in, audio out: one segment per stream (what ``AgentSession`` 1.8 drives), cut by the
    core's segmenter, each piece's audio followed by an emitter flush and described by a timed
    transcript that starts at the piece's start and ends when the piece's audio is complete."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        self._tts._check_open()
        _initialize(output_emitter, self._tts.sample_rate, stream=True)
        output_emitter.start_segment(segment_id=utils.shortuuid())
        said: list[str] = []

        async def tokens() -> AsyncIterator[str]:
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    return  # 1.8: one segment per stream; the base class drops text pushed after a flush
                if not said:
                    self._mark_started()
                said.append(data)
                yield data

        utterance = self._tts._synth.speak_stream(tokens(), timeout=_attempt_timeout(self._conn_options))
        await _push(utterance, output_emitter, timed=True, on_first_audio=self._note_connection)
        if said and not is_speakable("".join(said)):
            _push_silence(output_emitter, self._tts.sample_rate)
        output_emitter.end_segment()

    def _note_connection(self) -> None:
        self._acquire_time, self._connection_reused = _connection(self._tts.engine)


def _connection(engine: core.BaseEngine) -> tuple[float, bool]:
    """LiveKit's ``acquire_time`` / ``connection_reused`` from the engine's last connection, when the
    engine can tell (an HTTP engine's pooled client); LiveKit's defaults otherwise."""
    info = engine.last_connection
    if info is None:
        return 0.0, False
    return info.acquire_time, bool(info.reused)


async def _push(
    utterance: core.Utterance,
    emitter: tts.AudioEmitter,
    *,
    timed: bool,
    on_first_audio: Callable[[], None],
) -> None:
    """Push an utterance's audio; a core error becomes LiveKit's, not retryable once audio went out.

    With ``timed``, each piece is described by two ``TimedString``s: its text but the trailing
    punctuation at the piece's start, then that tail with the piece's end time once its audio is
    complete (LiveKit's synchronizer can then align inside every piece, the last one included)."""
    piece = -1
    tail = ""  # the piece's text still to push, with its end time
    end_s = 0.0
    try:
        async for frame in utterance:
            if frame.segment_index != piece:
                if piece < 0:
                    on_first_audio()
                else:
                    if tail:  # seen complete only now (no resampler tail to tell it earlier)
                        emitter.push_timed_transcript(TimedString(tail, end_time=end_s))
                    emitter.flush()  # the previous piece is complete: release its tail
                piece = frame.segment_index
                if timed:
                    head, tail = _split_tail(frame.segment_text)
                    emitter.push_timed_transcript(TimedString(head, start_time=frame.start_ms / 1000))
            emitter.push(frame.audio)
            end_s = frame.end_ms / 1000
            if tail and utterance.segments[piece].complete:
                emitter.push_timed_transcript(TimedString(tail, end_time=end_s))
                tail = ""
        if tail:
            emitter.push_timed_transcript(TimedString(tail, end_time=end_s))
    except Exception as exc:  # a core error, or anything a custom engine raises
        if utterance.audio_ms > 0:
            # deliver every frame pushed before the failure: on an error the base class closes the emitter
            # without draining it, which would drop up to a few hundred ms of audio already produced
            emitter.end_input()
            await emitter.join()
        if isinstance(exc, core.GLMTTSError):
            raise _livekit_error(exc, audio_sent=utterance.audio_ms > 0) from exc
        raise
    finally:
        await utterance.cancel()


def _split_tail(text: str) -> tuple[str, str]:
    """``text`` as (what is said, the trailing punctuation and space), restoring the space the segmenter
    trimmed after a Latin-script piece. A piece that ends in a letter keeps its last character back, so
    the end time always has text to carry (LiveKit forwards no empty transcript)."""
    if text[-1:].isascii():
        text += " "
    cut = len(text)
    while cut > 1 and not text[cut - 1].isalnum():
        cut -= 1
    if cut == len(text):
        cut -= 1
    return text[:cut], text[cut:]


def _livekit_error(exc: core.GLMTTSError, *, audio_sent: bool) -> APIError:
    """LiveKit's error for a core error. After audio, never retryable: a retry would repeat speech."""
    retryable = exc.retryable and not audio_sent
    message = f"GLM-TTS: {exc}"
    if isinstance(exc, core.APITimeoutError):
        return APITimeoutError(message, retryable=retryable)
    if isinstance(exc, core.APIConnectionError | core.TruncatedStreamError):
        return APIConnectionError(message, retryable=retryable)
    return APIStatusError(
        message, status_code=exc.status or -1, request_id=exc.request_id, body=exc.code, retryable=retryable
    )


def _initialize(emitter: tts.AudioEmitter, sample_rate: int, *, stream: bool) -> None:
    """Raw 16-bit mono PCM at the plugin's rate; the core's request ids are per piece, so one of our own."""
    emitter.initialize(
        request_id=utils.shortuuid(),
        sample_rate=sample_rate,
        num_channels=1,
        mime_type="audio/pcm",
        stream=stream,
    )


def _push_silence(emitter: tts.AudioEmitter, sample_rate: int) -> None:
    emitter.push(bytes(2 * sample_rate * NOTHING_TO_SAY_MS // 1000))


def _log_prewarm_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if task.exception() is not None:
            logger.warning("GLM-TTS prewarm failed: %s", task.exception())
