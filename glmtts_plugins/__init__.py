"""GLM-TTS for real-time voice agents: engines, a cancellable speech pipeline, audio and text helpers,
and a local server.

``CloudEngine`` speaks the Zhipu cloud API; ``VllmOmniEngine`` the open model served by
vLLM-Omni; ``OfflineEngine`` is an embedded espeak-ng stand-in for
development and CI (it is not GLM-TTS).
"""

from .engines import (
    SAMPLE_RATE,
    BaseEngine,
    CloudEngine,
    ConnectionInfo,
    Engine,
    OfflineEngine,
    ReferenceVoice,
    RetryPolicy,
    VllmOmniEngine,
    VoiceRegistry,
    as_engine,
)
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ContentBlockedError,
    EngineClosedError,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TruncatedStreamError,
)
from .options import VoiceOptions, resolve_engine
from .pace import pace
from .synthesizer import ENCODINGS, Encoding, Segment, SpeechFrame, Synthesizer, Utterance
from .voices import DEFAULT_VOICE, VOICES

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_VOICE",
    "ENCODINGS",
    "SAMPLE_RATE",
    "VOICES",
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BaseEngine",
    "CloudEngine",
    "ConnectionInfo",
    "ContentBlockedError",
    "Encoding",
    "Engine",
    "EngineClosedError",
    "GLMTTSError",
    "InvalidRequestError",
    "OfflineEngine",
    "QuotaExceededError",
    "RateLimitError",
    "ReferenceVoice",
    "RetryPolicy",
    "Segment",
    "ServerError",
    "SpeechFrame",
    "Synthesizer",
    "TruncatedStreamError",
    "Utterance",
    "VllmOmniEngine",
    "VoiceOptions",
    "VoiceRegistry",
    "__version__",
    "as_engine",
    "pace",
    "resolve_engine",
]
