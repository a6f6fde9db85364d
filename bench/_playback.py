"""What the end-to-end benchmarks share: a paced LLM token stream and a listener that plays in real time."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

from glmtts_plugins.testing import llm_tokens

__all__ = ["Listener", "llm"]


class Listener:
    """Frames in, with arrival times; playback gaps out."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.arrivals: list[tuple[float, float]] = []  # (arrival time, duration in seconds)

    def hear(self, duration_ms: float) -> None:
        self.arrivals.append((time.monotonic(), duration_ms / 1000))

    def result(self) -> tuple[float, float]:
        """(time to first audio, total silence after the first frame), in ms."""
        first = self.arrivals[0][0]
        play_end, silence = first, 0.0
        for arrived, duration in self.arrivals:
            start = max(arrived, play_end)
            silence += start - play_end
            play_end = start + duration
        return 1000 * (first - self.t0), 1000 * silence


async def llm(text: str, rng: random.Random, token_ms: float) -> AsyncIterator[str]:
    for token in llm_tokens(text, rng):
        yield token
        await asyncio.sleep(token_ms / 1000)
