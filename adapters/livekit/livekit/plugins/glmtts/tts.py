"""``glmtts.TTS``: GLM-TTS as a LiveKit Agents TTS with true streaming input.

The core does the work: ``stream()`` feeds the LLM's tokens to a :class:`glmtts_plugins.Synthesizer`
(segmenter: first piece at the first natural clause; the next piece requested while the current one
plays), ``synthesize()`` speaks one text. This module translates: options, LiveKit's emitter and segment
rules, core errors to LiveKit's error types, and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlparse

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
from glmtts_plugins.audio import SUPPORTED_RATES
from glmtts_plugins.engines.base import validate_options
from glmtts_plugins.text import is_speakable
from glmtts_plugins.voices import DEFAULT_VOICE

from .log import logger

__all__ = ["TTS", "ChunkedStream", "SynthesizeStream"]

NOTHING_TO_SAY_MS = 10
"""LiveKit fails (and retries) a non-empty text that produced no audio, so a text with nothing to say
(punctuation or emoji only) gets this much silence instead of a request."""


@dataclass(frozen=True)
class _TTSOptions:
    voice: str
    speed: float
    volume: float


class TTS(tts.TTS):
    """GLM-TTS for ``AgentSession``: ``glmtts.TTS(voice="tongtong")``.

    Engine: the GLM-TTS cloud by default (``api_key`` or ``ZAI_API_KEY``); a self-hosted or local server
    speaking the cloud's API with ``base_url``; or any core engine object with ``engine`` (which ``aclose``
    then leaves open). A cloud engine made here does not retry by itself: LiveKit's ``conn_options``
    decide retries, and only before any audio was pushed.
    """

    def __init__(
        self,
        *,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        volume: float = 1.0,
        sample_rate: int = 24000,
        api_key: str | None = None,
        base_url: str | None = None,
        engine: core.Engine | None = None,
        model: str = "glm-tts",
        prefetch: int = 1,
    ) -> None:
        validate_options(voice=voice, speed=speed, volume=volume)
        if sample_rate not in SUPPORTED_RATES:
            allowed = ", ".join(map(str, SUPPORTED_RATES))
            raise core.InvalidRequestError(
                f"sample_rate must be one of {allowed}; got {sample_rate!r}", field="sample_rate"
            )
        if engine is not None and (api_key is not None or base_url is not None):
            raise ValueError("pass either engine or api_key/base_url, not both")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=True),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._owns_engine = engine is None
        self._engine: core.Engine = engine or core.CloudEngine(
            api_key, base_url, model=model, retry=core.RetryPolicy(max_retries=0)
        )
        self._opts = _TTSOptions(voice, speed, volume)
        self._prefetch = prefetch
        self._prewarm_task: asyncio.Task[None] | None = None
        core.Synthesizer(self._engine, sample_rate=sample_rate, prefetch=prefetch)  # validates prefetch

    @property
    def model(self) -> str:
        return str(getattr(self._engine, "model", type(self._engine).__name__))

    @property
    def provider(self) -> str:
        base_url = getattr(self._engine, "base_url", None)
        if isinstance(base_url, str):
            return urlparse(base_url).hostname or base_url
        return type(self._engine).__name__

    @property
    def engine(self) -> core.Engine:
        return self._engine

    def update_options(
        self, *, voice: str | None = None, speed: float | None = None, volume: float | None = None
    ) -> None:
        """Change the voice settings of streams and syntheses started from now on."""
        new = _TTSOptions(
            self._opts.voice if voice is None else voice,
            self._opts.speed if speed is None else speed,
            self._opts.volume if volume is None else volume,
        )
        validate_options(voice=new.voice, speed=new.speed, volume=new.volume)
        self._opts = new

    def prewarm(self) -> None:
        """Open the engine's connection in the background (LiveKit calls this when an agent starts)."""
        prewarm = getattr(self._engine, "prewarm", None)
        if prewarm is None or self._prewarm_task is not None:
            return
        try:
            self._prewarm_task = asyncio.get_running_loop().create_task(prewarm())
        except RuntimeError:  # no running loop: nothing to warm up yet
            return
        self._prewarm_task.add_done_callback(_log_prewarm_failure)

    async def aclose(self) -> None:
        if self._prewarm_task is not None:
            await utils.aio.cancel_and_wait(self._prewarm_task)
            self._prewarm_task = None
        aclose = getattr(self._engine, "aclose", None)
        if self._owns_engine and aclose is not None:
            await aclose()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    def _synthesizer(self) -> core.Synthesizer:
        return core.Synthesizer(
            self._engine,
            sample_rate=self.sample_rate,
            frame_ms=None,  # the emitter frames audio itself; hand it each chunk as soon as it is resampled
            voice=self._opts.voice,
            speed=self._opts.speed,
            volume=self._opts.volume,
            prefetch=self._prefetch,
        )


class ChunkedStream(tts.ChunkedStream):
    """One text, pushed as PCM as it arrives."""

    def __init__(self, *, tts: TTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        _initialize(output_emitter, self._tts.sample_rate, stream=False)
        await _push(self._tts._synthesizer().speak(self.input_text), output_emitter, timed=False)
        if not is_speakable(self.input_text):
            _push_silence(output_emitter, self._tts.sample_rate)
        # no flush() here: the base class ends the input, which marks the held-back tail final; a flush
        # first would make LiveKit append a synthetic 10 ms silence marker instead


class SynthesizeStream(tts.SynthesizeStream):
    """LLM tokens in, audio out: one segment per stream (what ``AgentSession`` 1.8 drives), cut by the
    core's segmenter, each piece's audio followed by an emitter flush and announced by a timed
    transcript at the piece's start."""

    def __init__(self, *, tts: TTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: TTS = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
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

        await _push(self._tts._synthesizer().speak_stream(tokens()), output_emitter, timed=True)
        if said and not is_speakable("".join(said)):
            _push_silence(output_emitter, self._tts.sample_rate)
        output_emitter.end_segment()


async def _push(utterance: core.Utterance, emitter: tts.AudioEmitter, *, timed: bool) -> None:
    """Push an utterance's audio; a core error becomes LiveKit's, not retryable once audio went out."""
    piece = -1
    try:
        async for frame in utterance:
            if frame.segment_index != piece:
                if piece >= 0:
                    emitter.flush()  # the previous piece is complete: release its tail
                piece = frame.segment_index
                if timed:
                    text = frame.segment_text + (" " if frame.segment_text[-1:].isascii() else "")
                    emitter.push_timed_transcript(TimedString(text, start_time=frame.start_ms / 1000))
            emitter.push(frame.audio)
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
