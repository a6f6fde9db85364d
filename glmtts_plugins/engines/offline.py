"""An embedded, CPU-only speech engine built on espeak-ng: a stand-in for GLM-TTS, not GLM-TTS.

It exists so that development, demos and CI get real, streamed speech with no network, no API key
and no system packages: the espeak-ng library and its data come from the ``espeakng-loader`` wheel
and are driven through :mod:`ctypes`. The voice is robotic; only the interface matches GLM-TTS.

espeak-ng keeps global, non-thread-safe state and reports samples through one global callback, so
every espeak call runs on a single dedicated worker thread and jobs (one per ``stream()``) take
turns on it. Synthesis runs hundreds of times faster than real time, so a turn is short.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import unicodedata
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.stream_resampler import StreamResampler
from ..errors import GLMTTSError, InvalidRequestError
from ..voices import DEFAULT_VOICE, VOICES
from .base import SAMPLE_RATE, BaseEngine

__all__ = ["OfflineEngine", "split_by_script"]

logger = logging.getLogger(__name__)

# espeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_BUFLENGTH_MS = 50
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK = 0
_RATE_NORMAL, _RATE_MIN, _RATE_MAX = 175, 80, 450
_RAND_SEED = 1

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True, slots=True)
class _Style:
    """How one voice id sounds: an espeak variant plus pitch (0-100), range (0-100) and a rate offset."""

    variant: str
    pitch: int
    range: int
    rate_offset: int


# Only variants whose output does not depend on what was synthesized before (no pitch flutter or
# roughness, or the Klatt 6 generator): each request is then reproducible byte for byte, whatever
# ran before it. Variants with flutter (f1-f5, m1-m8, ...) carry hidden state from job to job.
_STYLES: dict[str, _Style] = {
    "tongtong": _Style("shelby", pitch=66, range=60, rate_offset=0),  # default female
    "xiaochen": _Style("Henrique", pitch=42, range=50, rate_offset=-5),  # male
    "chuichui": _Style("klatt6", pitch=92, range=95, rate_offset=30),  # lively, high and quick
    "jam": _Style("benjamin", pitch=58, range=75, rate_offset=10),
    "kazi": _Style("edward2", pitch=78, range=35, rate_offset=-10),
    "douji": _Style("Denis", pitch=28, range=55, rate_offset=-20),  # deep and slow
    "luodo": _Style("mike2", pitch=55, range=85, rate_offset=15),
}

_HAN_VOICE = "cmn"
_LATIN_VOICE = "en-us"


# ---------------------------------------------------------------------------------------------
# Text: split into Han and Latin runs
# ---------------------------------------------------------------------------------------------

_HAN_RANGES = (
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation (。、「」〇 ...)
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0x20000, 0x323AF),  # extensions B-H
)


def _script(ch: str) -> str | None:
    """``"han"``, ``"latin"`` (any other letter), or ``None`` for digits, punctuation and space."""
    cp = ord(ch)
    for lo, hi in _HAN_RANGES:
        if lo <= cp <= hi:
            return "han"
    if ch.isalpha():
        return "latin"
    return None


def split_by_script(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(script, run)`` pairs, ``script`` being ``"han"`` or ``"latin"``.

    Digits, punctuation and spaces join the run before them (or the first run when they lead),
    so "我有3个apple" reads 3 in Mandarin and "iPhone 15 很好" reads 15 in English. Text with no
    letters at all is read as Mandarin. Runs of only whitespace are dropped.
    """
    runs: list[tuple[str, str]] = []
    current: str | None = None
    buf: list[str] = []
    for ch in text:
        script = _script(ch)
        if script is None or script == current:
            buf.append(ch)
        elif current is None:
            current = script
            buf.append(ch)
        else:
            runs.append((current, "".join(buf)))
            current, buf = script, [ch]
    if buf:
        runs.append((current or "han", "".join(buf)))
    return [(script, run) for script, run in runs if run.strip()]


def _clean(text: str) -> str:
    """NFKC (fullwidth Latin and digits become ASCII) and control characters become spaces."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in text)


@dataclass(frozen=True, slots=True)
class _Run:
    voice: bytes
    rate: int
    pitch: int
    range: int
    text: bytes


# ---------------------------------------------------------------------------------------------
# The worker side: one espeak-ng per process, one job at a time
# ---------------------------------------------------------------------------------------------

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glmtts-espeak")


@dataclass(frozen=True, slots=True)
class _Done:
    """End of a job's audio; ``error`` is set when the worker failed."""

    error: BaseException | None = None


