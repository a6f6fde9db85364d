"""The SSE decoder survives every split, line end and oddity the cloud reference warns about."""

from __future__ import annotations

import random

import pytest

from glmtts_plugins.engines.sse import SSEDecoder

EVENTS = [b'{"a": 1}', b'{"b": "x y"}', b"[DONE]"]


def encode(events: list[bytes], eol: bytes, *, comments: bool = False, trailing: bool = True) -> bytes:
    out = b""
    for i, e in enumerate(events):
        if comments:
            out += b": keep-alive" + eol + b"event: message" + eol + b"id: 7" + eol
        out += b"data: " + e + eol
        if i < len(events) - 1 or trailing:
            out += eol
    return out


def decode(stream: bytes, cuts: list[int]) -> list[bytes]:
    dec = SSEDecoder()
    got: list[bytes] = []
    prev = 0
    for cut in [*sorted(cuts), len(stream)]:
        got += dec.feed(stream[prev:cut])
        prev = cut
    return got + dec.close()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("comments", [False, True])
@pytest.mark.parametrize("trailing", [False, True])
def test_every_single_split_point(eol: bytes, comments: bool, trailing: bool) -> None:
    stream = encode(EVENTS, eol, comments=comments, trailing=trailing)
    for cut in range(len(stream) + 1):
        assert decode(stream, [cut]) == EVENTS, (eol, cut)


def test_random_splits_byte_by_byte_and_in_pieces() -> None:
    rng = random.Random(7)
    for _ in range(300):
        eol = rng.choice([b"\n", b"\r\n", b"\r"])
        stream = encode(EVENTS, eol, comments=rng.random() < 0.5, trailing=rng.random() < 0.5)
        cuts = rng.sample(range(len(stream) + 1), k=rng.randint(0, len(stream)))
        assert decode(stream, cuts) == EVENTS


def test_multiline_data_and_no_space_after_colon() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data:one\ndata: two\n\n") == [b"one\ntwo"]


def test_line_over_one_megabyte_in_small_reads() -> None:
    payload = b'{"c": "' + b"A" * 1_500_000 + b'"}'
    stream = b"data: " + payload + b"\n\ndata: {}\n\n"
    dec = SSEDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 1000):
        got += dec.feed(stream[i : i + 1000])
    assert got + dec.close() == [payload, b"{}"]


def test_mixed_line_ends_with_cr_inside_a_read() -> None:
    dec = SSEDecoder()
    got = dec.feed(b"data: a\r\rdata: b") + dec.feed(b"\ndata: c\n\n") + dec.close()
    assert got == [b"a", b"b\nc"]


def test_empty_read_between_cr_and_lf() -> None:
    dec = SSEDecoder()
    got = dec.feed(b"data: a\r") + dec.feed(b"") + dec.feed(b"\ndata: b\n\n") + dec.close()
    assert got == [b"a\nb"]
