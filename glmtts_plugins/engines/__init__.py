"""Engines turn text into 24 kHz 16-bit mono PCM: the cloud API, a self-hosted vLLM-Omni, or an embedded
offline stand-in."""

from .base import SAMPLE_RATE, BaseEngine, Engine, as_engine, validate_request
from .cloud import CloudEngine
from .http import ConnectionInfo, RetryPolicy
from .offline import OfflineEngine
from .references import ReferenceVoice, VoiceRegistry
from .vllm_omni import VllmOmniEngine

__all__ = [
    "SAMPLE_RATE",
    "BaseEngine",
    "CloudEngine",
    "ConnectionInfo",
    "Engine",
    "OfflineEngine",
    "ReferenceVoice",
    "RetryPolicy",
    "VllmOmniEngine",
    "VoiceRegistry",
    "as_engine",
    "validate_request",
]
