"""livekit.plugins.glmtts against the local server: no LiveKit server, LiveKit's own streams and session."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

pytest.importorskip("livekit.agents")

from livekit import rtc
from livekit.agents import Agent, AgentSession, APIConnectOptions, APIError
from livekit.plugins import glmtts

from bench import _corpus
from glmtts_plugins import CloudEngine, InvalidRequestError
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine, llm_tokens
from glmtts_plugins.text import Segmenter

from ._livekit import HeadCounter, assert_pushed_audio, start_roomless
from .conftest import API_KEY, local_server

TEXT = "您好，这里是星河银行信用卡中心，请问有什么可以帮您？"
FAST = APIConnectOptions(max_retry=3, retry_interval=0.01, timeout=10)


def our_tasks() -> set[asyncio.Task]:
    """Running tasks whose coroutine is this project's code (LiveKit keeps some tasks of its own)."""
    roots = ("glmtts_plugins", "plugins/glmtts")
    return {
        t
        for t in asyncio.all_tasks()
        if not t.done() and any(r in getattr(t.get_coro(), "cr_code", None).co_filename for r in roots)
    }


def plugin(srv: LocalServer, **kw: object) -> glmtts.TTS:
    return glmtts.TTS(api_key=API_KEY, base_url=srv.base_url, **kw)  # type: ignore[arg-type]


def replies() -> list[str]:
    if not _corpus.CORPUS.exists():
        pytest.skip("shared/corpus not beside the project")
    return _corpus.replies()


def pieces_of(text: str, tokens: list[str]) -> list[str]:
    seg = Segmenter()
    out = [p for t in tokens for p in seg.push(t)]
    return out + seg.flush()


async def drain(stream: object) -> list[rtc.AudioFrame]:
    return [ev.frame async for ev in stream]  # type: ignore[attr-defined]


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_synthesize_collect_has_the_right_rate_and_duration(rate: int) -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        async with plugin(srv, sample_rate=rate) as tts:
            frame = await tts.synthesize(TEXT).collect()
    assert frame.sample_rate == rate and frame.num_channels == 1
    assert_pushed_audio([frame], tone.pcm_at(TEXT, rate))  # tail included, nothing lost


async def test_model_provider_and_bad_options() -> None:
    with local_server() as srv:
        tts = plugin(srv)
        assert (tts.model, tts.provider) == ("glm-tts", "GLM-TTS")  # a brand name, not the host
        assert srv.base_url.startswith(tts.engine.base_url)  # the host stays available for logs
        assert tts.capabilities.streaming
        await tts.aclose()
    for kwargs, field in [
        ({"speed": 0.1}, "speed"),
        ({"sample_rate": 11025}, "sample_rate"),
        ({"sample_rate": 24000.0}, "sample_rate"),  # equal to 24000, but not a rate LiveKit can use
        ({"sample_rate": True}, "sample_rate"),
        ({"voice": ""}, "voice"),
        ({"prefetch": -1}, "prefetch"),
        ({"base_url": "127.0.0.1:8000/api/paas/v4"}, "base_url"),  # no scheme
        ({"base_url": "http:///api/paas/v4"}, "base_url"),  # no host
    ]:
        with pytest.raises(InvalidRequestError) as info:
            glmtts.TTS(api_key=API_KEY, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field and isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        glmtts.TTS(api_key=API_KEY, engine=ToneEngine())


async def test_no_key_fails_at_construction_naming_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ZAI_API_KEY", "ZHIPUAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError) as info:
        glmtts.TTS()
    assert isinstance(info.value, InvalidRequestError) and info.value.field == "api_key"
    assert "ZAI_API_KEY" in str(info.value) and "ZHIPUAI_API_KEY" in str(info.value)


async def test_use_after_aclose_is_a_livekit_error_that_is_not_retried() -> None:
    with local_server() as srv:
        tts = plugin(srv)
        await tts.synthesize("第一句。").collect()
        await tts.aclose()
        errors: list[object] = []
        tts.on("error", errors.append)
        with pytest.raises(APIError) as info:
            await tts.synthesize("第二句。", conn_options=FAST).collect()
        stream = tts.stream(conn_options=FAST)
        stream.push_text("第三句。")
        stream.end_input()
        with pytest.raises(APIError) as info2:
            await drain(stream)
        await stream.aclose()
        assert len(srv.records) == 1
    for exc in (info.value, info2.value):
        assert not exc.retryable and "aclose" in str(exc)
    assert len(errors) == 2  # one attempt each: LiveKit did not retry


