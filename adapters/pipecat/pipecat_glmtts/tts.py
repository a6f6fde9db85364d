"""``GLMHttpTTSService``: GLM-TTS (cloud, self-hosted or any core engine) as a Pipecat ``TTSService``.

The core does the work: each ``run_tts`` call is one :class:`~glmtts_plugins.Utterance` at the pipeline's
output rate through the core's low-delay resampler, flushed at the end of the utterance (no lost tail) and
dropped on interruption. This service only translates: settings to engine options, core errors to
``ErrorFrame`` categories, and Pipecat's interruption to ``Utterance.cancel()``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import CancelFrame, EndFrame, ErrorFrame, Frame, StartFrame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven

from glmtts_plugins import (
    APIConnectionError,
    AuthenticationError,
    CloudEngine,
    Engine,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    Synthesizer,
    TruncatedStreamError,
    Utterance,
)
from glmtts_plugins.engines.base import validate_options
from glmtts_plugins.text import is_speakable
from glmtts_plugins.voices import DEFAULT_VOICE

__all__ = ["GLMHttpTTSService", "GLMTTSSettings", "error_category"]

PIPELINE_RATES = (8000, 16000, 24000, 48000)


@dataclass
class GLMTTSSettings(TTSSettings):
    """Runtime settings (send a ``TTSUpdateSettingsFrame(delta=GLMHttpTTSService.Settings(...))``).

    Parameters:
        speed: speaking rate, 0.5-2.0.
        volume: loudness, (0, 10].
    """

    speed: float | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)
    volume: float | NotGiven | None = field(default_factory=lambda: NOT_GIVEN)


def error_category(exc: GLMTTSError) -> ErrorCategory:
    """Pipecat's category for a core error; authentication and invalid settings are permanent.

    A blocked text is not permanent (the next sentence may pass review), so it is ``UNKNOWN``.
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


async def _drop_unspeakable(text: str, text_type: str) -> str:
    """A text transform: punctuation, emoji or whitespace alone becomes nothing, so no request is made."""
    return text if is_speakable(text) else ""


class GLMHttpTTSService(TTSService):
    """GLM-TTS over HTTP streaming, at the pipeline's sample rate, stopped at once on interruption.

    Engine: the cloud by default (``api_key`` or ``ZAI_API_KEY``); a self-hosted or local server that
    speaks the cloud's API with ``base_url``; or any core engine object with ``engine`` (which this service
    then does not close). ``sample_rate`` defaults to the pipeline's output rate (8000, 16000, 24000 or
    48000).
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
        stop_frame_timeout_s: float = 12.0,
        **kwargs: Any,
    ) -> None:
        if engine is not None and (api_key is not None or base_url is not None):
            raise ValueError("pass either engine or api_key/base_url, not both")
        if sample_rate is not None and sample_rate not in PIPELINE_RATES:
            raise InvalidRequestError(
                f"sample_rate must be one of {', '.join(map(str, PIPELINE_RATES))}; got {sample_rate!r}",
                field="sample_rate",
            )
        defaults = self.Settings(model="glm-tts", voice=DEFAULT_VOICE, language=None, speed=1.0, volume=1.0)
        if settings is not None:
            defaults.apply_update(settings)
        validate_options(voice=defaults.voice, speed=defaults.speed, volume=defaults.volume)  # type: ignore[arg-type]
        super().__init__(
            sample_rate=sample_rate,
            push_start_frame=True,
            push_stop_frames=True,
            stop_frame_timeout_s=stop_frame_timeout_s,
            settings=defaults,
            **kwargs,
        )
        self.add_text_transformer(_drop_unspeakable, "*")
        self._owns_engine = engine is None
        self._engine: Engine = (
            engine if engine is not None else CloudEngine(api_key, base_url, model=defaults.model)
        )
        self._synth: Synthesizer | None = None
        self._utterances: dict[str, Utterance] = {}

    @property
    def engine(self) -> Engine:
        return self._engine

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self.sample_rate not in PIPELINE_RATES:
            raise InvalidRequestError(
                f"pipeline audio_out_sample_rate must be one of {', '.join(map(str, PIPELINE_RATES))}; "
                f"got {self.sample_rate}",
                field="sample_rate",
            )
        self._synth = self._make_synthesizer()
        prewarm = getattr(self._engine, "prewarm", None)
        if prewarm is not None:
            await prewarm()

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def _close(self) -> None:
        for utt in list(self._utterances.values()):
            await utt.cancel()
        aclose = getattr(self._engine, "aclose", None)
        if self._owns_engine and aclose is not None:
            await aclose()

    def _make_synthesizer(self) -> Synthesizer:
        s = self._settings
        return Synthesizer(
            self._engine,
            sample_rate=self.sample_rate,
            frame_ms=None,  # the output transport re-frames; pass audio on as soon as it is resampled
            voice=s.voice,  # type: ignore[arg-type]
            speed=s.speed,  # type: ignore[arg-type]
            volume=s.volume,  # type: ignore[arg-type]
        )

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:
        """Apply a settings change to the next utterance; a bad value is refused, the old one kept."""
        old = (self._settings.voice, self._settings.speed, self._settings.volume, self._settings.model)
        changed = await super()._update_settings(delta)
        s = self._settings
        try:
            validate_options(voice=s.voice, speed=s.speed, volume=s.volume)  # type: ignore[arg-type]
        except InvalidRequestError as exc:
            s.voice, s.speed, s.volume, s.model = old
            # APPLICATION, not INVALID_REQUEST: the old settings still work, so the service stays usable
            await self.push_error(str(exc), exception=exc, category=ErrorCategory.APPLICATION)
            return {}
        if "model" in changed and hasattr(self._engine, "model"):
            self._engine.model = s.model  # type: ignore[attr-defined]
        if self._synth is not None:
            self._synth.update_options(voice=s.voice, speed=s.speed, volume=s.volume)  # type: ignore[arg-type]
        return changed

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Speak one text: audio frames at ``self.sample_rate``, or an ``ErrorFrame`` with its category."""
        try:
            if self._synth is None:  # start() failed or was not run: the rate is checked here
                self._synth = self._make_synthesizer()
            utt = self._synth.speak(text)
        except GLMTTSError as exc:
            yield ErrorFrame(error=f"GLM-TTS: {exc}", exception=exc, category=error_category(exc))
            return
        self._utterances[context_id] = utt
        counted = False
        try:
            async for frame in utt:
                if not counted:
                    counted = True
                    await self.start_tts_usage_metrics(text)
                yield TTSAudioRawFrame(frame.audio, frame.sample_rate, 1, context_id=context_id)
        except GLMTTSError as exc:
            yield ErrorFrame(error=f"GLM-TTS: {exc}", exception=exc, category=error_category(exc))
        finally:
            self._utterances.pop(context_id, None)
            await utt.cancel()

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Barge-in: close the interrupted utterance's request now, even if ``run_tts`` is suspended."""
        await super().on_audio_context_interrupted(context_id)
        utt = self._utterances.pop(context_id, None)
        if utt is not None:
            await utt.cancel()
