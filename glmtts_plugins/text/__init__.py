"""Text handling: cutting text into pieces the engines accept."""

from .limit import MAX_INPUT_CHARS, split_text
from .segmenter import (
    FIRST_MIN_CHARS,
    QUOTE_SPAN_MAX,
    TARGET_CHARS,
    Segmenter,
    is_speakable,
    speech_units,
    spoken_prefix,
)

__all__ = [
    "FIRST_MIN_CHARS",
    "MAX_INPUT_CHARS",
    "QUOTE_SPAN_MAX",
    "TARGET_CHARS",
    "Segmenter",
    "is_speakable",
    "speech_units",
    "split_text",
    "spoken_prefix",
]
