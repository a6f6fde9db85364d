"""Opus in the core: real libopus (PyAV's wheel) round trips, and ``Synthesizer(encoding="opus")``."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("av")

from glmtts_plugins import InvalidRequestError, OfflineEngine, SpeechFrame, Synthesizer
from glmtts_plugins.audio import OpusDecoder, OpusEncoder, StreamResampler
from glmtts_plugins.testing import ToneEngine
from glmtts_plugins.text import Segmenter

from .conftest import collect_pcm, other_tasks, served

LOOKAHEAD_MS = 6.5  # libopus' encoder delay: decoded audio is late by this much


def rms(pcm: bytes | np.ndarray) -> float:
    x = np.frombuffer(pcm, "<i2") if isinstance(pcm, bytes) else pcm
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def decode_all(packets: list[bytes], rate: int) -> np.ndarray:
    dec = OpusDecoder(rate)
    return np.frombuffer(b"".join(dec.decode(p) for p in packets) + dec.flush(), "<i2")


_speech: dict[int, bytes] = {}


async def speech(rate: int) -> bytes:
    """Real speech (the offline engine's voice) at ``rate``, not a multiple of any frame size."""
    if rate not in _speech:
        async with OfflineEngine() as engine:
            pcm = await collect_pcm(engine.stream("您好，请问今天有什么可以帮您？", voice="tongtong"))
        rs = StreamResampler(engine.sample_rate, rate)
        _speech[rate] = rs.process(pcm) + rs.flush()
    return _speech[rate]


@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize("frame_ms", [20, 40, 60])
async def test_round_trip_counts_lengths_and_energy(rate: int, frame_ms: int) -> None:
    pcm = await speech(rate)
    samples = len(pcm) // 2
    utt = Synthesizer(_Fixed(pcm, rate), sample_rate=rate, encoding="opus", frame_ms=frame_ms).speak("说")
    frames = [f async for f in utt]
    per_frame = rate * frame_ms // 1000
    assert len(frames) == math.ceil(samples / per_frame)
    assert all(f.encoding == "opus" and f.duration_ms == frame_ms for f in frames)
    assert [f.start_ms for f in frames] == [i * frame_ms for i in range(len(frames))]
    decoded = decode_all([f.audio for f in frames], rate)
    assert len(decoded) == len(frames) * per_frame  # exact: the last frame was padded to a whole frame
    # energy preserved, over time: every 200 ms window of the input within 3 dB after decoding
    lag = round(LOOKAHEAD_MS * rate / 1000)
    x = np.frombuffer(pcm, "<i2")
    y = decoded[lag : lag + len(x)]
    win = rate // 5
    for i in range(0, len(x) - win, win):
        ex, ey = rms(x[i : i + win]), rms(y[i : i + win])
        if ex > 300:  # speech, not the pauses
            assert abs(20 * math.log10(ey / ex)) < 3, (i, ex, ey)
    assert rms(decoded) > 0.7 * rms(x)


async def test_encoder_state_never_crosses_utterances() -> None:
    """Each utterance gets a fresh encoder: the same text gives the same packets, bit for bit."""
    tone = ToneEngine(ms_per_char=50)
    synth = Synthesizer(tone, sample_rate=16000, encoding="opus", frame_ms=60)
    first = [f.audio async for f in synth.speak("第一句话说得很长很长。")]
    other = [f.audio async for f in synth.speak("另外一句完全不同的话。")]
    again = [f.audio async for f in synth.speak("第一句话说得很长很长。")]
    assert first == again and first != other
    enc = OpusEncoder(16000, 60)
    pcm = tone.pcm("x" * 30)[: enc.frame_bytes]
    fresh = enc.encode(pcm)
    assert enc.encode(pcm) != fresh  # the second packet depends on the first (encoder state)
    enc.reset()
    assert enc.encode(pcm) == fresh  # reset = a new stream


async def test_each_piece_ends_on_a_whole_padded_frame() -> None:
    tone = ToneEngine(ms_per_char=37)  # pieces of 37 ms per character: never a multiple of 60 ms
    each = lambda: Segmenter(first_min_chars=0, target_chars=1)  # noqa: E731  (every sentence alone)
    synth = Synthesizer(tone, sample_rate=16000, encoding="opus", frame_ms=60, segmenter=each)
    pieces = ["第一句话。", "第二句话比较长一点。"]
    frames = [f async for f in synth.speak_stream(pieces)]
    for index, text in enumerate(pieces):
        mine = [f for f in frames if f.segment_index == index]
        assert len(mine) == math.ceil(len(text) * 37 / 60)  # no frame spans two pieces
        assert {f.segment_text for f in mine} == {text}
    assert all(f.duration_ms == 60 for f in frames)


async def test_cancel_mid_utterance_closes_the_request_and_yields_nothing_more() -> None:
    async with served(faults="rtf=1") as (srv, cloud):
        utt = Synthesizer(cloud, sample_rate=16000, encoding="opus", frame_ms=60).speak(
            "这是一句很长很长的话，需要好几秒钟才能说完。"
        )
        first = await anext(aiter(utt))
        assert isinstance(first, SpeechFrame) and first.encoding == "opus"
        await utt.cancel()
        assert [f async for f in utt] == []
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
    assert other_tasks() == set()


def test_bad_settings_are_refused_naming_the_field() -> None:
    tone = ToneEngine()
    for kwargs, field in [
        ({"sample_rate": 22050}, "sample_rate"),
        ({"frame_ms": 10}, "frame_ms"),
        ({"frame_ms": None}, "frame_ms"),
    ]:
        with pytest.raises(InvalidRequestError) as err:
            Synthesizer(tone, encoding="opus", **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field
    Synthesizer(tone, encoding="opus", sample_rate=12000, frame_ms=20)  # 12 kHz is an Opus rate
    for kwargs, field in [
        ({"bitrate": 100}, "bitrate"),
        ({"complexity": 11}, "complexity"),
        ({"application": "music"}, "application"),
    ]:
        with pytest.raises(InvalidRequestError) as err:
            OpusEncoder(16000, 60, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field
    enc = OpusEncoder(16000, 20)
    with pytest.raises(ValueError, match="640 bytes"):
        enc.encode(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a valid Opus packet"):
        OpusDecoder(16000).decode(b"\xff" * 3)


class _Fixed:
    """An engine that speaks one fixed PCM buffer in uneven chunks, at ``sample_rate``."""

    def __init__(self, pcm: bytes, sample_rate: int) -> None:
        self._pcm = pcm
        self.sample_rate = sample_rate

    async def stream(self, text: str, **_: object):  # type: ignore[no-untyped-def]
        for i in range(0, len(self._pcm), 1234):
            yield self._pcm[i : i + 1234]


def test_without_pyav_the_error_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    for make in (lambda: OpusEncoder(16000, 20), lambda: OpusDecoder(16000)):
        with pytest.raises(ImportError) as err:
            make()
        assert "glmtts-plugins[opus]" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImportError, match=r"glmtts-plugins\[opus\]"):
        Synthesizer(ToneEngine(), encoding="opus", frame_ms=20)  # at construction, before any request
    Synthesizer(ToneEngine(), encoding="mulaw", sample_rate=8000)  # everything else works without it


@pytest.mark.parametrize(("rate", "frame_ms"), [(24000.0, 60), (24000, 60.0), (True, 20)])
def test_opus_refuses_non_integer_settings_naming_the_field(rate, frame_ms) -> None:
    from glmtts_plugins import InvalidRequestError
    from glmtts_plugins.audio import OpusEncoder

    with pytest.raises(InvalidRequestError):
        OpusEncoder(rate, frame_ms)