async def test_an_engine_closed_by_its_owner_is_a_livekit_error_that_is_not_retried() -> None:
    with local_server() as srv:
        engine = CloudEngine(api_key=API_KEY, base_url=srv.base_url)
        tts = glmtts.TTS(engine=engine)
        await engine.aclose()  # the application's engine, closed under the plugin
        with pytest.raises(APIError) as info:
            await tts.synthesize("第二句。", conn_options=FAST).collect()
        await tts.aclose()
        assert srv.records == []
    assert not info.value.retryable and "closed" in str(info.value)


async def test_prewarm_runs_again_once_the_previous_one_finished() -> None:
    """LiveKit calls prewarm() on every agent activity (handoffs, update_options(tts=)): a prewarm in
    flight is not doubled, a finished one is run again, as the OpenAI plugin does."""
    async with HeadCounter() as server:
        tts = glmtts.TTS(api_key=API_KEY, base_url=server.base_url)
        server.hold.clear()
        tts.prewarm()
        await asyncio.sleep(0.3)
        tts.prewarm()  # the first is still waiting for its answer
        await asyncio.sleep(0.3)
        assert server.methods == ["HEAD"]
        server.hold.set()
        for _ in range(200):
            if tts._prewarm_task is not None and tts._prewarm_task.done():
                break
            await asyncio.sleep(0.01)
        tts.prewarm()
        for _ in range(200):
            if len(server.methods) == 2:
                break
            await asyncio.sleep(0.01)
        assert server.methods == ["HEAD", "HEAD"]
        await tts.aclose()


async def test_metrics_tell_whether_the_prewarmed_connection_was_reused() -> None:
    with local_server() as srv:
        cold = plugin(srv)
        metrics: list[object] = []
        cold.on("metrics_collected", metrics.append)
        await cold.synthesize("第一句。").collect()
        await cold.aclose()
        warm = plugin(srv)
        warm.on("metrics_collected", metrics.append)
        warm.prewarm()
        await asyncio.sleep(0.5)
        await warm.synthesize("第二句。").collect()
        stream = warm.stream()
        stream.push_text("第三句。")
        stream.end_input()
        await drain(stream)
        await stream.aclose()
        await warm.aclose()
    first, second, third = metrics
    assert not first.connection_reused and first.acquire_time > 0  # a new TCP connection
    assert second.connection_reused and third.connection_reused  # the prewarmed one, kept alive
    assert 0 <= second.acquire_time < first.acquire_time + 0.05


async def test_stream_sends_one_request_per_segment_in_order_first_at_the_first_clause() -> None:
    """Every corpus reply, token by token: the requests are the segmenter's pieces, in order, and the
    first one leaves as soon as the first clause is decided, before the rest of the reply exists."""
    rng = random.Random(11)
    early = 0
    with local_server(ToneEngine(ms_per_char=2)) as srv:
        async with plugin(srv) as tts:
            for text in replies():
                tokens = llm_tokens(text, rng)
                expected = pieces_of(text, tokens)
                seg = Segmenter()
                decided = next((i + 1 for i, tok in enumerate(tokens) if seg.push(tok)), len(tokens))
                before = len(srv.records)
                stream = tts.stream()
                reader = asyncio.create_task(drain(stream))
                for tok in tokens[:decided]:
                    stream.push_text(tok)
                if decided < len(tokens):
                    early += 1
                    has_input = lambda b=before: len(srv.records) > b and "input" in srv.records[b].body  # noqa: E731
                    assert await srv.wait_for(has_input, 2), text
                    assert srv.records[before].body["input"] == expected[0]
                    assert len(srv.records) == before + 1
                for tok in tokens[decided:]:
                    stream.push_text(tok)
                stream.end_input()
                frames = await reader
                await stream.aclose()
                assert [r.body["input"] for r in srv.records[before:]] == expected
                assert frames
    assert early >= 30  # most replies have a first piece before their end


async def consume_until_closed(stream: object, closed: asyncio.Event, after: list[rtc.AudioFrame]) -> None:
    """Read a stream to its end, keeping any frame that arrives once ``closed`` is set."""
    async for ev in stream:  # type: ignore[attr-defined]
        if closed.is_set():
            after.append(ev.frame)