class _Job:
    """One ``stream()`` call as seen by the worker: resampling, gain, chunking, and the way home.

    Created on the event loop; everything else runs on the worker thread. Items reach the consumer
    through ``loop.call_soon_threadsafe`` into its asyncio queue: lists of chunks, then one ``_Done``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[list[bytes] | _Done],
        *,
        gain: float,
        chunk_bytes: int,
    ) -> None:
        self.abort = threading.Event()
        self._loop = loop
        self._queue = queue
        self._gain = gain
        self._chunk_bytes = chunk_bytes
        self._pending = bytearray()
        self._resampler: StreamResampler | None = None

    def start_run(self, in_rate: int) -> None:
        self._resampler = StreamResampler(in_rate, SAMPLE_RATE)

    def feed(self, samples: np.ndarray) -> None:
        assert self._resampler is not None
        self._push(np.frombuffer(self._resampler.process(samples.astype("<i2", copy=False).tobytes()), "<i2"))

    def end_run(self) -> None:
        """Flush the resampler so the run's last few milliseconds are not lost."""
        if self._resampler is not None:
            self._push(np.frombuffer(self._resampler.flush(), "<i2"))
            self._resampler = None

    def finish(self, error: BaseException | None = None) -> None:
        if error is None and self._pending:
            self._post([bytes(self._pending)])
        self._pending.clear()
        self._post(_Done(error))

    def _push(self, out: np.ndarray) -> None:
        if out.size == 0:
            return
        if self._gain != 1.0:
            out = np.clip(out.astype(np.float32) * self._gain, -32768, 32767).astype(np.int16)
        self._pending += out.astype("<i2", copy=False).tobytes()
        size = self._chunk_bytes
        whole = len(self._pending) - len(self._pending) % size
        if whole:
            chunks = [bytes(self._pending[i : i + size]) for i in range(0, whole, size)]
            del self._pending[:whole]
            self._post(chunks)

    def _post(self, item: list[bytes] | _Done) -> None:
        if self.abort.is_set():
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self.abort.set()


