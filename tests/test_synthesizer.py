"""Synthesizer and Utterance: exact audio in text order, prefetch, typed errors, and instant cancel.

Engine-level properties use ``ToneEngine`` directly (its audio is a pure function of the text, so the
expected output is computable); everything about requests, disconnects and failures goes through the
real local server on loopback with its fault injection.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from glmtts_plugins import (
    GLMTTSError,
    InvalidRequestError,
    ServerError,
    SpeechFrame,
    Synthesizer,
    Utterance,
)
from glmtts_plugins.audio import StreamResampler, alaw2lin, lin2alaw, lin2ulaw, ulaw2lin
from glmtts_plugins.engines.base import validate_request
from glmtts_plugins.testing import ToneEngine
from glmtts_plugins.text import Segmenter

from .conftest import collect_pcm, other_tasks, served

PIECES = ["您好，这里是星河银行信用卡中心。", "请问有什么可以帮您？", "Your balance is 3,268.50 yuan."]


def per_sentence() -> Segmenter:
    """A segmenter that sends every sentence on its own, so tests know the pieces in advance."""
    return Segmenter(target_chars=1)


async def collect(utt: Utterance) -> list[SpeechFrame]:
    return [frame async for frame in utt]


def by_segment(frames: list[SpeechFrame]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for frame in frames:
        out[frame.segment_index] = out.get(frame.segment_index, b"") + frame.audio
    return out


async def tokens(text: str, size: int = 3, delay: float = 0.0) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        if delay:
            await asyncio.sleep(delay)
        yield text[i : i + size]


# -- audio format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 32000, 44100, 48000])
@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
async def test_pcm_frames_exact_per_piece_at_every_rate(rate: int, frame_ms: int) -> None:
    tone = ToneEngine(chunk_bytes=962)  # odd-sized chunks in samples: not aligned with frames
    if rate * frame_ms % 1000:
        with pytest.raises(InvalidRequestError, match="frame_ms"):
            Synthesizer(tone, sample_rate=rate, frame_ms=frame_ms)
        return
    synth = Synthesizer(tone, sample_rate=rate, frame_ms=frame_ms, segmenter=per_sentence)
    frames = await collect(synth.speak_stream(PIECES))
    segments = by_segment(frames)
    assert sorted(segments) == [0, 1, 2]
    per_frame = rate * frame_ms // 1000
    for index, text in enumerate(PIECES):
        pcm = segments[index]
        assert pcm == tone.pcm_at(text, rate)  # chunked equals whole buffer, tail included
        n_in = len(tone.pcm(text)) // 2
        assert len(pcm) // 2 == round(n_in * rate / tone.sample_rate)
        sizes = [len(f.audio) // 2 for f in frames if f.segment_index == index]
        assert all(s == per_frame for s in sizes[:-1]) and 0 < sizes[-1] <= per_frame
    # frames are contiguous on the utterance's timeline
    for a, b in itertools.pairwise(frames):
        assert b.start_ms == pytest.approx(a.end_ms)
    assert [f.segment_index for f in frames] == sorted(f.segment_index for f in frames)


async def test_equal_rate_passes_through_untouched() -> None:
    tone = ToneEngine(chunk_bytes=7)  # odd byte counts: samples split across chunks
    assert await collect_pcm(Synthesizer(tone, sample_rate=24000).speak(PIECES[0])) == tone.pcm(PIECES[0])


@pytest.mark.parametrize("rate", [8000, 24000])
async def test_unframed_output_is_each_chunk_resampled(rate: int) -> None:
    tone = ToneEngine(chunk_bytes=962)
    frames: list[SpeechFrame] = []
    pcm = await collect_pcm(Synthesizer(tone, sample_rate=rate, frame_ms=None).speak(PIECES[0]), into=frames)
    assert pcm == tone.pcm_at(PIECES[0], rate)
    assert len(frames) >= len(tone.pcm(PIECES[0])) // 962  # one frame per engine chunk, not re-cut


async def test_pad_frames_fills_the_last_frame_with_silence() -> None:
    tone = ToneEngine(ms_per_char=33)
    synth = Synthesizer(tone, sample_rate=8000, pad_frames=True, segmenter=per_sentence)
    frames = await collect(synth.speak_stream(PIECES[:2]))
    assert {len(f.audio) for f in frames} == {320}
    for index, text in enumerate(PIECES[:2]):
        audio = by_segment(frames)[index]
        exact = tone.pcm_at(text, 8000)
        assert len(exact) % 320 and audio[: len(exact)] == exact
        assert audio[len(exact) :] == bytes(320 - len(exact) % 320)


class SixteenKEngine:
    """A user's own engine at 16 kHz (not a core engine, not 24 kHz)."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.tone = ToneEngine()

    def pcm(self, text: str) -> bytes:
        return self.tone.pcm_at(text, 16000)

    async def stream(
        self, text: str, *, voice: str = "x", speed: float = 1.0, volume: float = 1.0
    ) -> AsyncIterator[bytes]:
        pcm = self.pcm(text)
        for i in range(0, len(pcm), 333):
            yield pcm[i : i + 333]


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_custom_engine_at_another_rate(rate: int) -> None:
    engine = SixteenKEngine()
    pcm = await collect_pcm(Synthesizer(engine, sample_rate=rate).speak(PIECES[1]))  # type: ignore[arg-type]
    rs = StreamResampler(16000, rate)
    assert pcm == rs.process(engine.pcm(PIECES[1])) + rs.flush()


