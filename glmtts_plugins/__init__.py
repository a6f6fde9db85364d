"""GLM-TTS for real-time voice agents: engines, audio and text helpers, and a local server.

``CloudEngine`` speaks the Zhipu cloud API; ``OfflineEngine`` is an embedded espeak-ng stand-in for
development and CI (it is not GLM-TTS).
"""

from .engines import SAMPLE_RATE, BaseEngine, CloudEngine, Engine, OfflineEngine
from .engines.cloud import RetryPolicy
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ContentBlockedError,
    GLMTTSError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TruncatedStreamError,
)
from .voices import DEFAULT_VOICE, VOICES

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_VOICE",
    "SAMPLE_RATE",
    "VOICES",
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BaseEngine",
    "CloudEngine",
    "ContentBlockedError",
    "Engine",
    "GLMTTSError",
    "InvalidRequestError",
    "OfflineEngine",
    "QuotaExceededError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "TruncatedStreamError",
    "__version__",
]
