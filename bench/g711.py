"""G.711 throughput: glmtts_plugins.audio.g711 beside audioop, on 10 s of 8 kHz speech-like audio.

Run: ``.venv/bin/python -m bench.g711``. Prints a markdown table of MB/s, counted on the 16-bit PCM side
(input for encoding, output for decoding), best of several repeats, and the cost of one call on a single
20 ms frame (where numpy's fixed per-call overhead dominates). Also checks the outputs are identical.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from types import ModuleType

import numpy as np

from glmtts_plugins.audio import g711

audioop: ModuleType | None
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None


def test_signal(seconds: float, rate: int) -> bytes:
    """A loud, varying signal: harmonics under a syllable-rate envelope plus noise, as int16 PCM."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 900, 1300), 1))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x = 9000 * envelope * voice + 300 * rng.standard_normal(t.size)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def many(fn: Callable[[bytes], bytes], data: bytes, calls: int = 100) -> None:
    for _ in range(calls):
        fn(data)


def audioop_call(fn: Callable[[bytes, int], bytes], data: bytes) -> bytes:
    return fn(data, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    pcm = test_signal(args.seconds, args.rate)
    ulaw, alaw = g711.lin2ulaw(pcm), g711.lin2alaw(pcm)
    mb = len(pcm) / 1e6

    frame = args.rate // 50  # samples in 20 ms
    inputs = {"lin2ulaw": pcm, "ulaw2lin": ulaw, "lin2alaw": pcm, "alaw2lin": alaw}
    per_sample = {name: len(data) // len(ulaw) for name, data in inputs.items()}

    print(
        f"{args.seconds:g} s of {args.rate} Hz 16-bit mono ({mb:.2f} MB of PCM), best of {args.repeats}; "
        f"Python {platform.python_version()}, numpy {np.__version__}\n"
    )
    print(
        "| function | ours MB/s | audioop MB/s | speed-up | ours µs / 20 ms frame "
        "| audioop µs / 20 ms frame | identical |"
    )
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for name, data in inputs.items():
        small = data[: frame * per_sample[name]]
        ours_fn = getattr(g711, name)
        ours_mbs = mb / best_seconds(partial(ours_fn, data), args.repeats)
        ours_us = 1e6 * best_seconds(partial(many, ours_fn, small), args.repeats) / 100
        if audioop is None:
            print(f"| `{name}` | {ours_mbs:,.0f} | n/a | n/a | {ours_us:.1f} | n/a | n/a |")
            continue
        theirs_fn = partial(audioop_call, getattr(audioop, name))
        theirs_mbs = mb / best_seconds(partial(theirs_fn, data), args.repeats)
        theirs_us = 1e6 * best_seconds(partial(many, theirs_fn, small), args.repeats) / 100
        same = "yes" if ours_fn(data) == theirs_fn(data) else "**NO**"
        print(
            f"| `{name}` | {ours_mbs:,.0f} | {theirs_mbs:,.0f} | {ours_mbs / theirs_mbs:.1f}× "
            f"| {ours_us:.1f} | {theirs_us:.1f} | {same} |"
        )


if __name__ == "__main__":
    main()
