"""The streaming resampler: exact length, chunking-invariant, low delay, telephone-grade filtering."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmtts_plugins.audio.stream_resampler import SUPPORTED_RATES, StreamResampler

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


def _reference(pcm: bytes, in_rate: int, out_rate: int) -> np.ndarray:
    """The filter computed the plain way: output n is the prototype FIR applied to the zero-stuffed
    input at up-sampled position n*down + delay (zeros before and after the input)."""
    from glmtts_plugins.audio.stream_resampler import _design

    up, down, _, delay, taps = _design(in_rate, out_rate)
    proto = taps[:, ::-1].T.reshape(-1)  # back to the prototype's order
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    y = np.zeros(round(len(x) * out_rate / in_rate))
    for n in range(len(y)):
        pos = n * down + delay
        j = np.arange(max(0, -(-(pos - len(proto) + 1) // up)), min(len(x) - 1, pos // up) + 1)
        y[n] = np.dot(proto[pos - j * up], x[j])
    return np.clip(np.rint(y), -32768, 32767)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_output_is_the_filter_computed_the_plain_way(rate: int) -> None:
    r = StreamResampler(24000, rate)
    got = np.frombuffer(stream(r, NOISE[:9600], [960]), "<i2")
    # taps are rounded to a 2**-34 grid: at most a rounding tie may differ by one
    assert np.abs(got - _reference(NOISE[:9600], 24000, rate)).max() <= 1


def test_long_streams_and_long_chunks_equal_whole_buffer() -> None:
    long = (np.random.default_rng(5).standard_normal(24000 * 12) * 6000).astype("<i2").tobytes()
    for rate in (8000, 16000):
        r = StreamResampler(24000, rate)
        whole = r.process(long) + r.flush()  # one chunk far longer than the work buffers
        assert stream(r, long, [960]) == whole  # 12 s in 20 ms chunks: history compacted many times
        assert stream(r, long, [960, 96000, 2, 4801]) == whole
        assert len(whole) // 2 == round(len(long) // 2 * rate / 24000)


def test_full_scale_input_is_clipped_not_wrapped() -> None:
    square = np.where(np.arange(24000) % 48 < 24, 32767, -32768).astype("<i2").tobytes()
    r = StreamResampler(24000, 8000)
    out = np.frombuffer(stream(r, square, [960]), "<i2")
    assert out.max() == 32767 and out.min() == -32768  # the filter overshoots: clipped
    assert np.array_equal(out, _reference(square, 24000, 8000))


@pytest.mark.parametrize(("rate", "edge"), [(8000, 3400), (16000, 7000)])
def test_pass_band_ripple_within_a_hundredth_of_a_db(rate: int, edge: int) -> None:
    for freq in (100, 300, 1000, 2000, edge - 100, edge):
        r = StreamResampler(24000, rate)
        y = np.frombuffer(stream(r, _tone(freq), [960]), "<i2").astype(float)
        mid = np.arange(len(y) // 4, 3 * len(y) // 4)
        t = mid / rate
        basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y[mid], rcond=None)
        assert abs(20 * np.log10(np.hypot(*coef) / 10000)) < 0.01, freq
