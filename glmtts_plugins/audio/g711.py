"""G.711 μ-law and A-law codecs for 16-bit signed little-endian mono PCM.

Telephony transports (Twilio, Telnyx, RTP PCMU/PCMA) carry one G.711 byte per sample. ``audioop``
left the standard library in Python 3.13, so this module reimplements the classic reference (the
Sun/CCITT ``g711.c`` segment algorithm that ``audioop`` also uses) bit-exactly, with numpy lookup
tables built once at import, vectorized: encoding indexes a 65 536-entry table by the raw 16-bit sample;
decoding uses a 256-entry table by code byte, expanded to a 65 536-entry table of sample pairs indexed by
two code bytes at once, which halves the lookups and brings decoding close to ``audioop``'s C loop
(``python -m bench.g711``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALAW_SILENCE", "ULAW_SILENCE", "alaw2lin", "lin2alaw", "lin2ulaw", "ulaw2lin"]

ULAW_SILENCE = b"\xff"
"""The μ-law code for a zero sample (use it to pad μ-law frames)."""
ALAW_SILENCE = b"\xd5"
"""The A-law code for a zero sample (use it to pad A-law frames)."""

# Upper ends of the eight segments, in the reference's reduced-precision domains:
# μ-law works on 14-bit magnitudes plus a bias of 0x21, A-law on 13-bit magnitudes.
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84  # bias in the 16-bit domain; 0x84 >> 2 == 0x21 in the 14-bit domain

_PCM = np.dtype("<i2")


def _all_samples() -> np.ndarray:
    """Every 16-bit sample value, ordered by its unsigned bit pattern (the table index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encoder() -> np.ndarray:
    v = _all_samples() >> 2  # 14-bit two's complement, arithmetic shift as in the reference
    negative = v < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.where(negative, -v, v) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")  # first segment whose end is >= mag
    quant = (mag >> np.minimum(seg + 1, 8)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | quant)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encoder() -> np.ndarray:
    v = _all_samples() >> 3  # 13-bit two's complement
    negative = v < 0
    mask = np.where(negative, 0x55, 0xD5)  # even-bit inversion; sign bit set for non-negative
    mag = np.where(negative, -v - 1, v)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    quant = (mag >> shift) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | quant)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decoder() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << exponent
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(_PCM)


def _build_alaw_decoder() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a >> 4) & 0x07
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(_PCM)


_ULAW_ENC = _build_ulaw_encoder()
_ALAW_ENC = _build_alaw_encoder()
_ULAW_DEC = _build_ulaw_decoder()
_ALAW_DEC = _build_alaw_decoder()


def _pair_table(single: np.ndarray) -> np.ndarray:
    """Decoded sample pairs, indexed by two code bytes read as one little-endian uint16."""
    idx = np.arange(65536, dtype=np.uint32)
    half = single.view(np.uint16).astype(np.uint32)
    pairs: np.ndarray = half[idx & 0xFF] | (half[idx >> 8] << 16)
    return pairs.astype("<u4")


_ULAW_DEC2 = _pair_table(_ULAW_DEC)
_ALAW_DEC2 = _pair_table(_ALAW_DEC)
for _table in (_ULAW_ENC, _ALAW_ENC, _ULAW_DEC, _ALAW_DEC, _ULAW_DEC2, _ALAW_DEC2):
    _table.flags.writeable = False
del _table


def _encode(pcm: bytes, table: np.ndarray) -> bytes:
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    # Index by the raw little-endian bit pattern: uint16 view, so negative samples map to 32768..65535.
    return table.take(np.frombuffer(pcm, dtype="<u2"), mode="clip").tobytes()  # the method: no wrapper


def _decode(data: bytes, single: np.ndarray, pairs: np.ndarray) -> bytes:
    if len(data) % 2 == 0:  # the common case, and the fastest path for small frames
        return np.take(pairs, np.frombuffer(data, dtype="<u2"), mode="clip").tobytes()
    codes = np.frombuffer(data, dtype=np.uint8)
    n = codes.size
    out = np.empty(n, dtype=_PCM)
    # Indices are in range by construction; mode="clip" lets take() write into ``out`` unbuffered.
    np.take(pairs, codes[:-1].view("<u2"), out=out[:-1].view("<u4"), mode="clip")
    out[-1] = single[codes[-1]]
    return out.tobytes()


def lin2ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit signed little-endian PCM to μ-law, one byte per sample (same as ``audioop``)."""
    return _encode(pcm, _ULAW_ENC)


def ulaw2lin(data: bytes) -> bytes:
    """Decode μ-law bytes to 16-bit signed little-endian PCM (same as ``audioop``)."""
    return _decode(data, _ULAW_DEC, _ULAW_DEC2)


def lin2alaw(pcm: bytes) -> bytes:
    """Encode 16-bit signed little-endian PCM to A-law, one byte per sample (same as ``audioop``)."""
    return _encode(pcm, _ALAW_ENC)


def alaw2lin(data: bytes) -> bytes:
    """Decode A-law bytes to 16-bit signed little-endian PCM (same as ``audioop``)."""
    return _decode(data, _ALAW_DEC, _ALAW_DEC2)