class _Espeak:
    """The process-wide espeak-ng library. Every method must run on the worker thread."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._rate = 0
        self._job: _Job | None = None
        self._callback = _SynthCallback(self._on_samples)  # kept alive for as long as espeak may call it

    def ensure(self) -> None:
        """Load and initialize espeak-ng once per process."""
        if self._lib is not None:
            return
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.POINTER(ctypes.c_uint),  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None

        data_parent = str(Path(espeakng_loader.get_data_path()).parent)
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFLENGTH_MS, data_parent.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise GLMTTSError(f"espeak-ng failed to initialize (data under {data_parent})")
        lib.espeak_SetSynthCallback(self._callback)
        for name in (_HAN_VOICE, _LATIN_VOICE):
            if lib.espeak_SetVoiceByName(name.encode()) != _EE_OK:
                raise GLMTTSError(f"espeak-ng cannot load voice {name!r} from its data under {data_parent}")
        self._lib, self._rate = lib, rate
        logger.debug("espeak-ng initialized at %d Hz from %s", rate, data_parent)

    def run(self, job: _Job, runs: list[_Run]) -> None:
        """Synthesize ``runs`` in order into ``job``; always ends the job with ``_Done``."""
        try:
            self.ensure()
            assert self._lib is not None
            for run in runs:
                if job.abort.is_set():
                    break
                self._speak(job, run)
        except Exception as exc:
            job.finish(exc)
        else:
            job.finish()

    def _speak(self, job: _Job, run: _Run) -> None:
        lib = self._lib
        assert lib is not None
        if lib.espeak_SetVoiceByName(run.voice) != _EE_OK:
            raise GLMTTSError(f"espeak-ng cannot load voice {run.voice.decode()!r}")
        lib.espeak_SetParameter(_PARAM_RATE, run.rate, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, run.pitch, 0)
        lib.espeak_SetParameter(_PARAM_RANGE, run.range, 0)
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed(_RAND_SEED)  # breath noise: same text, same samples
        job.start_run(self._rate)
        self._job = job
        try:
            status = lib.espeak_Synth(
                run.text, len(run.text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
        finally:
            self._job = None
        if status != _EE_OK and not job.abort.is_set():
            raise GLMTTSError(f"espeak-ng synthesis failed (error {status})")
        job.end_run()

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, events: int | None) -> int:
        """espeak's synth callback: route samples to the current job; return 1 to stop synthesis."""
        job = self._job
        if job is None or job.abort.is_set():
            return 1
        if numsamples > 0 and wav:
            try:
                job.feed(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            except Exception:  # an exception cannot cross the C callback: log it and stop this job
                logger.exception("offline engine: failed to process espeak-ng samples")
                job.abort.set()
                return 1
        return 0


_ESPEAK = _Espeak()


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class OfflineEngine(BaseEngine):
    """Speech from espeak-ng on the CPU: a stand-in for GLM-TTS for development, demos and CI.

    This is **not** GLM-TTS and does not sound like it; it only speaks the same interface. Mandarin
    (Han script) is read by espeak's ``cmn`` voice and Latin-script text by ``en-us``, in order.
    The seven GLM-TTS voice ids map to distinct espeak variants, pitches and rates. Output is 24 kHz
    16-bit mono PCM streamed in ``chunk_ms`` chunks as espeak produces it; the same request always
    gives the same bytes.

    espeak-ng is loaded lazily (first ``stream()`` or ``prewarm()``) and stays loaded for the life
    of the process; all engines share one worker thread, so concurrent streams take turns.
    """

    sample_rate: int = SAMPLE_RATE
    provider = "offline"
    model = "espeak-ng"

    def __init__(self, *, chunk_ms: int = 20) -> None:
        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, int) or not 1 <= chunk_ms <= 1000:
            raise InvalidRequestError(
                f"chunk_ms must be an integer in [1, 1000], got {chunk_ms!r}", field="chunk_ms"
            )
        self.chunk_ms = chunk_ms
        self._chunk_bytes = max(1, SAMPLE_RATE * chunk_ms // 1000) * 2

    def __repr__(self) -> str:
        return f"OfflineEngine(espeak-ng stand-in, chunk_ms={self.chunk_ms})"

    async def _stream(
        self, text: str, *, voice: str, speed: float, volume: float, timeout: float | None
    ) -> AsyncIterator[bytes]:
        """Yield PCM chunks (even lengths, ``chunk_ms`` each but the last) as espeak produces them.

        Closing the generator or cancelling the consuming task stops espeak at its next buffer.
        """
        runs = _plan(text, voice=voice, speed=speed)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[bytes] | _Done] = asyncio.Queue()
        job = _Job(loop, queue, gain=float(volume), chunk_bytes=self._chunk_bytes)
        worker = loop.run_in_executor(_EXECUTOR, _ESPEAK.run, job, runs)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise item.error
                    break
                for chunk in item:
                    yield chunk
        finally:
            # Normal end, error, aclose() or cancellation: make espeak stop (its callback returns 1)
            # and drop the job if it is still waiting for the worker. Nothing here awaits.
            job.abort.set()
            worker.cancel()

    async def prewarm(self) -> None:
        """Load and initialize espeak-ng now (on its worker), so the first request does not pay for it."""
        await asyncio.get_running_loop().run_in_executor(_EXECUTOR, _ESPEAK.ensure)

    async def aclose(self) -> None:
        """Nothing to release: the espeak-ng library stays loaded for the process."""


def _plan(text: str, *, voice: str, speed: float) -> list[_Run]:
    """Turn a validated request into espeak runs, or reject an unknown voice."""
    if voice not in VOICES:
        allowed = ", ".join(VOICES)
        raise InvalidRequestError(f"unknown voice {voice!r}; allowed voices: {allowed}", field="voice")
    style = _STYLES.get(voice, _STYLES[DEFAULT_VOICE])  # a voice id added later still speaks
    rate = round((_RATE_NORMAL + style.rate_offset) * speed)
    rate = min(max(rate, _RATE_MIN), _RATE_MAX)
    runs = []
    for script, run in split_by_script(_clean(text)):
        language = _HAN_VOICE if script == "han" else _LATIN_VOICE
        name = f"{language}+{style.variant}".encode()
        runs.append(_Run(name, rate, style.pitch, style.range, run.encode("utf-8")))
    return runs
