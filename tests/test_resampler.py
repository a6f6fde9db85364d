"""The streaming resampler: exact length, chunking-invariant, low delay, telephone-grade filtering."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmtts_plugins.audio.resampler import SUPPORTED_RATES, StreamResampler

RNG = np.random.default_rng(11)
NOISE = (RNG.standard_normal(24000) * 4000).astype("<i2").tobytes()  # 1 s


def stream(r: StreamResampler, pcm: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        out.append(r.process(pcm[i : i + n]))
        i, k = i + n, k + 1
    return b"".join(out) + r.flush()


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_total_length_is_exact_and_chunking_does_not_matter(rate: int) -> None:
    r = StreamResampler(24000, rate)
    whole = r.process(NOISE) + r.flush()
    assert len(whole) // 2 == round(len(NOISE) // 2 * rate / 24000)
    rng = random.Random(rate)
    sizes = [rng.choice([1, 2, 3, 7, 160, 479, 480, 961, 4800]) for _ in range(50)]
    assert stream(r, NOISE, sizes) == whole  # bit-identical, odd byte counts included


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 22050, 48000]),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=30),
    n=st.integers(0, 6000),
)
def test_property_chunked_equals_whole(rate: int, sizes: list[int], n: int) -> None:
    pcm = NOISE[: 2 * n]
    r = StreamResampler(24000, rate)
    whole = r.process(pcm) + r.flush()
    assert stream(r, pcm, sizes) == whole
    assert len(whole) // 2 == round(n * rate / 24000)


def test_equal_rates_pass_through_untouched() -> None:
    r = StreamResampler(24000, 24000)
    assert r.process(NOISE[:1001]) + r.process(NOISE[1001:]) + r.flush() == NOISE


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_RATES if r != 24000])
def test_held_back_audio_is_at_most_5_ms(rate: int) -> None:
    r = StreamResampler(24000, rate)
    produced = 0
    for i in range(0, len(NOISE), 960):
        produced += len(r.process(NOISE[i : i + 960])) // 2
        fed_ms = (i + 960) / 2 / 24000 * 1000
        assert fed_ms - produced / rate * 1000 <= 5.0
    assert r.delay_ms <= 5.0


def test_tail_comes_out_on_flush_and_reset_drops_state() -> None:
    r = StreamResampler(24000, 8000)
    head = r.process(NOISE[:9600])
    tail = r.flush()
    assert len(head + tail) == 2 * 1600 and len(tail) > 0
    r.process(NOISE[:9600])
    r.reset()  # an interruption: nothing of the old stream may come out
    fresh = r.process(NOISE[9600:19200]) + r.flush()
    again = StreamResampler(24000, 8000)
    assert fresh == again.process(NOISE[9600:19200]) + again.flush()


def _tone(freq: float, rate: int = 24000, amp: float = 10000.0) -> bytes:
    t = np.arange(rate) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def _rms_db(pcm: bytes) -> float:
    y = np.frombuffer(pcm, "<i2").astype(float)
    mid = y[len(y) // 4 : 3 * len(y) // 4]
    return 20 * np.log10(max(np.sqrt(np.mean(mid**2)), 1e-9) / (10000 / np.sqrt(2)))


@pytest.mark.parametrize(("rate", "edge"), [(8000, 3400), (16000, 7000)])
def test_pass_band_is_flat_within_half_a_db(rate: int, edge: int) -> None:
    for freq in (300, 1000, edge // 2, edge):
        r = StreamResampler(24000, rate)
        assert abs(_rms_db(r.process(_tone(freq)) + r.flush())) < 0.5, freq


@pytest.mark.parametrize("rate", [8000, 16000])
def test_alias_rejection_at_least_70_db(rate: int) -> None:
    for freq in range(rate // 2 + 100, 12000, 700):
        r = StreamResampler(24000, rate)
        assert _rms_db(r.process(_tone(freq)) + r.flush()) < -70, freq


def test_bad_rates_are_named() -> None:
    with pytest.raises(ValueError, match="out_rate"):
        StreamResampler(24000, 0)
