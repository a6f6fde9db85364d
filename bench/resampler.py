"""Issue 3 benchmark 1: the streaming resampler beside soxr HQ and VHQ, at 8 and 16 kHz.

Run: ``.venv/bin/python -m bench.resampler``. Every figure is measured by streaming 20 ms chunks.
"""

from __future__ import annotations

import time

import numpy as np
import soxr

from glmtts_plugins.audio.resampler import StreamResampler

IN_RATE = 24000
CHUNK = 480  # 20 ms at 24 kHz


class Soxr:
    def __init__(self, out_rate: int, quality: str) -> None:
        self.out_rate = out_rate
        self.stream = soxr.ResampleStream(IN_RATE, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        return self.stream.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes()

    def flush(self) -> bytes:
        return self.stream.resample_chunk(np.zeros(0, "<i2"), last=True).tobytes()


def make(name: str, out_rate: int):  # type: ignore[no-untyped-def]
    return StreamResampler(IN_RATE, out_rate) if name == "glmtts" else Soxr(out_rate, name.split()[1])


def run(r, x: np.ndarray) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
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
    return 20 * np.log10(max(np.hypot(*coef), 1e-9) / amp)


def measure(name: str, out_rate: int) -> dict[str, str]:
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
    speech_like = (np.random.default_rng(0).standard_normal(IN_RATE * 30) * 3000).astype("<i2").tobytes()
    r = make(name, out_rate)
    t0 = time.process_time()
    for i in range(0, len(speech_like), 2 * CHUNK):
        r.process(speech_like[i : i + 2 * CHUNK])
    r.flush()
    cpu = time.process_time() - t0
    return {
        "held back": f"{held:.1f} ms",
        f"ripple 0-{edge} Hz": f"±{ripple:.3f} dB",
        f"alias {nyq + 100}-11900 Hz": f"{worst_alias:.0f} dB",
        "SNR 1 kHz": f"{snr:.0f} dB",
        "CPU": f"{30 / cpu:.0f}× real time",
    }


def main() -> None:
    for out_rate in (8000, 16000):
        rows = {name: measure(name, out_rate) for name in ("glmtts", "soxr HQ", "soxr VHQ")}
        cols = list(next(iter(rows.values())))
        print(f"\n24 kHz → {out_rate} Hz, streamed in 20 ms chunks\n")
        print("| resampler | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for name, row in rows.items():
            print(f"| {name} | " + " | ".join(row.values()) + " |")


if __name__ == "__main__":
    main()
