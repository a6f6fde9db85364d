"""One LLM turn spoken as one core utterance: tokens in as they stream, pieces out in text order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from glmtts_plugins import Segment, Synthesizer, Utterance

__all__ = ["Turn", "piece_texts"]

_END = None


class Turn:
    """The text of one turn (fed token by token, then closed) and the utterance that speaks it."""

    def __init__(self, synth: Synthesizer, context_id: str, *, timeout: float | None = None) -> None:
        self.context_id = context_id
        self._text: asyncio.Queue[str | None] = asyncio.Queue()
        self.closed = False
        self.utterance: Utterance = synth.speak_stream(self._tokens(), timeout=timeout)
        self.task: asyncio.Task[None] | None = None

    def feed(self, text: str) -> None:
        if not self.closed:
            self._text.put_nowait(text)

    def close_input(self) -> None:
        """No more text: the segmenter flushes its last piece and the utterance ends after it."""
        if not self.closed:
            self.closed = True
            self._text.put_nowait(_END)

    async def _tokens(self) -> AsyncIterator[str]:
        while (text := await self._text.get()) is not _END:
            yield text


def piece_texts(utterance: Utterance, segments: list[Segment], before: str) -> tuple[list[str], str]:
    """Each of ``segments``' text as it reads in the reply after ``before`` (the pieces already given):
    the space the segmenter trimmed between two Latin-script pieces restored, as the core joins them."""
    out: list[str] = []
    for seg in segments:
        end_ms = sum(1000 * s.samples / utterance.sample_rate for s in utterance.segments[: seg.index + 1])
        joined = utterance.heard_text(end_ms + 0.5)  # whole pieces only: 0.5 ms is no word of the next
        out.append(joined[len(before) :])
        before = joined
    return out, before
