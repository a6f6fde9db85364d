"""``pace``: the pre-buffer goes at once, then real time (also after a stall); closing it cancels."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from glmtts_plugins import InvalidRequestError, SpeechFrame, Synthesizer, pace
from glmtts_plugins.testing import ToneEngine

from .conftest import other_tasks, served

LATE_S = 0.15  # how late a release may be on a loaded machine (the bound that matters is "not early")


def frame(i: int, ms: float = 60) -> SpeechFrame:
    return SpeechFrame(b"\x00" * 8, 16000, "opus", 0, "x", i * ms, ms)


async def frames(n: int, *, stall_at: int | None = None, stall_s: float = 0.0) -> AsyncIterator[SpeechFrame]:
    for i in range(n):
        if i == stall_at:
            await asyncio.sleep(stall_s)
        yield frame(i)


def device_backlog(releases: list[tuple[float, SpeechFrame]]) -> list[float]:
    """What a device playing in real time holds (ms) right after each release."""
    playing_until, held = 0.0, []
    for t, f in releases:
        playing_until = max(playing_until, t) + f.duration_ms / 1000
        held.append(1000 * (playing_until - t))
    return held


async def test_prebuffer_at_once_then_real_time() -> None:
    start = time.monotonic()
    releases = [(time.monotonic(), f) async for f in pace(frames(25), prebuffer_ms=300)]
    t0 = releases[0][0]
    assert t0 - start < LATE_S
    assert releases[4][0] - t0 < LATE_S  # five 60 ms frames = the 300 ms pre-buffer, at once
    for t, f in releases:
        deadline = t0 + (f.end_ms - 300) / 1000
        assert t >= deadline - 0.002, (f.start_ms, t - deadline)  # never early
        assert t - max(deadline, t0) < LATE_S  # and not held back
    assert max(device_backlog(releases)) <= 300 + 2
    assert 1.1 < releases[-1][0] - t0 < 1.2 + LATE_S  # 1500 ms of audio, 300 of it ahead


async def test_after_a_stall_the_device_never_holds_more_than_the_prebuffer() -> None:
    releases = [
        (time.monotonic(), f) async for f in pace(frames(16, stall_at=8, stall_s=0.7), prebuffer_ms=120)
    ]
    assert max(device_backlog(releases)) <= 120 + 2
    # after the stall the device ran dry; the pre-buffer is rebuilt, not the lost time "caught up"
    assert releases[8][0] - releases[7][0] >= 0.69


async def test_zero_prebuffer_is_strict_real_time() -> None:
    releases = [(time.monotonic(), f) async for f in pace(frames(6), prebuffer_ms=0)]
    t0 = releases[0][0]
    for t, f in releases[1:]:
        assert t >= t0 + f.start_ms / 1000 - 0.002


async def test_closing_the_paced_iterator_cancels_the_utterance_at_once() -> None:
    async with served(faults="rtf=1") as (srv, cloud):
        utt = Synthesizer(cloud, sample_rate=16000, encoding="pcm_s16le", frame_ms=60).speak(
            "这是一句很长很长的话，需要好几秒钟才能说完。"
        )
        paced = pace(utt, prebuffer_ms=100)
        async with contextlib.aclosing(paced):
            await anext(paced)
            await anext(paced)
        assert utt.done
        assert [f async for f in utt] == []
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
    assert other_tasks() == set()


async def test_cancelling_the_task_iterating_it_propagates_and_disconnects() -> None:
    async with served(faults="rtf=1") as (srv, cloud):
        utt = Synthesizer(cloud, sample_rate=16000, frame_ms=60).speak(
            "这是一句很长很长的话，需要好几秒钟才能说完。"
        )
        got = asyncio.Event()

        async def consume() -> None:
            async for _ in pace(utt, prebuffer_ms=60):
                got.set()

        task = asyncio.create_task(consume())
        await got.wait()
        await asyncio.sleep(0.1)  # waiting on its deadline, or on the engine
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert utt.done
        assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
    assert other_tasks() == set()


async def test_pacing_a_fast_utterance_holds_it_to_real_time() -> None:
    utt = Synthesizer(ToneEngine(ms_per_char=60), sample_rate=16000, frame_ms=60).speak(
        "一二三四五六七八九十"
    )
    releases = [(time.monotonic(), f) async for f in pace(utt, prebuffer_ms=180)]
    assert len(releases) == 10
    assert max(device_backlog(releases)) <= 180 + 2


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    for bad in (-1, float("inf"), "300", True):
        with pytest.raises(InvalidRequestError) as err:
            pace(frames(1), prebuffer_ms=bad)  # type: ignore[arg-type]
        assert err.value.field == "prebuffer_ms"
    with pytest.raises(InvalidRequestError) as err:
        pace([frame(0)])  # type: ignore[arg-type]
    assert err.value.field == "frames"