async def test_random_interruptions_push_nothing_afterwards_and_disconnect() -> None:
    rng = random.Random(5)
    texts = replies()
    mid_flight = 0
    with local_server(faults="rtf=0.5") as srv:
        async with plugin(srv) as tts:
            for run in range(50):
                stream = tts.stream()
                for tok in llm_tokens(rng.choice(texts[:20]), rng):
                    stream.push_text(tok)
                stream.end_input()
                closed, after = asyncio.Event(), []
                task = asyncio.create_task(consume_until_closed(stream, closed, after))
                await asyncio.sleep(rng.uniform(0.02, 0.6))
                mid_flight += bool(our_tasks())  # the interruption lands while requests run
                await stream.aclose()
                closed.set()
                await asyncio.wait_for(task, 2)
                assert after == [], f"run {run}: frames after the interruption"
                assert our_tasks() == set(), f"run {run}: tasks left"
                assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 2), run
    outcomes = [r.outcome for r in srv.records]
    assert set(outcomes) <= {"completed", "disconnected"} and outcomes.count("disconnected") >= 25
    assert mid_flight >= 25


async def test_failure_after_audio_is_not_retried_and_not_duplicated() -> None:
    tone = ToneEngine(chunk_bytes=960)
    faults = "when_input=请问;error_after=4;error_code=500"
    with local_server(tone, faults=faults) as srv:
        async with plugin(srv) as tts:
            stream = tts.stream(conn_options=FAST)
            stream.push_text("您好，这里是星河银行信用卡中心。请问有什么可以帮您？")
            stream.end_input()
            frames: list[rtc.AudioFrame] = []
            with pytest.raises(APIError) as info:
                async for ev in stream:
                    frames.append(ev.frame)
            await stream.aclose()
            chunked = tts.synthesize("请问有什么可以帮您？", conn_options=FAST)
            with pytest.raises(APIError) as info2:
                await chunked.collect()
        records = list(srv.records)
    assert not info.value.retryable and not info2.value.retryable
    inputs = [r.body["input"] for r in records]
    assert inputs.count("请问有什么可以帮您？") == 2  # once for the stream, once for synthesize: no retries
    # what reached LiveKit is exactly what the server sent, no more (no repeated speech)
    sent_s = sum(r.audio_bytes for r in records[:2]) / 2 / 24000
    got_s = sum(f.duration for f in frames)
    assert abs(got_s - sent_s) < 0.002


async def test_failure_before_audio_is_retried_by_the_framework() -> None:
    tone = ToneEngine()
    with local_server(tone, faults="status=500;code=500;times=2") as srv:
        async with plugin(srv) as tts:
            frame = await tts.synthesize(TEXT, conn_options=FAST).collect()
            srv.state._fault_counts.clear()  # the stream's first request fails too
            stream = tts.stream(conn_options=FAST)
            stream.push_text(TEXT)
            stream.end_input()
            frames = await drain(stream)
            await stream.aclose()
        records = [(r.outcome, r.body.get("input")) for r in srv.records]
    # synthesize: two 500s before audio, retried twice by LiveKit (the engine itself does not retry)
    assert [o for o, _ in records[:3]] == ["rejected", "rejected", "completed"]
    # stream: its first attempt failed before audio; LiveKit replayed the text and the retry's requests
    # completed in order (a prefetched piece of the failed attempt may have completed at the server too,
    # but none of its audio was pushed: the listener's audio below is exact)
    stream_records = records[3:]
    assert any(o == "rejected" for o, _ in stream_records)
    completed = [i for o, i in stream_records if o == "completed"]
    assert completed[-2:] == pieces_of(TEXT, [TEXT])
    assert_pushed_audio([frame], tone.pcm(TEXT))
    assert_pushed_audio(frames, b"".join(tone.pcm(piece) for piece in pieces_of(TEXT, [TEXT])))


async def test_update_options_between_turns() -> None:
    with local_server() as srv:
        async with plugin(srv, voice="tongtong") as tts:
            await tts.synthesize("第一句。").collect()
            tts.update_options(voice="xiaochen", speed=1.5, volume=3.0)
            stream = tts.stream()
            stream.push_text("第二句。")
            stream.end_input()
            await drain(stream)
            await stream.aclose()
        bodies = [r.body for r in srv.records]
    assert bodies[0]["voice"] == "tongtong"
    assert (bodies[1]["voice"], bodies[1]["speed"], bodies[1]["volume"]) == ("xiaochen", 1.5, 3.0)


