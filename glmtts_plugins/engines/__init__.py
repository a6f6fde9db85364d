"""Engines turn text into 24 kHz 16-bit mono PCM: the cloud API, or an embedded offline stand-in."""

from .base import SAMPLE_RATE, BaseEngine, Engine, validate_request
from .cloud import CloudEngine
from .offline import OfflineEngine

__all__ = ["SAMPLE_RATE", "BaseEngine", "CloudEngine", "Engine", "OfflineEngine", "validate_request"]
