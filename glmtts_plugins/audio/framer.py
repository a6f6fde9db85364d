"""Cut an audio byte stream into fixed-duration frames.

Transports want audio in fixed packets (RTP and Twilio: 20 ms; Pipecat: 40 ms; xiaozhi devices: 60 ms)
while engines and resamplers emit chunks of arbitrary size. ``Framer`` buffers the stream and hands out
whole frames only, so frame boundaries never depend on how the input happened to be chunked.
"""

from __future__ import annotations

__all__ = ["FRAME_MS_CHOICES", "Framer"]

FRAME_MS_CHOICES: tuple[int, ...] = (10, 20, 40, 60)
"""Frame durations ``Framer`` accepts, in milliseconds."""


class Framer:
    """Cut a byte stream into frames of ``frame_ms`` milliseconds.

    ``sample_width`` is the bytes per sample: 2 for 16-bit PCM, 1 for G.711. ``silence`` is what pads the
    last frame on :meth:`flush` when ``pad_last`` is true: either one byte repeated, or one whole sample of
    ``sample_width`` bytes repeated. Use ``b"\\x00"`` for PCM (the default), ``b"\\xff"`` for μ-law and
    ``b"\\xd5"`` for A-law (see ``g711.ULAW_SILENCE`` / ``g711.ALAW_SILENCE``). Padding is aligned to sample
    boundaries in the stream, so a trailing partial sample is completed with the rest of a silence sample.
    """

    def __init__(
        self,
        sample_rate: int,
        frame_ms: int = 20,
        *,
        sample_width: int = 2,
        pad_last: bool = True,
        silence: bytes = b"\x00",
    ) -> None:
        if frame_ms not in FRAME_MS_CHOICES:
            allowed = ", ".join(map(str, FRAME_MS_CHOICES))
            raise ValueError(f"frame_ms must be one of {allowed}; got {frame_ms!r}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")
        if sample_width <= 0:
            raise ValueError(f"sample_width must be positive, got {sample_width!r}")
        samples, rem = divmod(sample_rate * frame_ms, 1000)
        if rem:
            raise ValueError(
                f"{frame_ms} ms at {sample_rate} Hz is {sample_rate * frame_ms / 1000} samples, "
                "not a whole number; choose another frame_ms"
            )
        if len(silence) not in (1, sample_width):
            raise ValueError(
                f"silence must be 1 byte or one {sample_width}-byte sample, got {len(silence)} bytes"
            )
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.sample_width = sample_width
        self.pad_last = pad_last
        self.silence = bytes(silence) * (sample_width // len(silence))  # one whole silence sample
        self.frame_bytes = samples * sample_width
        """Size of every frame (except possibly the last when ``pad_last`` is false), in bytes."""
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to complete a frame (always fewer than ``frame_bytes``)."""
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every frame it completes (possibly none)."""
        buf = self._pending
        buf += data
        size = self.frame_bytes
        n = len(buf) // size
        if not n:
            return []
        frames = [bytes(buf[i * size : (i + 1) * size]) for i in range(n)]
        del buf[: n * size]
        return frames

    def flush(self) -> list[bytes]:
        """Return the final partial frame (padded with silence if ``pad_last``), or ``[]`` if none.

        Leaves the framer empty, ready for the next stream.
        """
        if not self._pending:
            return []
        frame = bytes(self._pending)
        self._pending.clear()
        if self.pad_last:
            need = self.frame_bytes - len(frame)
            phase = len(frame) % self.sample_width  # stay aligned to sample boundaries
            reps = (phase + need) // self.sample_width + 1
            frame += (self.silence * reps)[phase : phase + need]
        return [frame]

    def reset(self) -> None:
        """Drop pending bytes (on barge-in, so nothing stale leaks into the next utterance)."""
        self._pending.clear()

    def __repr__(self) -> str:
        return (
            f"Framer(sample_rate={self.sample_rate}, frame_ms={self.frame_ms}, "
            f"sample_width={self.sample_width}, pad_last={self.pad_last}, pending={self.pending})"
        )