@pytest.mark.parametrize(
    ("encoding", "encode", "decode"), [("mulaw", lin2ulaw, ulaw2lin), ("alaw", lin2alaw, alaw2lin)]
)
async def test_g711_frames_round_trip(encoding: str, encode, decode) -> None:  # type: ignore[no-untyped-def]
    tone = ToneEngine()
    pcm_frames: list[SpeechFrame] = []
    g711_frames: list[SpeechFrame] = []
    pcm = await collect_pcm(Synthesizer(tone, sample_rate=8000).speak(PIECES[0]), into=pcm_frames)
    coded = await collect_pcm(
        Synthesizer(tone, sample_rate=8000, encoding=encoding).speak(PIECES[0]),  # type: ignore[arg-type]
        into=g711_frames,
    )
    assert [len(f.audio) for f in g711_frames] == [len(f.audio) // 2 for f in pcm_frames]  # 1 byte/sample
    assert all(f.encoding == encoding and f.sample_rate == 8000 for f in g711_frames)
    assert coded == encode(pcm)
    ref = np.frombuffer(pcm, "<i2").astype(float)
    back = np.frombuffer(decode(coded), "<i2").astype(float)
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - back) ** 2))
    assert snr > 30  # G.711 gives ~38 dB on a speech-level tone


# -- text handling and bad input ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n", "。！？", "……", "😊👍", "…!?"])
async def test_nothing_to_say_makes_no_request(text: str) -> None:
    async with served() as (srv, cloud):
        synth = Synthesizer(cloud, sample_rate=8000)
        assert await collect(synth.speak(text)) == []
        assert await collect(synth.speak_stream([text, " ", text])) == []
        assert srv.records == []


