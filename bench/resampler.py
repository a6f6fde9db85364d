"""The streaming resampler beside soxr HQ and VHQ (and libsamplerate, if installed), at 8 and 16 kHz.

Run: ``.venv/bin/python -m bench.resampler`` (about a minute; ``--rounds 3`` for a quick look). Every
figure is measured by streaming 20 ms chunks of 16-bit PCM in and taking 16-bit PCM bytes out, as the
speech pipeline does. CPU is process time per second of audio, the median over interleaved rounds (each
resampler streams the same 10 s once per round, in turn), so machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Protocol

import numpy as np
import soxr

from glmtts_plugins.audio.stream_resampler import StreamResampler

IN_RATE = 24000
CHUNK = 480  # 20 ms at 24 kHz

try:  # libsamplerate's streaming API; not a dependency of the project
    import samplerate
except ImportError:  # pragma: no cover - optional
    samplerate = None


class Soxr:
    def __init__(self, out_rate: int, quality: str) -> None:
        self.out_rate = out_rate
        self.stream = soxr.ResampleStream(IN_RATE, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        out: np.ndarray = self.stream.resample_chunk(np.frombuffer(pcm, "<i2"))
        return out.tobytes()

    def flush(self) -> bytes:
        out: np.ndarray = self.stream.resample_chunk(np.zeros(0, "<i2"), last=True)
        return out.tobytes()


class LibSamplerate:
    def __init__(self, out_rate: int, converter: str) -> None:
        self.out_rate = out_rate
        self.ratio = out_rate / IN_RATE
        self.stream = samplerate.Resampler(converter, channels=1)

    def _out(self, y: np.ndarray) -> bytes:
        clipped: np.ndarray = np.clip(np.rint(y * 32768), -32768, 32767)
        return clipped.astype("<i2").tobytes()

    def process(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        return self._out(self.stream.process(x, self.ratio))

    def flush(self) -> bytes:
        return self._out(self.stream.process(np.zeros(0, np.float32), self.ratio, end_of_input=True))


NAMES = ["glmtts", "soxr HQ", "soxr VHQ"] + (
    ["libsamplerate sinc_medium", "libsamplerate sinc_fastest"] if samplerate is not None else []
)


class Resampler(Protocol):
    @property
    def out_rate(self) -> int: ...

    def process(self, pcm: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def make(name: str, out_rate: int) -> Resampler:
    if name == "glmtts":
        return StreamResampler(IN_RATE, out_rate)
    if name.startswith("soxr"):
        return Soxr(out_rate, name.split()[1])
    return LibSamplerate(out_rate, name.split()[1])


def run(r: Resampler, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Stream ``x`` in 20 ms chunks; return the output and the worst audio held back (ms)."""
    pcm = x.astype("<i2").tobytes()
    out, n_out, held = [], 0, 0.0
    for i in range(0, len(pcm), 2 * CHUNK):
        y = r.process(pcm[i : i + 2 * CHUNK])
        out.append(y)
        n_out += len(y) // 2
        held = max(held, (i // 2 + CHUNK) / IN_RATE * 1000 - n_out / r.out_rate * 1000)
    out.append(r.flush())
    return np.frombuffer(b"".join(out), "<i2").astype(np.float64), held


def tone(freq: float, seconds: float = 1.0, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(IN_RATE * seconds)) / IN_RATE
    return amp * np.sin(2 * np.pi * freq * t)


def gain_db(y: np.ndarray, freq: float, rate: int, amp: float) -> float:
    """Amplitude of ``freq`` in the middle of ``y`` (least squares), relative to ``amp``."""
    mid = y[len(y) // 4 : 3 * len(y) // 4]
    t = (np.arange(len(mid)) + len(y) // 4) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, mid, rcond=None)
    gain: float = 20 * np.log10(max(np.hypot(*coef), 1e-9) / amp)
    return gain


def quality(name: str, out_rate: int) -> dict[str, str]:
    edge = 3400 if out_rate == 8000 else 7000
    _, held = run(make(name, out_rate), tone(1000))
    ripple = max(
        abs(gain_db(run(make(name, out_rate), tone(f))[0], f, out_rate, 10000))
        for f in range(100, edge + 1, 100)
    )
    nyq = out_rate // 2
    worst_alias = -200.0
    for f in range(nyq + 100, IN_RATE // 2, 100):
        y, _ = run(make(name, out_rate), tone(f))
        mid = y[len(y) // 4 : 3 * len(y) // 4]
        worst_alias = max(
            worst_alias, 20 * np.log10(max(np.sqrt(np.mean(mid**2)), 1e-9) / (10000 / np.sqrt(2)))
        )
    y, _ = run(make(name, out_rate), tone(1000, amp=16000))
    t = np.arange(len(y)) / out_rate
    ideal = 16000 * np.sin(2 * np.pi * 1000 * t)
    sl = slice(len(y) // 4, 3 * len(y) // 4)
    snr = 10 * np.log10(np.sum(ideal[sl] ** 2) / np.sum((y[sl] - ideal[sl]) ** 2))
    speech_like = (np.random.default_rng(0).standard_normal(IN_RATE * 2) * 3000).astype("<i2")
    total = round(len(speech_like) * out_rate / IN_RATE)
    return {
        "held back": f"{held:.1f} ms",
        f"ripple 0-{edge} Hz": f"±{ripple:.3f} dB",
        f"alias {nyq + 100}-11900 Hz": f"{worst_alias:.0f} dB",
        "SNR 1 kHz": f"{snr:.0f} dB",
        "length exact": "yes" if len(run(make(name, out_rate), speech_like)[0]) == total else "no",
    }


def cpu(out_rate: int, rounds: int, seconds: float = 10.0) -> dict[str, float]:
    """Median CPU ms per second of audio for each resampler, over interleaved rounds."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(IN_RATE * seconds)) * 3000).astype("<i2").tobytes()
    chunks = [pcm[i : i + 2 * CHUNK] for i in range(0, len(pcm), 2 * CHUNK)]
    samples: dict[str, list[float]] = {name: [] for name in NAMES}
    for _ in range(rounds):
        for name in NAMES:
            r = make(name, out_rate)
            t0 = time.process_time()
            for chunk in chunks:
                r.process(chunk)
            r.flush()
            samples[name].append((time.process_time() - t0) * 1000 / seconds)
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15, help="interleaved CPU rounds of 10 s each")
    args = parser.parse_args()
    for out_rate in (8000, 16000):
        ms = cpu(out_rate, args.rounds)
        rows = {name: quality(name, out_rate) for name in NAMES}
        cols = [*next(iter(rows.values())), "CPU per s of audio", "vs soxr HQ"]
        print(f"\n24 kHz → {out_rate} Hz, streamed in 20 ms chunks (CPU: median of {args.rounds} rounds)\n")
        print("| resampler | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for name, row in rows.items():
            ratio = ms[name] / ms["soxr HQ"]
            cells = [*row.values(), f"{ms[name]:.3f} ms", f"{ratio:.2f}×"]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
