"""Named voices for the open model: reference recordings and their transcripts, validated once.

vLLM-Omni's GLM-TTS has no named voices: every request clones a voice from a reference recording plus its
transcript. A :class:`VoiceRegistry` maps names to references so ``voice="agent_female"`` works as in the
cloud. Sources:

* a directory holding ``NAME.wav`` and ``NAME.txt`` (the transcript) per voice;
* a TOML or JSON file mapping names to ``{audio = "file.wav", text = "..."}`` (paths relative to the
  file) or ``{audio_url = "https://..." | "file:///...", text = "..."}`` (passed to the server as is);
* the same mapping as a Python ``dict``.

Each WAV is checked at load time: readable 16-bit PCM, mono (stereo is downmixed), 3-30 s long; it is
resampled to 24 kHz and encoded once as a ``data:audio/wav;base64,`` URI, not per request.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.resample_buffer import resample_buffer
from ..audio.wav import pcm_to_wav, wav_to_pcm
from ..errors import InvalidRequestError

__all__ = ["MAX_REFERENCE_S", "MIN_REFERENCE_S", "REFERENCE_RATE", "ReferenceVoice", "VoiceRegistry"]

MIN_REFERENCE_S = 3.0
MAX_REFERENCE_S = 30.0
REFERENCE_RATE = 24000
REFERENCE_RATES = (8000, 96000)
"""Sample rates a reference recording may have."""
MAX_FILE_BYTES = 32 * 1024 * 1024
"""A voice file (WAV, transcript, TOML/JSON) larger than this is refused (30 s of 96 kHz stereo is 11 MB)."""
_URL_PREFIXES = ("http://", "https://", "file://")


@dataclass(frozen=True, slots=True)
class ReferenceVoice:
    """One named voice: what vLLM-Omni's ``ref_audio`` and ``ref_text`` get."""

    name: str
    ref_audio: str
    """A ``data:audio/wav;base64,`` URI, or an http(s):// or file:// URL."""
    ref_text: str
    duration_s: float | None = None
    """Length of the reference recording (None for a URL, which is not fetched)."""

    def __repr__(self) -> str:
        where = "data URI" if self.ref_audio.startswith("data:") else self.ref_audio
        return f"ReferenceVoice({self.name!r}, {where}, duration_s={self.duration_s})"


class VoiceRegistry(Mapping[str, ReferenceVoice]):
    """Reference voices by name; ``VoiceRegistry.load(dir | file | mapping)``."""

    def __init__(self, voices: Mapping[str, ReferenceVoice]) -> None:
        self._voices = dict(voices)

    @classmethod
    def load(cls, source: str | Path | Mapping[str, Mapping[str, str]]) -> VoiceRegistry:
        if isinstance(source, Mapping):
            return cls._from_mapping(source, Path.cwd(), "voices")
        path = Path(source)
        if path.is_dir():
            return cls._from_directory(path)
        if path.suffix not in (".toml", ".json"):
            raise InvalidRequestError(
                f"voices: {path} must be a directory, a .toml or a .json file", field="voices"
            )
        text = _read_text(path, "voices")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise InvalidRequestError(f"voices: {path} does not parse: {reason}", field="voices") from None
        if not isinstance(data, Mapping):
            raise InvalidRequestError(f"voices: {path} must map voice names to entries", field="voices")
        return cls._from_mapping(data, path.parent, str(path))

    @classmethod
    def _from_directory(cls, folder: Path) -> VoiceRegistry:
        voices = {}
        for wav in sorted(folder.glob("*.wav")):
            transcript = wav.with_suffix(".txt")
            if not transcript.is_file():
                raise InvalidRequestError(
                    f"voice {wav.stem!r}: {transcript.name} (the transcript of {wav.name}) is missing",
                    field="voices",
                )
            voices[wav.stem] = _from_file(wav.stem, wav, _read_text(transcript, f"voice {wav.stem!r}"))
        if not voices:
            raise InvalidRequestError(f"voices: no NAME.wav files in {folder}", field="voices")
        return cls(voices)

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any], base: Path, where: str) -> VoiceRegistry:
        voices = {}
        for name, entry in data.items():
            text = entry.get("text") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
                raise InvalidRequestError(
                    f"voice {name!r} in {where}: needs a non-empty 'text' string (the transcript) and "
                    "'audio' or 'audio_url'",
                    field="voices",
                )
            for key in ("audio", "audio_url"):
                if entry.get(key) is not None and not isinstance(entry[key], str):
                    raise InvalidRequestError(
                        f"voice {name!r} in {where}: {key!r} must be a string", field="voices"
                    )
            if entry.get("audio_url"):
                url = entry["audio_url"]
                if not url.startswith(_URL_PREFIXES):
                    raise InvalidRequestError(
                        f"voice {name!r}: audio_url must start with http://, https:// or file://",
                        field="voices",
                    )
                voices[name] = ReferenceVoice(name, url, text.strip())
            elif entry.get("audio"):
                voices[name] = _from_file(name, base / entry["audio"], text)
            else:
                raise InvalidRequestError(
                    f"voice {name!r} in {where}: needs 'audio' or 'audio_url'", field="voices"
                )
        if not voices:
            raise InvalidRequestError(f"voices: {where} defines no voice", field="voices")
        return cls(voices)

    def get_voice(self, name: str) -> ReferenceVoice:
        """The voice called ``name``, or an error listing the registered ones."""
        voice = self._voices.get(name)
        if voice is None:
            known = ", ".join(sorted(self._voices))
            raise InvalidRequestError(
                f"voice {name!r} is not registered; registered voices: {known}", field="voice"
            )
        return voice

    def __getitem__(self, name: str) -> ReferenceVoice:
        return self._voices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._voices)

    def __len__(self) -> int:
        return len(self._voices)

    def __repr__(self) -> str:
        return f"VoiceRegistry({sorted(self._voices)})"


