"""Audio helpers: WAV files, streaming and whole-buffer resampling."""

from .resample import resample
from .resampler import SUPPORTED_RATES, StreamResampler
from .wav import pcm_to_wav, read_wav, wav_to_pcm, write_wav

__all__ = [
    "SUPPORTED_RATES",
    "StreamResampler",
    "pcm_to_wav",
    "read_wav",
    "resample",
    "wav_to_pcm",
    "write_wav",
]
