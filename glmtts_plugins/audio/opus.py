"""Opus for devices: one packet per fixed frame of 16-bit mono PCM, and a decoder for what devices send.

Smart-speaker firmware (xiaozhi-esp32 and most ESP32 voice stacks) takes Opus packets of 20, 40 or 60 ms.
The codec is libopus as bundled in PyAV's wheels (no system library; install the ``opus`` extra).

Defaults are voice-tuned: the VoIP application (speech-optimised SILK/hybrid modes), variable bitrate,
complexity 10 and :data:`DEFAULT_BITRATES` (24 kbps at 16 kHz, 32 kbps at 24 kHz). Measured on 13 s of
16 kHz speech in 60 ms frames: the log-spectral distance to the input falls steadily with the bitrate
(10.0 dB at 12 kbps, 9.0 at 16, 8.3 at 20, 7.7 at 24, 6.9 at 32) with no knee, so 24 kbps is the usual
wideband-speech point (and what xiaozhi-esp32-server sends): 3 kB/s, well inside any Wi-Fi link.
Complexity 10 costs about 1.2 % of one core per second of audio (5: 0.8 %) for 0.3 dB less distortion.

An encoder keeps state between packets (prediction, the 6.5 ms look-ahead), so use one per stream and
:meth:`OpusEncoder.reset` (or a new one) between streams: state never carries from one reply into the
next. A decoder is fed the packets of one stream in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from .stream_resampler import StreamResampler

__all__ = ["DEFAULT_BITRATES", "OPUS_FRAME_MS", "OPUS_RATES", "OpusDecoder", "OpusEncoder"]

OPUS_RATES: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)
"""Sample rates Opus encodes and decodes natively."""
OPUS_FRAME_MS: tuple[int, ...] = (10, 20, 40, 60)
"""Frame durations offered here (Opus also has 2.5, 5 and 80-120 ms, which devices do not use)."""
DEFAULT_BITRATES: dict[int, int] = {8000: 16000, 12000: 20000, 16000: 24000, 24000: 32000, 48000: 48000}
"""Bits per second by sample rate when ``bitrate`` is not given."""
_APPLICATIONS = ("voip", "audio", "lowdelay")
_DECODER_RATE = 48000  # FFmpeg's libopus decoder always outputs 48 kHz


def _av() -> Any:
    try:
        import av
    except ImportError:  # one line, naming the extra
        raise ImportError("Opus needs PyAV: pip install 'glmtts-plugins[opus]' (or 'av>=14')") from None
    return av


def _check_rate(sample_rate: object) -> int:
    if type(sample_rate) is not int or sample_rate not in OPUS_RATES:
        allowed = ", ".join(map(str, OPUS_RATES))
        raise InvalidRequestError(
            f"sample_rate for Opus must be one of {allowed}; got {sample_rate!r}", field="sample_rate"
        )
    return sample_rate


class OpusEncoder:
    """Encode exactly one frame of 16-bit mono PCM at a time into one Opus packet.

    ``bitrate`` defaults to :data:`DEFAULT_BITRATES` for the rate; ``application`` is ``"voip"``
    (speech), ``"audio"`` or ``"lowdelay"``; ``complexity`` is 0-10.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        *,
        bitrate: int | None = None,
        complexity: int = 10,
        application: str = "voip",
    ) -> None:
        self._av = _av()
        self.sample_rate = _check_rate(sample_rate)
        if type(frame_ms) is not int or frame_ms not in OPUS_FRAME_MS:
            allowed = ", ".join(map(str, OPUS_FRAME_MS))
            raise InvalidRequestError(
                f"frame_ms for Opus must be one of {allowed}; got {frame_ms!r}", field="frame_ms"
            )
        if bitrate is None:
            bitrate = DEFAULT_BITRATES[sample_rate]
        if not isinstance(bitrate, int) or isinstance(bitrate, bool) or not 6000 <= bitrate <= 510000:
            raise InvalidRequestError(
                f"bitrate must be an integer from 6000 to 510000 bits/s; got {bitrate!r}", field="bitrate"
            )
        if not isinstance(complexity, int) or isinstance(complexity, bool) or not 0 <= complexity <= 10:
            raise InvalidRequestError(
                f"complexity must be an integer from 0 to 10; got {complexity!r}", field="complexity"
            )
        if application not in _APPLICATIONS:
            raise InvalidRequestError(
                f"application must be one of {', '.join(_APPLICATIONS)}; got {application!r}",
                field="application",
            )
        self.frame_ms = frame_ms
        self.bitrate = bitrate
        self.complexity = complexity
        self.application = application
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_bytes = 2 * self.frame_samples
        """Size of the PCM frame :meth:`encode` takes, in bytes."""
        self._ctx: Any = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream: a fresh encoder, nothing carried over from the previous one."""
        ctx = self._av.CodecContext.create("libopus", "w")
        ctx.sample_rate = self.sample_rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = self.bitrate
        ctx.options = {
            "application": self.application,
            "frame_duration": str(self.frame_ms),
            "vbr": "on",
            "compression_level": str(self.complexity),
        }
        ctx.open()
        self._ctx = ctx
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        """One frame of PCM (exactly :attr:`frame_bytes`) in, one Opus packet out."""
        if len(pcm) != self.frame_bytes:
            raise ValueError(
                f"Opus frames are {self.frame_bytes} bytes ({self.frame_ms} ms at {self.sample_rate} Hz);"
                f" got {len(pcm)}: pad the last frame with silence"
            )
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        packets = self._ctx.encode(frame)
        if len(packets) != 1:  # libopus codes each whole frame at once; anything else is a bug
            raise RuntimeError(f"libopus returned {len(packets)} packets for one frame")
        return bytes(packets[0])

    def __repr__(self) -> str:
        return (
            f"OpusEncoder(sample_rate={self.sample_rate}, frame_ms={self.frame_ms}, bitrate={self.bitrate}, "
            f"complexity={self.complexity}, application={self.application!r})"
        )


class OpusDecoder:
    """Decode a stream of Opus packets to 16-bit mono PCM at ``sample_rate``.

    :meth:`decode` returns the PCM each packet completes (a couple of milliseconds are held back by the
    resampler from libopus' 48 kHz, unless ``sample_rate`` is 48000); :meth:`flush` returns the rest, so
    a stream of N packets of F samples decodes to exactly N x F samples.
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self._av = _av()
        self.sample_rate = _check_rate(sample_rate)
        self._resampler = StreamResampler(_DECODER_RATE, sample_rate)
        self._ctx: Any = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        ctx = self._av.CodecContext.create("libopus", "r")
        ctx.sample_rate = _DECODER_RATE
        ctx.layout = "mono"
        self._ctx = ctx
        self._resampler.reset()

    def decode(self, packet: bytes) -> bytes:
        """Decode one packet; raises ``ValueError`` for data that is not an Opus packet."""
        if not packet:
            raise ValueError("empty Opus packet")
        try:
            frames = self._ctx.decode(self._av.Packet(bytes(packet)))
        except self._av.error.FFmpegError as exc:
            raise ValueError(f"not a valid Opus packet ({len(packet)} bytes): {exc}") from None
        pcm = b"".join(self._to_s16(f) for f in frames)
        return self._resampler.process(pcm)

    def flush(self) -> bytes:
        """The PCM still held by the resampler (end of the stream)."""
        return self._resampler.flush()

    @staticmethod
    def _to_s16(frame: Any) -> bytes:
        data: np.ndarray = frame.to_ndarray()
        if data.dtype != np.int16:  # float planar from some builds
            data = np.clip(np.rint(data * 32768.0), -32768, 32767).astype(np.int16)
        return data.reshape(-1).astype("<i2").tobytes()

    def __repr__(self) -> str:
        return f"OpusDecoder(sample_rate={self.sample_rate})"
