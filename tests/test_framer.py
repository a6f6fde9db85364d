"""Framer: fixed frames regardless of input chunking, nothing lost or duplicated, silence padding."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmtts_plugins.audio.framer import FRAME_MS_CHOICES, Framer
from glmtts_plugins.audio.g711 import ALAW_SILENCE, ULAW_SILENCE

# (sample_rate, sample_width, silence): 16-bit PCM, μ-law and A-law bytes.
FORMATS = [
    (8000, 2, b"\x00"),
    (16000, 2, b"\x00\x00"),
    (24000, 2, b"\x00"),
    (8000, 1, ULAW_SILENCE),
    (8000, 1, ALAW_SILENCE),
]


def run(framer: Framer, data: bytes, cuts: list[int]) -> list[bytes]:
    """Push ``data`` cut at the (sorted, deduplicated) offsets ``cuts``, then flush."""
    frames: list[bytes] = []
    edges = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(edges):
        frames += framer.push(data[start:end])
    return frames + framer.flush()


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(st.binary(min_size=0, max_size=3000))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=60))
    return data, cuts


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    frame_ms=st.sampled_from(FRAME_MS_CHOICES),
    pad_last=st.booleans(),
    sc=stream_and_cuts(),
    other_cuts=st.lists(st.integers(0, 3000), max_size=60),
)
def test_random_chunkings_give_identical_frames(fmt, frame_ms, pad_last, sc, other_cuts) -> None:  # type: ignore[no-untyped-def]
    rate, width, silence = fmt
    data, cuts = sc
    framer = Framer(rate, frame_ms, sample_width=width, pad_last=pad_last, silence=silence)
    size = framer.frame_bytes
    assert size == rate * frame_ms // 1000 * width

    frames = run(framer, data, cuts)
    assert framer.pending == 0
    # The same framer, reused, with a different chunking (and the whole buffer at once) gives the same frames.
    assert run(framer, data, [c for c in other_cuts if c <= len(data)]) == frames
    assert run(framer, data, []) == frames
    # Every byte-at-a-time too (the most fragmented chunking).
    assert run(framer, data, list(range(len(data)))) == frames

    joined = b"".join(frames)
    assert joined[: len(data)] == data
    tail = len(data) % size
    if pad_last:
        assert all(len(f) == size for f in frames)
        pad = joined[len(data) :]
        assert len(pad) == (size - tail if tail else 0)
        if len(silence) == 1:
            assert pad == silence * len(pad)
        else:  # a whole-sample pattern, aligned to sample boundaries of the stream
            assert pad == (silence * size)[tail % width : tail % width + len(pad)]
    else:
        assert joined == data
        assert all(len(f) == size for f in frames[:-1])
        if frames:
            assert len(frames[-1]) == (tail or size)
    assert len(frames) == -(-len(data) // size)


def test_frame_sizes() -> None:
    assert Framer(8000).frame_bytes == 320  # 20 ms of 16-bit PCM: the AudioSocket packet
    assert Framer(8000, sample_width=1, silence=ULAW_SILENCE).frame_bytes == 160  # 20 ms of μ-law (RTP)
    assert Framer(16000, 40).frame_bytes == 1280
    assert Framer(24000, 60).frame_bytes == 2880
    assert Framer(48000, 10).frame_bytes == 960


def test_push_returns_only_whole_frames_and_keeps_the_rest() -> None:
    framer = Framer(8000, 10, sample_width=1)  # 80-byte frames
    assert framer.push(bytes(79)) == []
    assert framer.pending == 79
    frames = framer.push(bytes(range(200)))
    assert [len(f) for f in frames] == [80, 80, 80]
    assert frames[0] == bytes(79) + bytes([0]) and frames[1] == bytes(range(1, 81))
    assert framer.pending == 39
    assert framer.push(b"") == []


@pytest.mark.parametrize(
    ("silence", "width", "expected_pad"),
    [(b"\x00", 2, b"\x00"), (ULAW_SILENCE, 1, b"\xff"), (ALAW_SILENCE, 1, b"\xd5")],
)
def test_flush_pads_with_silence(silence: bytes, width: int, expected_pad: bytes) -> None:
    framer = Framer(8000, 20, sample_width=width, silence=silence)
    framer.push(b"\x01" * 10)
    (last,) = framer.flush()
    assert last == b"\x01" * 10 + expected_pad * (framer.frame_bytes - 10)
    assert framer.flush() == []  # nothing left


def test_flush_short_when_not_padding() -> None:
    framer = Framer(8000, 20, pad_last=False)
    framer.push(b"\x01\x02\x03")
    assert framer.flush() == [b"\x01\x02\x03"]


def test_flush_with_nothing_pending() -> None:
    framer = Framer(8000)
    assert framer.flush() == []
    assert framer.push(bytes(320)) == [bytes(320)]
    assert framer.flush() == []


def test_padding_completes_a_partial_sample() -> None:
    framer = Framer(8000, 10, silence=b"\x34\x12")  # a two-byte silence sample, 160-byte frames
    framer.push(b"\xaa\xbb\xcc")  # one and a half samples
    (last,) = framer.flush()
    assert last[:4] == b"\xaa\xbb\xcc\x12"  # the half sample is completed with the second silence byte
    assert last[4:] == b"\x34\x12" * 78


def test_reset_drops_pending() -> None:
    framer = Framer(8000, 10, sample_width=1)
    framer.push(bytes(50))
    framer.reset()
    assert framer.pending == 0
    assert framer.flush() == []
    assert framer.push(b"\x07" * 80) == [b"\x07" * 80]


@pytest.mark.parametrize("frame_ms", [0, 5, 15, 30, 50, 100, -20])
def test_bad_frame_ms_is_rejected(frame_ms: int) -> None:
    with pytest.raises(ValueError, match=r"frame_ms must be one of 10, 20, 40, 60") as info:
        Framer(8000, frame_ms)
    assert str(frame_ms) in str(info.value)


def test_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        Framer(22050, 10)  # 220.5 samples
    assert Framer(22050, 20).frame_bytes == 882
    with pytest.raises(ValueError, match="sample_rate"):
        Framer(0)
    with pytest.raises(ValueError, match="sample_width"):
        Framer(8000, sample_width=0)
    with pytest.raises(ValueError, match="silence"):
        Framer(8000, silence=b"\x00\x00\x00")