def _read_bytes(path: Path, what: str) -> bytes:
    """A regular file's bytes, at most :data:`MAX_FILE_BYTES`: a link to a device or a FIFO is refused
    before it is opened (it could be endless, or block for ever)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidRequestError(f"{what}: {path} is not a regular file", field="voices")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidRequestError(f"{what}: cannot read {path} ({exc.strerror})", field="voices") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidRequestError(f"{what}: {path} is over {MAX_FILE_BYTES} bytes", field="voices")
    return data


def _read_text(path: Path, what: str) -> str:
    try:
        return _read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"{what}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", field="voices"
        ) from None


def _from_file(name: str, path: Path, text: str) -> ReferenceVoice:
    if not text.strip():
        raise InvalidRequestError(f"voice {name!r}: the transcript is empty", field="voices")
    data = _read_bytes(path, f"voice {name!r}")
    try:
        pcm, rate, channels = wav_to_pcm(data)
    except (ValueError, EOFError) as exc:
        raise InvalidRequestError(
            f"voice {name!r}: {path} is not a readable 16-bit PCM WAV file ({exc})", field="voices"
        ) from None
    lo, hi = REFERENCE_RATES
    if not lo <= rate <= hi or channels < 1:
        raise InvalidRequestError(
            f"voice {name!r}: {path.name} is {rate} Hz with {channels} channel(s); a reference must be "
            f"{lo}-{hi} Hz with at least one channel",
            field="voices",
        )
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % (2 * channels)], "<i2")
    if channels > 1:  # downmix to mono
        samples = samples.reshape(-1, channels).mean(axis=1).round().astype("<i2")
    duration = len(samples) / rate
    if not MIN_REFERENCE_S <= duration <= MAX_REFERENCE_S:
        raise InvalidRequestError(
            f"voice {name!r}: {path.name} is {duration:.1f} s long; a reference must be "
            f"{MIN_REFERENCE_S:.0f}-{MAX_REFERENCE_S:.0f} s",
            field="voices",
        )
    mono = resample_buffer(samples.tobytes(), rate, REFERENCE_RATE)
    uri = "data:audio/wav;base64," + base64.b64encode(pcm_to_wav(mono, REFERENCE_RATE)).decode()
    return ReferenceVoice(name, uri, text.strip(), round(duration, 3))
