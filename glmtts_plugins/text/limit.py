"""Split text over the cloud's 1024-character limit at the most natural boundary available."""

from __future__ import annotations

import re

__all__ = ["MAX_INPUT_CHARS", "split_text"]

MAX_INPUT_CHARS = 1024

_SENTENCE_END = re.compile(r"(?:[。！？!?；;…]+|\.(?=\s))[\"'”’）)」』]*\s*")
_CLAUSE_END = re.compile(r"(?:[，、：]|[,:](?!\d))\s*")
_WORD_CHARS = frozenset(".,-_/:@")
_SPACE = re.compile(r"\s+")


def _last_cut(pattern: re.Pattern[str], window: str, limit: int) -> int:
    """End index of the last match of ``pattern`` in ``window`` ending by ``limit`` (0 when none)."""
    cut = 0
    for match in pattern.finditer(window):
        if match.end() <= limit:
            cut = match.end()
    return cut


def _safe_hard_cut(window: str) -> int:
    """A cut near the end of ``window`` that does not split a run of letters or digits."""
    cut = len(window)
    while (
        cut > len(window) // 2
        and window[cut - 1].isascii()
        and (window[cut - 1].isalnum() or window[cut - 1] in _WORD_CHARS)
    ):
        cut -= 1
    return cut if cut > len(window) // 2 else len(window)


def split_text(text: str, limit: int = MAX_INPUT_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, in order, losing nothing.

    Prefers the last sentence end inside the limit, then the last clause boundary, then the last
    whitespace, then a character boundary that keeps ASCII words and numbers whole.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        # One character of look-ahead, so "3." at the window's end is not taken for a sentence end.
        window = rest[: limit + 1]
        cut = (
            _last_cut(_SENTENCE_END, window, limit)
            or _last_cut(_CLAUSE_END, window, limit)
            or _last_cut(_SPACE, window, limit)
            or _safe_hard_cut(window[:limit])
        )
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces
