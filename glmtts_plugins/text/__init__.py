"""Text handling: cutting text into pieces the engines accept."""

from .limit import MAX_INPUT_CHARS, split_text

__all__ = ["MAX_INPUT_CHARS", "split_text"]
