"""G.711 codecs: bit-exact with audioop and with a plain per-sample ITU segment-table reference.

The plain reference below is the classic Sun/CCITT ``g711.c`` algorithm written out sample by sample, so
these tests keep their meaning on Python >= 3.13, where ``audioop`` is gone.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest

from glmtts_plugins.audio.g711 import ALAW_SILENCE, ULAW_SILENCE, alaw2lin, lin2alaw, lin2ulaw, ulaw2lin

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="audioop is not available on this Python")

ALL_SAMPLES = list(range(-32768, 32768))
ALL_PCM = struct.pack(f"<{len(ALL_SAMPLES)}h", *ALL_SAMPLES)
ALL_CODES = bytes(range(256))

# --- plain per-sample reference (ITU G.711 segment tables, as in g711.c) ------------------------------

SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)  # 14-bit domain, biased
SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)  # 13-bit domain
BIAS = 0x84


def search(value: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def ref_lin2ulaw(sample: int) -> int:
    pcm = sample >> 2  # 16-bit to 14-bit
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm += BIAS >> 2
    seg = search(pcm, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def ref_lin2alaw(sample: int) -> int:
    pcm = sample >> 3  # 16-bit to 13-bit
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = search(pcm, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    quant = (pcm >> 1) if seg < 2 else (pcm >> seg)
    return ((seg << 4) | (quant & 0x0F)) ^ mask


def ref_ulaw2lin(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + BIAS) << ((u >> 4) & 0x07)
    return BIAS - t if u & 0x80 else t - BIAS


def ref_alaw2lin(code: int) -> int:
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a >> 4) & 0x07
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


# --- bit-exactness -------------------------------------------------------------------------------------


def test_ulaw_encode_matches_plain_reference_for_all_inputs() -> None:
    assert lin2ulaw(ALL_PCM) == bytes(ref_lin2ulaw(s) for s in ALL_SAMPLES)


def test_alaw_encode_matches_plain_reference_for_all_inputs() -> None:
    assert lin2alaw(ALL_PCM) == bytes(ref_lin2alaw(s) for s in ALL_SAMPLES)


def test_decoders_match_plain_reference_for_all_codes() -> None:
    assert ulaw2lin(ALL_CODES) == struct.pack("<256h", *(ref_ulaw2lin(c) for c in ALL_CODES))
    assert alaw2lin(ALL_CODES) == struct.pack("<256h", *(ref_alaw2lin(c) for c in ALL_CODES))


def test_decoders_match_plain_reference_for_every_pair_of_codes() -> None:
    # Decoding reads two codes at a time; ALL_PCM holds every pair of bytes once, at even offsets.
    for decode, ref in ((ulaw2lin, ref_ulaw2lin), (alaw2lin, ref_alaw2lin)):
        expected = struct.pack(f"<{len(ALL_PCM)}h", *(ref(c) for c in ALL_PCM))
        assert decode(ALL_PCM) == expected
        assert decode(ALL_PCM[1:]) == expected[2:]  # odd length: the last code decoded on its own
        assert decode(ALL_PCM[:1]) == expected[:2]


@needs_audioop
def test_encoders_match_audioop_for_all_inputs() -> None:
    assert lin2ulaw(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert lin2alaw(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


@needs_audioop
def test_decoders_match_audioop_for_all_codes() -> None:
    assert ulaw2lin(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw2lin(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
    assert ulaw2lin(ALL_PCM[1:]) == audioop.ulaw2lin(ALL_PCM[1:], 2)
    assert alaw2lin(ALL_PCM[1:]) == audioop.alaw2lin(ALL_PCM[1:], 2)


# --- behaviour -----------------------------------------------------------------------------------------


def test_silence_codes() -> None:
    zeros = bytes(320)
    assert lin2ulaw(zeros) == ULAW_SILENCE * 160 == b"\xff" * 160
    assert lin2alaw(zeros) == ALAW_SILENCE * 160 == b"\xd5" * 160
    assert ulaw2lin(ULAW_SILENCE) == b"\x00\x00"
    assert samples(alaw2lin(ALAW_SILENCE))[0] == 8  # A-law has no zero level: smallest positive step


def test_one_byte_per_sample_and_empty_input() -> None:
    assert len(lin2ulaw(ALL_PCM)) == len(lin2alaw(ALL_PCM)) == 65536
    assert len(ulaw2lin(ALL_CODES)) == len(alaw2lin(ALL_CODES)) == 512
    for fn in (lin2ulaw, ulaw2lin, lin2alaw, alaw2lin):
        assert fn(b"") == b""


@pytest.mark.parametrize("encode", [lin2ulaw, lin2alaw])
def test_odd_byte_count_is_rejected(encode) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\b321\b"):
        encode(bytes(321))


def test_accepts_other_buffers() -> None:
    chunk = ALL_PCM[1000:2000]
    assert lin2ulaw(bytearray(chunk)) == lin2ulaw(memoryview(ALL_PCM)[1000:2000]) == lin2ulaw(chunk)
    # An odd offset leaves the int16 view unaligned; the result must not change.
    odd = b"\x00" + chunk
    assert lin2alaw(memoryview(odd)[1:]) == lin2alaw(chunk)
    assert ulaw2lin(memoryview(odd)[1:]) == ulaw2lin(chunk) == ulaw2lin(bytearray(chunk))


def test_ulaw_round_trip_error_bounded_per_segment() -> None:
    x = samples(ALL_PCM)
    codes = np.frombuffer(lin2ulaw(ALL_PCM), dtype=np.uint8)
    y = samples(ulaw2lin(codes.tobytes()))
    seg = ((~codes) >> 4) & 0x07
    peak = 32124  # largest μ-law level; louder input clips to it
    clipped = np.abs(x) > peak
    assert np.array_equal(y[clipped], np.sign(x[clipped]) * peak)
    # Half the quantisation step of the segment (8 << seg in the 16-bit domain) plus the 2 bits dropped
    # going to 14 bits.
    bound = (4 << seg.astype(np.int32)) + 3
    assert np.all(np.abs(x - y)[~clipped] <= bound[~clipped])
    assert np.array_equal(np.sign(y), np.sign(x) * (y != 0))  # sign is kept; only tiny values decode to 0


def test_alaw_round_trip_error_bounded_per_segment() -> None:
    x = samples(ALL_PCM)
    codes = np.frombuffer(lin2alaw(ALL_PCM), dtype=np.uint8)
    y = samples(alaw2lin(codes.tobytes()))
    seg = ((codes ^ 0x55) >> 4).astype(np.int32) & 0x07
    # Half the quantisation step: 16 in segments 0 and 1, doubling in each segment after.
    bound = 8 << np.maximum(seg - 1, 0)
    assert np.all(np.abs(x - y) <= bound)
    assert np.array_equal(np.sign(y), np.where(x >= 0, 1, -1))


def test_decode_then_encode_is_identity_on_codes() -> None:
    assert lin2alaw(alaw2lin(ALL_CODES)) == ALL_CODES
    # μ-law has two zeros: 0x7F ("negative zero") re-encodes as 0xFF.
    assert lin2ulaw(ulaw2lin(ALL_CODES)) == ALL_CODES.replace(b"\x7f", b"\xff")


def test_round_trip_of_a_tone_is_close() -> None:
    t = np.arange(8000) / 8000
    tone = np.round(12000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    for enc, dec in ((lin2ulaw, ulaw2lin), (lin2alaw, alaw2lin)):
        y = samples(dec(enc(tone.tobytes())))
        noise = np.mean((y - tone.astype(np.int32)) ** 2)
        snr = 10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / noise)
        assert snr > 35  # G.711 gives roughly 38 dB on a loud tone
