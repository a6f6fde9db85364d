"""Whole-file WAV helpers for 16-bit mono PCM."""

from __future__ import annotations

import io
import wave
from pathlib import Path

__all__ = ["pcm_to_wav", "read_wav", "wav_to_pcm", "write_wav"]


def pcm_to_wav(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap 16-bit little-endian PCM in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_to_pcm(data: bytes) -> tuple[bytes, int, int]:
    """Return ``(pcm, sample_rate, channels)`` of a 16-bit WAV file held in memory.

    Tolerates the streaming-style header whose data length is 0 or 0xFFFFFFFF.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError(f"expected 16-bit samples, got {8 * w.getsampwidth()}-bit")
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a readable WAV file: {exc}") from exc
    if not pcm:
        # Streaming encoders write a placeholder length; fall back to everything after the data chunk.
        idx = data.find(b"data")
        if idx >= 0:
            pcm = data[idx + 8 :]
            pcm = pcm[: len(pcm) - len(pcm) % (2 * channels)]
    return pcm, rate, channels


def read_wav(path: str | Path) -> tuple[bytes, int, int]:
    """Read a 16-bit WAV file: ``(pcm, sample_rate, channels)``."""
    return wav_to_pcm(Path(path).read_bytes())


def write_wav(path: str | Path, pcm: bytes, sample_rate: int, channels: int = 1) -> None:
    """Write 16-bit PCM as a WAV file, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pcm_to_wav(pcm, sample_rate, channels))