@pytest.mark.parametrize("text", ["。", "……！", "😊"])
async def test_nothing_to_say_makes_no_request_and_no_error(text: str) -> None:
    with local_server() as srv:
        async with plugin(srv) as tts:
            frame = await tts.synthesize(text, conn_options=FAST).collect()
            stream = tts.stream(conn_options=FAST)
            stream.push_text(text)
            stream.end_input()
            await drain(stream)
            await stream.aclose()
        assert srv.records == []
    assert frame.duration <= 0.011


async def test_roomless_agent_session_say_then_interrupt() -> None:
    text = (
        "您好，这里是星河银行信用卡中心。我们今天为您准备了一份新的优惠活动，"
        "消费满两百元立减三十元。每人限一次。"
    )
    with local_server(ToneEngine(ms_per_char=150), faults="rtf=0.5") as srv:
        async with plugin(srv) as tts:
            session = AgentSession(tts=tts)
            sink, sync = await start_roomless(session, Agent(instructions="客服"))
            handle = session.say(text)
            await asyncio.sleep(2.5)
            handle.interrupt()
            await handle.wait_for_playout()
            assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 2)
            outcomes = [r.outcome for r in srv.records]
            messages = [m for m in session.history.items if m.type == "message" and m.role == "assistant"]
            await session.aclose()
            await sync.aclose()
            assert our_tasks() == set()
    assert "disconnected" in outcomes  # the session's interruption closed the request in flight
    assert sink.cleared_at is not None
    assert not [t for t, _ in sink.frames if t > sink.cleared_at]  # nothing captured after the clear
    said = messages[-1].text_content or ""
    assert messages[-1].interrupted and 0 < len(said) < len(text)
    assert text.startswith(said.rstrip())


ENGLISH = (
    "Hello, this is the Galaxy Bank credit card center. We have prepared a new offer for you today: "
    "spend two hundred yuan and save thirty. The offer is limited to one use per customer, "
    "and it ends at the end of this month."
)


@pytest.mark.parametrize("rate", [24000, 16000])
async def test_interrupted_english_transcript_matches_what_was_heard(rate: int) -> None:
    """With ``use_tts_aligned_transcript``, LiveKit paces the stored text by the pieces' timings. Each
    piece has a start and, once its audio is complete, an end, so the text of a reply interrupted inside
    its last piece keeps up with the audio played (with a start only, LiveKit cannot align past the last
    start and falls back to its own speech-rate guess). The tone speaks faster than that guess."""
    ms_per_char, interrupt_s = 35.0, 5.0
    tone = ToneEngine(ms_per_char=ms_per_char)
    with local_server(tone, faults="rtf=0.5") as srv:
        async with plugin(srv, sample_rate=rate) as tts:
            session = AgentSession(tts=tts, use_tts_aligned_transcript=True)
            sink, sync = await start_roomless(session, Agent(instructions="support"))
            handle = session.say(ENGLISH)
            assert await srv.wait_for(lambda: len(srv.records) > 1, 5)
            assert await srv.wait_for(lambda: all(r.outcome == "completed" for r in srv.records), 10)
            assert len(srv.records) == len(pieces_of(ENGLISH, [ENGLISH])) and sink.frames
            await asyncio.sleep(interrupt_s - (time.monotonic() - sink.frames[0][0]))
            handle.interrupt()
            await handle.wait_for_playout()
            messages = [m for m in session.history.items if m.type == "message" and m.role == "assistant"]
            await session.aclose()
            await sync.aclose()
    assert sink.cleared_at is not None
    played_s = min(sink.cleared_at - sink.frames[0][0], sum(f.duration for _, f in sink.frames))
    heard = played_s * 1000 / ms_per_char  # characters whose audio was played (spaces between pieces aside)
    said = messages[-1].text_content or ""
    assert messages[-1].interrupted and ENGLISH.startswith(said.rstrip())
    print(f"rate {rate}: said {len(said)} characters, heard ~{heard:.0f}")
    assert heard - 12 <= len(said) <= heard + 12, (len(said), heard)  # within about two words
