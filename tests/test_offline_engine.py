"""The offline engine: real espeak-ng speech, streamed in small chunks, cancellable, safe to share."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest

from glmtts_plugins.audio.wav import wav_to_pcm
from glmtts_plugins.engines import offline
from glmtts_plugins.engines.offline import OfflineEngine, split_by_script
from glmtts_plugins.errors import InvalidRequestError
from glmtts_plugins.voices import VOICES

from .conftest import collect_pcm

ZH = "你好，世界。今天天气很好。"
EN = "Hello world, this is a quick test."
MIXED = "我喜欢用Python写代码，it is fun！"
CHUNK = 960  # 20 ms at 24 kHz, 16-bit mono


async def chunks_of(engine: OfflineEngine, text: str, **kwargs: object) -> list[bytes]:
    return [chunk async for chunk in engine.stream(text, **kwargs)]


async def pcm_of(engine: OfflineEngine, text: str, **kwargs: object) -> bytes:
    return await collect_pcm(engine.stream(text, **kwargs))


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / 24000


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
def engine() -> OfflineEngine:
    return OfflineEngine()


@pytest.mark.parametrize(
    ("text", "min_seconds"),
    [(ZH, 1.5), (EN, 1.0), (MIXED, 1.5)],
    ids=["mandarin", "english", "mixed"],
)
async def test_real_speech_in_small_even_chunks(engine: OfflineEngine, text: str, min_seconds: float) -> None:
    chunks = await chunks_of(engine, text)
    pcm = b"".join(chunks)
    assert min_seconds < seconds(pcm) < 15
    assert rms(pcm) > 500  # speech, not silence
    assert all(len(c) % 2 == 0 and 0 < len(c) <= CHUNK for c in chunks)
    assert all(len(c) == CHUNK for c in chunks[:-1])
    assert len(chunks) > 20  # streamed, not one blob


async def test_chunk_ms_sets_chunk_size() -> None:
    chunks = await chunks_of(OfflineEngine(chunk_ms=40), EN)
    assert all(len(c) == 1920 for c in chunks[:-1])
    assert b"".join(chunks) == await pcm_of(OfflineEngine(), EN)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="chunk_ms"):
            OfflineEngine(chunk_ms=bad)  # type: ignore[arg-type]


async def test_speed_changes_duration(engine: OfflineEngine) -> None:
    slow = seconds(await pcm_of(engine, MIXED, speed=0.5))
    fast = seconds(await pcm_of(engine, MIXED, speed=2.0))
    assert fast < 0.5 * slow


async def test_volume_is_a_gain(engine: OfflineEngine) -> None:
    quiet = rms(await pcm_of(engine, ZH, volume=0.5))
    normal = rms(await pcm_of(engine, ZH))
    loud = rms(await pcm_of(engine, ZH, volume=2.0))
    assert quiet == pytest.approx(normal / 2, rel=0.02)
    assert quiet < normal < loud


async def test_voices_sound_different(engine: OfflineEngine) -> None:
    assert set(offline._STYLES) == set(VOICES)  # every voice id has its own espeak style
    audio = {voice: await pcm_of(engine, MIXED, voice=voice) for voice in VOICES}
    assert len(set(audio.values())) == len(VOICES)
    assert all(rms(pcm) > 500 for pcm in audio.values())


async def test_same_request_same_bytes(engine: OfflineEngine) -> None:
    first = await pcm_of(engine, MIXED, voice="xiaochen")
    await pcm_of(engine, EN, voice="chuichui", speed=1.7)
    assert await pcm_of(engine, MIXED, voice="xiaochen") == first


async def test_unknown_voice_names_field_and_lists_voices(engine: OfflineEngine) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await pcm_of(engine, ZH, voice="nobody")
    assert info.value.field == "voice"
    assert "nobody" in str(info.value)
    assert all(voice in str(info.value) for voice in VOICES)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"speed": 3.0}, "speed"),
        ({"speed": 0.1}, "speed"),
        ({"volume": 0}, "volume"),
        ({"text": "   "}, "text"),
    ],
)
async def test_bad_request_names_field(engine: OfflineEngine, kwargs: dict, field: str) -> None:
    text = kwargs.pop("text", ZH)
    with pytest.raises(InvalidRequestError) as info:
        await pcm_of(engine, text, **kwargs)
    assert info.value.field == field


async def test_synthesize_returns_24khz_wav(engine: OfflineEngine) -> None:
    pcm, rate, channels = wav_to_pcm(await engine.synthesize(MIXED, voice="jam"))
    assert (rate, channels) == (24000, 1)
    assert pcm == await pcm_of(engine, MIXED, voice="jam")


async def test_aclose_mid_stream_stops_cleanly(engine: OfflineEngine) -> None:
    expected = await pcm_of(engine, EN)
    before = asyncio.all_tasks()
    agen = engine.stream(ZH * 3)
    first = await agen.__anext__()
    assert len(first) == CHUNK
    await agen.aclose()
    await settle()
    assert asyncio.all_tasks() == before
    assert await pcm_of(engine, EN) == expected


async def test_cancelled_consumer_task(engine: OfflineEngine) -> None:
    expected = await pcm_of(engine, EN)
    before = asyncio.all_tasks()
    got_one = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(engine.stream(ZH * 3)) as agen:
            async for _ in agen:
                got_one.set()
                await asyncio.sleep(1)  # a slow consumer, cancelled here

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()
    assert asyncio.all_tasks() == before
    assert await pcm_of(engine, EN) == expected


async def test_cancellation_stops_espeak_promptly(engine: OfflineEngine) -> None:
    await engine.prewarm()
    long_text = "今天天气很好，我们一起去公园散步吧。" * 100  # minutes of audio, ~2 s of synthesis
    agen = engine.stream(long_text)
    await agen.__anext__()
    await agen.aclose()
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(offline._EXECUTOR, lambda: None)
    assert time.perf_counter() - started < 0.5  # the worker is free again: espeak was stopped


async def test_concurrent_streams_each_get_their_own_audio(engine: OfflineEngine) -> None:
    requests = [(ZH, "tongtong"), (EN, "douji"), (MIXED, "luodo")]
    alone = [await pcm_of(engine, text, voice=voice) for text, voice in requests]
    together = await asyncio.gather(*(pcm_of(engine, text, voice=voice) for text, voice in requests))
    assert together == alone
    other = OfflineEngine(chunk_ms=10)  # engines share the one espeak worker
    both = await asyncio.gather(pcm_of(engine, ZH), pcm_of(other, ZH))
    assert both == [alone[0], alone[0]]


async def test_works_from_another_event_loop(engine: OfflineEngine) -> None:
    expected = await pcm_of(engine, EN)
    assert await asyncio.to_thread(asyncio.run, pcm_of(engine, EN)) == expected


async def test_prewarm_aclose_and_context_manager() -> None:
    async with OfflineEngine() as engine:
        await engine.prewarm()
        assert engine.sample_rate == 24000
        assert len(await pcm_of(engine, "好")) > 0
    await engine.aclose()  # no-op, still usable
    assert len(await pcm_of(engine, "ok")) > 0


def test_repr_and_docstring_say_stand_in() -> None:
    text = repr(OfflineEngine())
    assert len(text) < 80 and "espeak" in text
    assert "stand-in" in (OfflineEngine.__doc__ or "")


def test_split_by_script() -> None:
    assert split_by_script("我有3个apple，很好") == [
        ("han", "我有3个"),
        ("latin", "apple，"),
        ("han", "很好"),
    ]
    assert split_by_script("iPhone 15 很好。2024年") == [("latin", "iPhone 15 "), ("han", "很好。2024年")]
    assert split_by_script("2024年") == [("han", "2024年")]
    assert split_by_script("12, 34") == [("han", "12, 34")]
    assert split_by_script("Hello world") == [("latin", "Hello world")]
