"""Audio helpers: WAV files, streaming and whole-buffer resampling, G.711, Opus and fixed-size framing."""

from .framer import FRAME_MS_CHOICES, Framer
from .g711 import ALAW_SILENCE, ULAW_SILENCE, alaw2lin, lin2alaw, lin2ulaw, ulaw2lin
from .opus import DEFAULT_BITRATES, OPUS_FRAME_MS, OPUS_RATES, OpusDecoder, OpusEncoder
from .resample_buffer import resample_buffer
from .stream_resampler import SUPPORTED_RATES, StreamResampler
from .wav import pcm_to_wav, read_wav, wav_to_pcm, write_wav

__all__ = [
    "ALAW_SILENCE",
    "DEFAULT_BITRATES",
    "FRAME_MS_CHOICES",
    "OPUS_FRAME_MS",
    "OPUS_RATES",
    "SUPPORTED_RATES",
    "ULAW_SILENCE",
    "Framer",
    "OpusDecoder",
    "OpusEncoder",
    "StreamResampler",
    "alaw2lin",
    "lin2alaw",
    "lin2ulaw",
    "pcm_to_wav",
    "read_wav",
    "resample_buffer",
    "ulaw2lin",
    "wav_to_pcm",
    "write_wav",
]
