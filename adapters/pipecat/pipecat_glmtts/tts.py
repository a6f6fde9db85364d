"""``GLMHttpTTSService``: GLM-TTS (cloud, self-hosted or any core engine) as a Pipecat ``TTSService``.

The core does the work; this service translates. By default each LLM turn is one streamed core utterance
(:meth:`glmtts_plugins.Synthesizer.speak_stream`): the tokens go to the core's segmenter as they arrive,
the first request leaves at the first natural clause, ``prefetch`` pieces are requested ahead of the one
playing, and the audio is appended to the turn's audio context from a background task (as Pipecat's
WebSocket services deliver theirs), each piece announced before its first audio by an ``AggregatedTextFrame``
of its text (``will_be_spoken``, not for the context: what SENTENCE mode announces per sentence) and followed
by a ``TTSTextFrame`` of exactly its text, so an interrupted turn leaves in the assistant context only the
pieces that were played. A ``TTSSpeakFrame`` (a
whole text known in advance) is one :meth:`~glmtts_plugins.Synthesizer.speak` request, yielded inline.
``text_aggregation_mode=TextAggregationMode.SENTENCE`` keeps the older behaviour: Pipecat cuts sentences
and each is one request, strictly one after another.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TextAggregationMode, TTSService
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven

from glmtts_plugins import (
    DEFAULT_VOICE,
    APIConnectionError,
    AuthenticationError,
    BaseEngine,
    Engine,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    SpeechFrame,
    Synthesizer,
    TruncatedStreamError,
    Utterance,
    VoiceOptions,
    resolve_engine,
)
from glmtts_plugins.audio import SUPPORTED_RATES
from glmtts_plugins.text import is_speakable

from ._outage import OutageGuard, is_connect_failure
from ._turn import Turn, piece_texts

__all__ = ["GLMHttpTTSService", "GLMTTSSettings", "error_category"]

DEFAULT_MODEL = "glm-tts"
_RATES = ", ".join(map(str, SUPPORTED_RATES))


@dataclass
class GLMTTSSettings(TTSSettings):
    """Runtime settings (send a ``TTSUpdateSettingsFrame(delta=GLMHttpTTSService.Settings(...))``).

    Parameters:
        speed: speaking rate, 0.5-2.0.
        volume: loudness, (0, 10].
    """

    speed: float | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    volume: float | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)


def error_category(exc: BaseException) -> ErrorCategory:
    """Pipecat's category for a failure; authentication and invalid settings are permanent.

    A blocked text is not permanent (the next sentence may pass review), so it is ``UNKNOWN``, as is any
    failure that is not a core error.
    """
    if isinstance(exc, AuthenticationError):
        return ErrorCategory.AUTHENTICATION
    if isinstance(exc, QuotaExceededError):
        return ErrorCategory.QUOTA
    if isinstance(exc, RateLimitError):
        return ErrorCategory.RATE_LIMIT
    if isinstance(exc, InvalidRequestError):
        return ErrorCategory.INVALID_REQUEST
    if isinstance(exc, APIConnectionError | TruncatedStreamError):  # no answer, or the stream broke
        return ErrorCategory.CONNECTIVITY
    if isinstance(exc, ServerError):
        return ErrorCategory.SERVER
    return ErrorCategory.UNKNOWN  # ContentBlockedError included


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (text no request can carry), or None."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return i
    return None


class GLMHttpTTSService(TTSService):
    """GLM-TTS over HTTP streaming, at the pipeline's sample rate, stopped at once on interruption.

    Engine: the cloud by default (``api_key`` or ``ZAI_API_KEY``); a self-hosted or local server that
    speaks the cloud's API with ``base_url``; or any core engine object with ``engine`` (which this service
    then does not close). ``sample_rate`` defaults to the pipeline's output rate; every rate of
    :data:`glmtts_plugins.audio.SUPPORTED_RATES` works. ``prefetch``: pieces of a streamed turn requested
    ahead of the one playing. ``request_timeout``: bound on each request until its first audio (the
    engine's own first-byte limit otherwise). ``unusable_after_s``: how long the endpoint may refuse every
    connection before the service reports itself unusable (see the README's failover notes).
    ``voice=``/``voice_id=``/``speed=``/``model=`` work with Pipecat's deprecation warning; use
    ``settings=GLMHttpTTSService.Settings(...)``.
    """

    Settings = GLMTTSSettings
    _settings: GLMTTSSettings

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        engine: Engine | None = None,
        sample_rate: int | None = None,
        settings: GLMTTSSettings | None = None,
        prefetch: int = 1,
        request_timeout: float | None = None,
        unusable_after_s: float = 1.5,
        prewarm_timeout_s: float = 5.0,
        text_aggregation_mode: TextAggregationMode | None = None,
        stop_frame_timeout_s: float = 12.0,
        voice: str | None = None,
        voice_id: str | None = None,
        speed: float | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> None:
        if sample_rate is not None and sample_rate not in SUPPORTED_RATES:
            raise InvalidRequestError(
                f"sample_rate must be one of {_RATES}; got {sample_rate!r}", field="sample_rate"
            )
        if not isinstance(unusable_after_s, int | float) or not unusable_after_s > 0:
            raise InvalidRequestError(
                f"unusable_after_s must be a number of seconds > 0; got {unusable_after_s!r}",
                field="unusable_after_s",
            )
        if request_timeout is not None and (
            not isinstance(request_timeout, int | float)
            or isinstance(request_timeout, bool)
            or not 0 < request_timeout < math.inf
        ):
            raise InvalidRequestError(
                f"request_timeout must be a number of seconds > 0; got {request_timeout!r}",
                field="request_timeout",
            )
        if kwargs.get("aggregate_sentences") is not None and text_aggregation_mode is None:
            text_aggregation_mode = (
                TextAggregationMode.SENTENCE if kwargs["aggregate_sentences"] else TextAggregationMode.TOKEN
            )
        if text_aggregation_mode is TextAggregationMode.TOKEN:
            raise InvalidRequestError(
                "text_aggregation_mode=TOKEN would send one request per token; leave it unset (the "
                "default streams each LLM turn through the core's segmenter) or use SENTENCE",
                field="text_aggregation_mode",
            )
        self._streaming = text_aggregation_mode is None
        defaults = self.Settings(
            model=DEFAULT_MODEL, voice=DEFAULT_VOICE, language=None, speed=1.0, volume=1.0
        )
        for name, value, target in (
            ("voice", voice, "voice"),
            ("voice_id", voice_id, "voice"),
            ("speed", speed, "speed"),
            ("model", model, "model"),
        ):
            if value is not None:
                self._warn_init_param_moved_to_settings(name, target)
                setattr(defaults, target, value)
        if settings is not None:
            defaults.apply_update(settings)
        # Pipecat's settings fields admit NOT_GIVEN and None; VoiceOptions refuses them, naming the field
        options = VoiceOptions(defaults.voice, defaults.speed, defaults.volume)  # type: ignore[arg-type]
        if not isinstance(defaults.model, str) or not defaults.model.strip():
            message = f"model must be a non-empty string; got {defaults.model!r}"
            raise InvalidRequestError(message, field="model")
        engine, owned = resolve_engine(engine, api_key, base_url, model=defaults.model)
        self._guard = OutageGuard(engine, unusable_after_s=unusable_after_s)
        # One Synthesizer holds the voice options; it is rebuilt only if the pipeline's rate differs.
        self._synth = Synthesizer(
            self._guard,
            sample_rate=sample_rate or 24000,
            frame_ms=None,  # the output transport re-frames; pass audio on as soon as it is resampled
            prefetch=prefetch,
            voice=options.voice,
            speed=options.speed,
            volume=options.volume,
        )
        super().__init__(
            sample_rate=sample_rate,
            push_start_frame=True,
            push_stop_frames=True,
            stop_frame_timeout_s=stop_frame_timeout_s,
            settings=defaults,
            text_aggregation_mode=TextAggregationMode.TOKEN if self._streaming else text_aggregation_mode,
            **kwargs,
        )
        self.add_text_transformer(self._drop_unspeakable, "*")
        self._engine = engine
        self._owns_engine = owned
        self._timeout = request_timeout
        self._prewarm_timeout_s = prewarm_timeout_s
        self._prewarm_task: asyncio.Task[None] | None = None
        self._model_of_engine = defaults.model
        self._rate_ok = True
        self._closed = False
        self._utterances: dict[str, Utterance] = {}
        self._turns: dict[str, Turn] = {}
        self._speak_frame: TTSSpeakFrame | None = None  # the TTSSpeakFrame being handled, if any
        self._in_llm_turn = False
        self._dropping_llm_text = False  # an interrupted turn's late tokens
        # what was last known to work, and the runtime changes made since (for a bad runtime voice/model)
        self._known_good: tuple[VoiceOptions, str] = (options, defaults.model)
        self._changed_at_runtime: set[str] = set()

    @property
    def engine(self) -> BaseEngine:
        return self._engine

    @property
    def synthesizer(self) -> Synthesizer:
        """The core synthesizer this service speaks through (its ``options`` are the voice settings)."""
        return self._synth

    def can_generate_metrics(self) -> bool:
        return True

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self.sample_rate not in SUPPORTED_RATES:
            self._rate_ok = False
            error = InvalidRequestError(
                f"the pipeline's audio_out_sample_rate {self.sample_rate} is not supported; use one of "
                f"{_RATES} (or pass sample_rate=)",
                field="sample_rate",
            )
            # INVALID_REQUEST is permanent: the service is unusable and never speaks at this rate
            category = ErrorCategory.INVALID_REQUEST
            await self.push_error(f"GLM-TTS: {error}", exception=error, category=category)
            return
        self._rate_ok = True
        if self._synth.sample_rate != self.sample_rate:
            o = self._synth.options
            self._synth = Synthesizer(
                self._guard,
                sample_rate=self.sample_rate,
                frame_ms=None,
                prefetch=self._synth.prefetch,
                voice=o.voice,
                speed=o.speed,
                volume=o.volume,
            )
        if not self._closed and self._prewarm_task is None:
            # in the background and bounded: an endpoint that never answers must not hold the StartFrame
            self._prewarm_task = self.create_task(self._prewarm(), name="glmtts-prewarm")

    async def _prewarm(self) -> None:
        try:
            async with asyncio.timeout(self._prewarm_timeout_s):
                await self._engine.prewarm()
        except TimeoutError:
            logger.warning(f"{self}: prewarm got no answer within {self._prewarm_timeout_s} s")
        except Exception as exc:  # a prewarm is a hint: its failure shows up on the first request
            logger.warning(f"{self}: prewarm failed: {type(exc).__name__}")

    async def stop(self, frame: EndFrame) -> None:
        for turn in list(self._turns.values()):  # an EndFrame without the turn's end: speak what came
            turn.close_input()
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def _close(self) -> None:
        if self._prewarm_task is not None:
            await self.cancel_task(self._prewarm_task)
            self._prewarm_task = None
        await self._cancel_all()
        if self._owns_engine and not self._closed:
            await self._engine.aclose()
        self._closed = True

    async def _cancel_all(self) -> None:
        for context_id in list(self._turns):
            await self._cancel_turn(context_id)
        for utt in list(self._utterances.values()):
            await utt.cancel()

    async def set_usable(self, is_usable: bool) -> None:
        """Bring the service back (``True``) after an outage or a permanent error, or write it off."""
        if is_usable:
            self._guard.reset()
        await super().set_usable(is_usable)

    # -- settings -----------------------------------------------------------------------------------

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:  # type: ignore[override]  # as TTSService's
        """Apply a settings change to the next utterance; a bad value is refused, the old one kept."""
        old = (self._settings.voice, self._settings.speed, self._settings.volume, self._settings.model)
        changed = await super()._update_settings(delta)
        s = self._settings
        try:
            options = self._synth.options.replace(voice=s.voice, speed=s.speed, volume=s.volume)
            if not isinstance(s.model, str) or not s.model.strip():
                raise InvalidRequestError(f"model must be a non-empty string; got {s.model!r}", field="model")
        except InvalidRequestError as exc:
            s.voice, s.speed, s.volume, s.model = old
            # APPLICATION, not INVALID_REQUEST: the old settings still work, so the service stays usable
            await self.push_error(f"GLM-TTS: {exc}", exception=exc, category=ErrorCategory.APPLICATION)
            return {}
        self._synth.update_options(voice=options.voice, speed=options.speed, volume=options.volume)
        if "model" in changed:
            self._set_engine_model(s.model)
        self._changed_at_runtime |= set(changed) & {"voice", "model", "speed", "volume"}
        return changed

    def _set_engine_model(self, model: str) -> None:
        self._engine.model = model  # the cloud engine sends it with each request
        self._model_of_engine = model

    def _revert_runtime_settings(self) -> str:
        """After the server refused a runtime voice/model: back to what last worked; says what changed."""
        good, model = self._known_good
        fields = sorted(self._changed_at_runtime & {"voice", "model"}) or sorted(self._changed_at_runtime)
        now = {"voice": self._synth.options.voice, "model": self._model_of_engine}
        then = {"voice": good.voice, "model": model}
        said = ", ".join(f"{f}={now.get(f)!r} (back to {then.get(f)!r})" for f in fields if f in now)
        self._synth.update_options(voice=good.voice, speed=good.speed, volume=good.volume)
        s = self._settings
        s.voice, s.speed, s.volume = good.voice, good.speed, good.volume
        if self._model_of_engine != model:
            self._settings.model = model
            self._set_engine_model(model)
        self._changed_at_runtime.clear()
        return said or ", ".join(fields)

    # -- failures -----------------------------------------------------------------------------------

    async def _error_frame(self, exc: Exception) -> ErrorFrame:
        """The ``ErrorFrame`` for a failure, applying the usability rule and the runtime-settings rule."""
        category = error_category(exc)
        message = f"GLM-TTS: {exc}"
        if isinstance(exc, InvalidRequestError) and exc.field is None and self._changed_at_runtime:
            # the server refused a voice/model set at runtime: revert it, the service stays usable
            said = self._revert_runtime_settings()
            message = f"GLM-TTS refused the settings changed at runtime: {said}: {exc}"
            category = ErrorCategory.APPLICATION
        elif isinstance(exc, InvalidRequestError) and exc.field == "text":
            category = ErrorCategory.APPLICATION  # this text was refused; the next one is spoken as usual
        elif is_connect_failure(exc) and self._guard.down:
            message = f"GLM-TTS endpoint unreachable for {self._guard.down_for:.1f} s: {exc}"
            await super().set_usable(False)  # failover strategies switch on this; set_usable(True) undoes it
        elif not isinstance(exc, GLMTTSError):
            message = f"GLM-TTS: unexpected {type(exc).__name__}: {exc}"
        return ErrorFrame(error=message, exception=exc, category=category)

    async def _refusal(self, text: str) -> ErrorFrame | None:
        """The error for a text that is not sent at all (checked before any request), or None."""
        if self._closed:
            exc = GLMTTSError(
                "this GLMHttpTTSService was stopped (EndFrame/CancelFrame) and closed its engine; "
                "create a new service for a new pipeline"
            )
            await super().set_usable(False)  # it cannot speak again
            return ErrorFrame(error=f"GLM-TTS: {exc}", exception=exc, category=ErrorCategory.APPLICATION)
        where = _lone_surrogate(text)
        if where is not None:
            exc = InvalidRequestError(
                f"text has a lone surrogate (U+{ord(text[where]):04X}) at index {where}, which no request "
                "can carry; that text is not spoken",
                field="text",
            )
            # APPLICATION: the text was bad, not the service; the next text is spoken as usual
            return ErrorFrame(error=f"GLM-TTS: {exc}", exception=exc, category=ErrorCategory.APPLICATION)
        return None

    def _usage_ok(self) -> None:
        """A request produced audio: its settings work."""
        self._known_good = (self._synth.options, self._model_of_engine)
        self._changed_at_runtime.clear()

    # -- frames -------------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._streaming:
            if isinstance(frame, LLMFullResponseStartFrame) and not frame.skip_tts:
                self._in_llm_turn, self._dropping_llm_text = True, False
            elif isinstance(frame, LLMTextFrame) and not frame.skip_tts and self._dropping_llm_text:
                return  # text still streaming into an interrupted turn
            elif isinstance(frame, InterruptionFrame):
                self._dropping_llm_text = self._in_llm_turn
                self._in_llm_turn = False
            elif isinstance(frame, TTSSpeakFrame):
                self._speak_frame = frame
                try:
                    await super().process_frame(frame, direction)
                finally:
                    self._speak_frame = None
                return
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame) and not frame.skip_tts:
            self._in_llm_turn = False

    async def _drop_unspeakable(self, text: str, text_type: str) -> str:
        """Punctuation, emoji or whitespace alone becomes nothing, so no request is made. A streamed
        turn's tokens are left alone: the core's segmenter attaches punctuation to its piece."""
        if self._streaming and self._speak_frame is None:
            return text
        return text if is_speakable(text) else ""

    async def _push_sequencer_frames(self, frames: list[Frame], context_id: str | None) -> None:
        # In token mode Pipecat's sequencer regroups tokens into its own sentences and pushes, for each
        # when it is cut, an announcement (AggregatedTextFrame) and a TTSTextFrame, at no set place
        # relative to the audio; this service announces each core piece before its first audio and gives
        # its TTSTextFrame after it instead, so the sequencer's are dropped (skipped text passes on).
        if self._streaming:
            frames = [
                f
                for f in frames
                if not isinstance(f, TTSTextFrame)
                and not (isinstance(f, AggregatedTextFrame) and f.will_be_spoken and not f.skip_tts)
            ]
        await super()._push_sequencer_frames(frames, context_id)

    async def tts_process_generator(
        self, context_id: str, generator: AsyncGenerator[Frame | None, None]
    ) -> None:
        await super().tts_process_generator(context_id, generator)
        if context_id not in self._turns:
            # delivered inline (audio, or an error before any audio): the base closes the audio context
            # at the end of the turn instead of waiting stop_frame_timeout_s for audio that never comes
            self._is_yielding_frames_synchronously = True

    async def on_turn_context_completed(self) -> None:
        if self._turn_context_id in self._turns:
            self._is_yielding_frames_synchronously = False  # the turn's task closes its own context
        await super().on_turn_context_completed()

    async def flush_audio(self, context_id: str | None = None) -> None:
        """The LLM turn's text is complete: its last piece goes out and the utterance ends after it."""
        turn = self._turns.get(context_id) if context_id else None
        if turn is not None:
            turn.close_input()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Speak text: a streamed turn's token (fed to its utterance, audio delivered by the turn's task),
        or a whole text (one utterance, audio yielded here); failures become a typed ``ErrorFrame``."""
        refusal = await self._refusal(text)
        if refusal is not None:
            yield refusal
            return
        if not self._rate_ok:
            return
        if self._streaming and self._speak_frame is None and self._in_llm_turn:
            turn = self._turns.get(context_id)
            if turn is None:
                turn = Turn(self._synth, context_id, timeout=self._timeout)
                self._turns[context_id] = turn
                turn.task = self.create_task(self._deliver(turn), name=f"glmtts-turn-{context_id[:8]}")
            turn.feed(text)
            yield None  # audio comes from the turn's task, into the audio context
            return
        async for frame in self._speak_inline(text, context_id):
            yield frame
        if self._streaming and self._speak_frame is None:
            # text outside any LLM turn (a bare TextFrame): its own audio context, which no turn end
            # closes, so it is closed here rather than after stop_frame_timeout_s
            await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await self.remove_audio_context(context_id)

    async def _speak_inline(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        try:
            utt = self._synth.speak(text, timeout=self._timeout)
        except GLMTTSError as exc:
            yield await self._error_frame(exc)
            return
        self._utterances[context_id] = utt
        emitted, said, announced = [0], [""], [-1]
        counted = False
        try:
            async for frame in utt:
                if self._streaming:
                    for text_frame in self._text_frames(utt, frame.segment_index, emitted, said, context_id):
                        yield text_frame
                    if (announce := self._announcement(frame, announced, context_id)) is not None:
                        yield announce
                if not counted:
                    counted = True
                    await self.start_tts_usage_metrics(text)
                    self._usage_ok()
                yield self._audio(frame, context_id)
            if self._streaming:
                for text_frame in self._text_frames(utt, len(utt.segments), emitted, said, context_id):
                    yield text_frame
        except Exception as exc:
            yield await self._error_frame(exc)
        finally:
            self._utterances.pop(context_id, None)
            await utt.cancel()

    async def _deliver(self, turn: Turn) -> None:
        """A streamed turn's task: its audio, each piece announced before it and its text frame after it."""
        ctx, utt = turn.context_id, turn.utterance
        emitted, said, announced = [0], [""], [-1]
        counted = False
        try:
            try:
                async for frame in utt:
                    for text_frame in self._text_frames(utt, frame.segment_index, emitted, said, ctx):
                        await self.append_to_audio_context(ctx, text_frame)
                    if (announce := self._announcement(frame, announced, ctx)) is not None:
                        await self.append_to_audio_context(ctx, announce)
                    if not counted:
                        counted = True
                        self._usage_ok()
                    await self.append_to_audio_context(ctx, self._audio(frame, ctx))
                for text_frame in self._text_frames(utt, len(utt.segments), emitted, said, ctx):
                    await self.append_to_audio_context(ctx, text_frame)
            except Exception as exc:
                for text_frame in self._text_frames(utt, len(utt.segments), emitted, said, ctx):
                    await self.append_to_audio_context(ctx, text_frame)  # pieces completed before it
                await self.append_to_audio_context(ctx, await self._error_frame(exc))
            await self.append_to_audio_context(ctx, TTSStoppedFrame(context_id=ctx))
            await self.remove_audio_context(ctx)
        finally:
            await utt.cancel()
            if self._turns.get(ctx) is turn:
                del self._turns[ctx]

    @staticmethod
    def _announcement(
        frame: SpeechFrame, announced: list[int], context_id: str
    ) -> AggregatedTextFrame | None:
        """Before a piece's first audio: the frame announcing its text (to be spoken, not for the context;
        what Pipecat pushes before each sentence in SENTENCE mode), or None within a piece."""
        if frame.segment_index <= announced[0]:
            return None
        announced[0] = frame.segment_index
        announce = AggregatedTextFrame(frame.segment_text, TextType.SENTENCE)
        announce.will_be_spoken = True
        announce.append_to_context = False
        announce.context_id = context_id
        return announce

    def _text_frames(
        self, utt: Utterance, upto: int, emitted: list[int], said: list[str], context_id: str
    ) -> list[TTSTextFrame]:
        """Text frames for the complete pieces before piece ``upto`` not yet given one."""
        done = [s for s in utt.segments[emitted[0] : upto] if s.complete]
        if not done:
            return []
        emitted[0] = done[-1].index + 1
        texts, said[0] = piece_texts(utt, done, said[0])
        frames = []
        append = self._speak_frame.append_to_context if self._speak_frame is not None else True
        for text in texts:
            frame = TTSTextFrame(text, text_type=TextType.SENTENCE)
            frame.includes_inter_frame_spaces = True  # the text carries its own spacing, none added
            frame.will_be_spoken = True
            frame.append_to_context = append
            frame.context_id = context_id
            frames.append(frame)
        return frames

    @staticmethod
    def _audio(frame: SpeechFrame, context_id: str) -> TTSAudioRawFrame:
        return TTSAudioRawFrame(frame.audio, frame.sample_rate, 1, context_id=context_id)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Barge-in: close the interrupted turn's requests (the prefetched one too) now."""
        await super().on_audio_context_interrupted(context_id)
        await self._cancel_turn(context_id)
        utt = self._utterances.pop(context_id, None)
        if utt is not None:
            await utt.cancel()

    async def _cancel_turn(self, context_id: str) -> None:
        turn = self._turns.pop(context_id, None)
        if turn is None:
            return
        turn.close_input()
        await turn.utterance.cancel()
        if turn.task is not None:
            await self.cancel_task(turn.task)