async def test_long_text_is_split_not_truncated() -> None:
    text = "，".join(f"这是第{i}句话的内容" for i in range(150)) + "。"
    assert len(text) > 1024
    async with served(ToneEngine(ms_per_char=2)) as (srv, cloud):
        frames = await collect(Synthesizer(cloud).speak(text))
        sent = [r.body["input"] for r in srv.records]
    assert len(sent) >= 2 and all(len(s) <= 1024 for s in sent)
    assert "".join(sent) == text
    assert sorted({f.segment_index for f in frames}) == list(range(len(sent)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_rate": 11025}, "sample_rate"),
        ({"encoding": "mp3"}, "encoding"),  # (opus is an encoding now)
        ({"frame_ms": 25}, "frame_ms"),
        ({"prefetch": -1}, "prefetch"),
        ({"speed": 3.0}, "speed"),
        ({"volume": 0}, "volume"),
        ({"voice": " "}, "voice"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        Synthesizer(ToneEngine(), **kwargs)
    assert info.value.field == field
    assert field in str(info.value)


async def test_bad_text_and_update_options() -> None:
    synth = Synthesizer(ToneEngine())
    with pytest.raises(InvalidRequestError) as info:
        synth.speak(123)  # type: ignore[arg-type]
    assert info.value.field == "text"
    with pytest.raises(InvalidRequestError) as info:
        synth.speak_stream("a whole string")  # type: ignore[arg-type]
    assert info.value.field == "texts"
    with pytest.raises(InvalidRequestError) as info:
        synth.update_options(speed=9)
    assert info.value.field == "speed" and synth.speed == 1.0  # a rejected update changes nothing
    with pytest.raises(TypeError):
        Synthesizer(object())  # type: ignore[arg-type]


async def test_update_options_applies_to_next_utterance() -> None:
    async with served() as (srv, cloud):
        synth = Synthesizer(cloud, voice="tongtong")
        await collect(synth.speak("第一句话。"))
        synth.update_options(voice="xiaochen", speed=1.2, volume=2.0)
        await collect(synth.speak("第二句话。"))
        bodies = [r.body for r in srv.records]
    assert bodies[0]["voice"] == "tongtong"
    assert (bodies[1]["voice"], bodies[1]["speed"], bodies[1]["volume"]) == ("xiaochen", 1.2, 2.0)


async def test_non_string_token_fails_after_the_audio_before_it() -> None:
    async def texts() -> AsyncIterator[object]:
        yield "您好，这里是星河银行信用卡中心。请问有什么可以帮您？"
        yield 42

    utt = Synthesizer(ToneEngine(), sample_rate=8000).speak_stream(texts())  # type: ignore[arg-type]
    frames: list[SpeechFrame] = []
    with pytest.raises(InvalidRequestError) as info:
        await collect_pcm(utt, into=frames)
    assert info.value.field == "texts"
    assert frames and frames[0].segment_text == "您好，这里是星河银行信用卡中心。"
    assert other_tasks() == set()


async def test_text_source_error_after_spoken_pieces() -> None:
    async def texts() -> AsyncIterator[str]:
        yield "您好，这里是星河银行信用卡中心。请问"
        raise ConnectionResetError("LLM stream broke")

    tone = ToneEngine()
    utt = Synthesizer(tone).speak_stream(texts())
    pcm = bytearray()
    with pytest.raises(ConnectionResetError):
        await collect_pcm(utt, into=pcm)
    assert bytes(pcm) == tone.pcm("您好，这里是星河银行信用卡中心。")


# -- streaming, order and prefetch ----------------------------------------------------------------


async def test_stream_requests_in_text_order_with_one_ahead() -> None:
    text = "".join(PIECES) + "感谢您的来电，祝您生活愉快。再见！"
    # the first piece's first byte is slow, so later pieces finish first at the server
    slow_first = "when_input=您好;first_byte_ms=150"
    async with served(ToneEngine(ms_per_char=20), faults=slow_first + ";rtf=0.2") as (srv, cloud):
        tone = ToneEngine(ms_per_char=20)
        utt = Synthesizer(cloud, sample_rate=16000, segmenter=per_sentence).speak_stream(
            tokens(text, 2, 0.001)
        )
        frames = await collect(utt)
        records = list(srv.records)
    pieces = [s.text for s in utt.segments]
    assert [r.body["input"] for r in records] == pieces
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    segments = by_segment(frames)
    for i, piece in enumerate(pieces):
        assert segments[i] == tone.pcm_at(piece, 16000)
    # prefetch: the second request started while the first was still streaming, never more than 2 at once
    assert records[1].started < records[0].ended  # type: ignore[operator]
    events = sorted([(r.started, 1) for r in records] + [(r.ended, -1) for r in records])  # type: ignore[misc]
    running = max(np.cumsum([d for _, d in events]))
    assert running == 2


async def test_prefetch_zero_is_one_request_at_a_time() -> None:
    async with served(ToneEngine(ms_per_char=10), faults="rtf=0.2") as (srv, cloud):
        text = "好的，我帮您查一下。您的订单已发货。预计明天送达。还有别的问题吗？" * 4
        utt = Synthesizer(cloud, prefetch=0, segmenter=per_sentence).speak_stream([text])
        await collect(utt)
        records = list(srv.records)
    assert len(records) >= 4
    for a, b in itertools.pairwise(records):
        assert b.started >= a.ended  # type: ignore[operator]


async def test_first_request_leaves_at_the_first_clause() -> None:
    async with served() as (srv, cloud):
        gate = asyncio.Event()

        async def llm() -> AsyncIterator[str]:
            yield "根据您的描述，建"  # a boundary is decided once the next speakable character is in
            await gate.wait()  # the rest of the reply has not been generated yet
            yield "议您先重启路由器。"

        utt = Synthesizer(cloud).speak_stream(llm())
        it = aiter(utt)
        first = await anext(it)
        assert first.segment_text == "根据您的描述，"
        assert [r.body["input"] for r in srv.records] == ["根据您的描述，"]
        gate.set()
        rest = [f async for f in it]
    assert rest[-1].segment_text == "建议您先重启路由器。"


# -- failures -------------------------------------------------------------------------------------


async def test_failing_piece_mid_stream_keeps_earlier_audio_and_closes_the_rest() -> None:
    tone = ToneEngine(chunk_bytes=960)
    faults = "when_input=请问;error_after=3;error_code=500"
    async with served(tone, faults=faults + ";") as (srv, cloud):
        synth = Synthesizer(cloud, sample_rate=8000, segmenter=per_sentence)
        utt = synth.speak_stream(
            ["您好，这里是星河银行信用卡中心。", "请问有什么可以帮您？", "我们今天有优惠。"]
        )
        frames: list[SpeechFrame] = []
        with pytest.raises(ServerError) as info:
            await collect_pcm(utt, into=frames)
        assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 2)
        records = {r.body["input"]: r for r in srv.records}
    assert "segment 1" in "".join(info.value.__notes__)
    segments = by_segment(frames)
    assert segments[0] == tone.pcm_at("您好，这里是星河银行信用卡中心。", 8000)
    # all of the failing piece's audio that the server sent reached the listener, tail included
    sent = records["请问有什么可以帮您？"].audio_bytes
    assert sent == 3 * 960
    assert len(segments[1]) // 2 == round(sent / 2 / 3)
    assert 2 not in segments
    if "我们今天有优惠。" in records:  # it was prefetched: its request was closed, not left running
        assert records["我们今天有优惠。"].outcome in ("disconnected", "completed")
    assert not utt.segments[1].complete
    assert other_tasks() == set()


async def test_error_before_any_audio_is_typed() -> None:
    async with served(faults="status=500;code=500") as (_, cloud):
        with pytest.raises(ServerError):
            await collect(Synthesizer(cloud).speak("你好。"))
    assert other_tasks() == set()


# -- cancellation ---------------------------------------------------------------------------------


async def test_cancel_is_idempotent_and_harmless_after_the_end() -> None:
    synth = Synthesizer(ToneEngine())
    utt = synth.speak("你好。")
    await utt.cancel()
    await utt.cancel()
    assert await collect(utt) == []
    done = synth.speak("你好。")
    assert await collect(done)
    await done.cancel()
    await done.cancel()
    assert other_tasks() == set()


async def test_cancel_closes_the_text_source() -> None:
    closed = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        try:
            yield "您好，这里是星河银行信用卡中心。请"
            await asyncio.sleep(3600)
        finally:
            closed.set()

    utt = Synthesizer(ToneEngine()).speak_stream(llm())
    await anext(aiter(utt))
    await utt.cancel()
    assert closed.is_set()
    assert other_tasks() == set()


async def test_cancelling_the_consumer_task_propagates_and_disconnects() -> None:
    async with served(faults="rtf=1") as (srv, cloud):
        utt = Synthesizer(cloud).speak("这是一句很长很长的话，需要好几秒钟才能说完。")
        got = asyncio.Event()

        async def consume() -> None:
            async for _ in utt:
                got.set()

        task = asyncio.create_task(consume())
        await got.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # not swallowed
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
    assert other_tasks() == set()


async def test_heard_text_follows_the_audio() -> None:
    tone = ToneEngine(ms_per_char=40)
    utt = Synthesizer(tone, sample_rate=8000, segmenter=per_sentence).speak_stream(PIECES[:2])
    await collect(utt)
    first_ms = len(PIECES[0]) * 40
    assert utt.heard_text(0) == ""
    assert utt.heard_text(first_ms - 1).startswith("您好，这里是星河")
    assert utt.heard_text(first_ms) == PIECES[0]
    half = utt.heard_text(first_ms + len(PIECES[1]) * 20)
    assert half.startswith(PIECES[0] + "请问有") and len(half) < len(PIECES[0] + PIECES[1])
    assert utt.heard_text(10_000) == PIECES[0] + PIECES[1]
    english = Synthesizer(tone).speak_stream(["Hello there. How are you today?"])
    await collect(english)
    assert english.heard_text(10_000) == "Hello there. How are you today?"


async def test_heard_text_of_a_cancelled_utterance() -> None:
    async with served(faults="rtf=0.5") as (_, cloud):
        utt = Synthesizer(cloud).speak("您好，这里是星河银行信用卡中心，请问有什么可以帮您？")
        async for frame in utt:
            if frame.end_ms >= 400:
                await utt.cancel()
        heard = utt.heard_text(utt.audio_ms)
    assert 0 < len(heard) < len(utt.text)
    assert utt.text.startswith(heard)


REPLIES = [
    "您好，这里是星河银行信用卡中心。请问有什么可以帮您？我们今天有优惠活动。",
    "好的，我帮您查一下。您的订单GD20261123-0457已经发货，预计明天送达。",
    "Sure! Your balance is 3,268.50 yuan. Anything else I can help with?",
]
CANCEL_MODES = ("frame0", "mid", "between", "prefetch", "timer", "task")


class CancelRun:
    """One utterance consumed in its own task and cancelled at a point chosen by ``mode``."""

    def __init__(self, utt: Utterance, mode: str, rng: random.Random) -> None:
        self.utt, self.mode = utt, mode
        self.target = rng.randint(2, 15)  # for "mid": the frame after which to cancel
        self.delay = rng.uniform(0, 0.15)  # for "timer" and "task"
        self.cancelled = False
        self.effective = False  # the cancel landed while the utterance was still running
        self.latency_ms: float | None = None
        self.frames_after: list[SpeechFrame] = []

    async def run(self) -> None:
        task = asyncio.create_task(self._consume())
        if self.mode in ("timer", "task"):
            await asyncio.sleep(self.delay)
            if self.mode == "timer":
                await self._cancel()
            elif not task.done():
                self.effective = True
                task.cancel()
                start = time.perf_counter()
                await asyncio.gather(task, return_exceptions=True)
                self.latency_ms = 1000 * (time.perf_counter() - start)
        await asyncio.gather(task, return_exceptions=True)

    async def _cancel(self) -> None:
        self.effective = not self.utt.done
        start = time.perf_counter()
        await self.utt.cancel()
        self.latency_ms = 1000 * (time.perf_counter() - start)
        self.cancelled = True

    async def _consume(self) -> None:
        seen = 0
        async for frame in self.utt:
            if self.cancelled:
                self.frames_after.append(frame)
            seen += 1
            segs = self.utt.segments
            if (
                (self.mode == "frame0" and seen == 1)
                or (self.mode == "mid" and seen == self.target)
                or (self.mode == "between" and segs[frame.segment_index].complete)
                or (self.mode == "prefetch" and len(segs) > frame.segment_index + 1)
            ):
                await self._cancel()


async def test_randomized_cancels_leave_nothing_behind() -> None:
    """250 runs: cancel at frame 0, mid-piece, between pieces and during prefetch; by the consumer,
    from another task, or by cancelling the consuming task."""
    rng = random.Random(20261123)
    tone = ToneEngine(ms_per_char=30, chunk_bytes=960)
    latencies: list[float] = []
    kinds: dict[str, int] = {}  # effective cancels by mode
    async with served(tone, faults="rtf=0.15") as (srv, cloud):
        for run in range(250):
            synth = Synthesizer(
                cloud,
                sample_rate=rng.choice([8000, 16000, 24000]),
                encoding=rng.choice(["pcm_s16le", "mulaw"]),
                prefetch=rng.choice([0, 1, 1, 2]),
            )
            utt = synth.speak_stream(tokens(rng.choice(REPLIES), rng.randint(1, 6)))
            one = CancelRun(utt, rng.choice(CANCEL_MODES), rng)
            await one.run()
            if one.effective:
                kinds[one.mode] = kinds.get(one.mode, 0) + 1
            if one.latency_ms is not None:
                latencies.append(one.latency_ms)
            assert one.frames_after == [], f"run {run} ({one.mode}): frames after cancel"
            assert other_tasks() == set(), f"run {run} ({one.mode}): tasks left"
            assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 2), run
        outcomes = [r.outcome for r in srv.records]
    assert set(outcomes) <= {"completed", "disconnected"}
    assert outcomes.count("disconnected") >= 100  # most runs cut a request short
    assert sum(kinds.values()) >= 200 and min(kinds.values()) >= 25, kinds
    print(
        f"cancel latency over {len(latencies)} runs: median {statistics.median(latencies):.2f} ms,"
        f" p95 {np.percentile(latencies, 95):.2f} ms, max {max(latencies):.2f} ms; {len(outcomes)} requests,"
        f" {outcomes.count('disconnected')} disconnected; effective cancels by mode {kinds}"
    )
    assert statistics.median(latencies) < 20  # "returns within one frame" (a bound, not a benchmark)


def test_validate_request_still_rejects_empty_text_for_direct_engine_calls() -> None:
    with pytest.raises(InvalidRequestError):
        validate_request(" ", voice="tongtong", speed=1.0, volume=1.0)


class PlainTokens:
    """An async iterator with no ``aclose`` (not an async generator)."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = iter(tokens)

    def __aiter__(self) -> PlainTokens:
        return self

    async def __anext__(self) -> str:
        try:
            return next(self._tokens)
        except StopIteration:
            raise StopAsyncIteration from None


async def test_text_source_without_aclose_is_spoken_to_the_end() -> None:
    tone = ToneEngine()
    utt = Synthesizer(tone, segmenter=per_sentence).speak_stream(PlainTokens(["你好。", "再见。"]))
    pcm = await collect_pcm(utt)
    pieces = [seg.text for seg in utt.segments]
    assert "".join(pieces) == "你好。再见。"  # the last piece, held in the segmenter, was spoken too
    assert pcm == b"".join(tone.pcm(p) for p in pieces)


class CancellingEngine(ToneEngine):
    """An engine whose stream is cancelled from elsewhere (e.g. it awaited a task someone cancelled)."""

    async def stream(self, text, **kw):  # type: ignore[no-untyped-def, override]
        yield self.pcm(text)[:960]
        raise asyncio.CancelledError


async def test_a_cancelled_engine_stream_ends_the_utterance_with_an_error() -> None:
    utt = Synthesizer(CancellingEngine()).speak("你好。")
    pcm = bytearray()
    with pytest.raises(GLMTTSError, match="cancelled"):
        async with asyncio.timeout(5):  # before the fix the iterator waited forever
            await collect_pcm(utt, into=pcm)
    assert bytes(pcm) == ToneEngine().pcm("你好。")[:960]
    assert other_tasks() == set()


async def test_cancel_before_iterating_means_no_request() -> None:
    async with served() as (srv, cloud):
        utt = Synthesizer(cloud).speak("你好。")
        await utt.cancel()
        assert await collect(utt) == []
        assert srv.records == []


async def test_audio_ms_counts_only_yielded_audio() -> None:
    utt = Synthesizer(ToneEngine(chunk_bytes=48000)).speak("你好，这里是星河银行。")  # 1 s chunks
    first = await anext(aiter(utt))
    await utt.cancel()
    assert utt.audio_ms == first.duration_ms == 20.0
