"""Audio helpers: WAV files and sample-rate conversion."""

from .resample import resample
from .wav import pcm_to_wav, read_wav, wav_to_pcm, write_wav

__all__ = ["pcm_to_wav", "read_wav", "resample", "wav_to_pcm", "write_wav"]
