"""Test doubles for users' and our own tests: a deterministic engine that needs no speech synthesizer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import numpy as np

from .audio.stream_resampler import StreamResampler
from .engines.base import SAMPLE_RATE, BaseEngine

__all__ = ["ToneEngine", "llm_tokens"]


class ToneEngine(BaseEngine):
    """Emits a tone of ``ms_per_char`` milliseconds per character, in ``chunk_bytes`` chunks.

    The audio is a pure function of the text, so tests can compare what was sent with what arrived.
    ``gap_s`` sleeps between chunks, to stand in for a model that produces audio over time.
    """

    sample_rate = SAMPLE_RATE
    provider = "tone"
    model = "tone"

    def __init__(self, *, ms_per_char: float = 40.0, chunk_bytes: int = 960, gap_s: float = 0.0) -> None:
        self.ms_per_char = ms_per_char
        self.chunk_bytes = chunk_bytes
        self.gap_s = gap_s

    def pcm(self, text: str, *, volume: float = 1.0) -> bytes:
        """The exact PCM ``stream`` yields for ``text``."""
        n = int(len(text) * self.ms_per_char * self.sample_rate / 1000)
        t = np.arange(n) / self.sample_rate
        freq = 200 + (sum(map(ord, text)) % 400)
        wave = 0.3 * min(volume, 3.0) * np.sin(2 * np.pi * freq * t)
        return (wave * 32767).astype("<i2").tobytes()

    def pcm_at(self, text: str, rate: int, *, volume: float = 1.0) -> bytes:
        """The exact PCM a request for ``text`` becomes at ``rate`` in the speech pipeline.

        ``pcm`` through a fresh streaming resampler, flushed at the end: what ``Synthesizer`` (and so
        both adapters) makes of one piece, however the engine chunks it. At ``sample_rate``, ``pcm``.
        """
        resampler = StreamResampler(self.sample_rate, rate)
        return resampler.process(self.pcm(text, volume=volume)) + resampler.flush()

    async def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        pcm = self.pcm(text, volume=volume)
        for start in range(0, len(pcm), self.chunk_bytes):
            if self.gap_s and start:
                await asyncio.sleep(self.gap_s)
            yield pcm[start : start + self.chunk_bytes]


def llm_tokens(text: str, rng: random.Random) -> list[str]:
    """``text`` cut as an LLM streams it: tokens of 1-4 characters, sizes drawn from ``rng``."""
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 4)
        out.append(text[i : i + n])
        i += n
    return out
