"""The properties LiveKit's generic TTS tests check (livekit/agents ``tests/test_tts.py``, which every
official plugin runs), checked against this plugin. The local server stands in for the API; loopback
endpoints that never answer (and the server's ``first_byte_ms`` fault) stand in for their toxiproxy
``timeout`` toxic.

Where LiveKit 1.8.9's own emitter changed what those tests assume, the installed code wins: its
progressive framing starts with 20 ms frames and holds 10 ms back, so a stream's non-final frames are
checked to be in (0, 250 ms), not the older (50, 250 ms)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("livekit.agents")

from livekit.agents import APIConnectOptions, APITimeoutError, tts
from livekit.plugins import glmtts

from glmtts_plugins.testing import ToneEngine
from glmtts_plugins.testing import llm_tokens as split_tokens

from ._livekit import StalledEndpoint, assert_pushed_audio
from .conftest import API_KEY, local_server
from .test_livekit_plugin import pieces_of

TEXT = (
    "您好，这里是星河银行信用卡中心。您本期账单金额是三千二百六十八元五角，最后还款日是十二月八日。"
    "如果您需要设置自动还款，我可以现在帮您办理。"
)


class Events:
    """Every ``error`` and ``metrics_collected`` event a TTS emits."""

    def __init__(self, emitter: tts.TTS) -> None:
        self.errors: list[tts.TTSError] = []
        self.metrics: list[object] = []
        emitter.on("error", self.errors.append)
        emitter.on("metrics_collected", self.metrics.append)


async def llm_tokens(text: str, per_second: float) -> AsyncIterator[str]:
    for token in split_tokens(text, random.Random(3)):
        yield token
        await asyncio.sleep(1 / per_second)


async def collect(stream: tts.SynthesizeStream) -> list[tts.SynthesizedAudio]:
    return [ev async for ev in stream]


async def test_synthesize_frames_request_id_and_one_metrics_event() -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        tts_v = glmtts.TTS(api_key=API_KEY, base_url=srv.base_url)
        tts_v.prewarm()
        events = Events(tts_v)
        stream = tts_v.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=3, timeout=5))
        audio = [ev async for ev in stream]
        await tts_v.aclose()
    *head, last = audio
    assert all(not ev.is_final for ev in head) and last.is_final
    assert 0 < last.frame.duration < 0.25 and 0 < head[-1].frame.duration < 0.25
    assert audio[0].request_id and {ev.request_id for ev in audio} == {audio[0].request_id}
    assert {(ev.frame.sample_rate, ev.frame.num_channels) for ev in audio} == {(24000, 1)}
    assert_pushed_audio([ev.frame for ev in audio], tone.pcm(TEXT))
    assert len(events.metrics) == 1 and not events.errors
    assert events.metrics[0].characters_count == len(TEXT)


async def test_stream_one_segment_frames_and_one_metrics_event() -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        tts_v = glmtts.TTS(api_key=API_KEY, base_url=srv.base_url)
        tts_v.prewarm()
        events = Events(tts_v)
        tokens = split_tokens(TEXT, random.Random(3))
        async with tts_v.stream(conn_options=APIConnectOptions(max_retry=3, timeout=5)) as stream:

            async def push() -> None:
                async for token in llm_tokens(TEXT, per_second=100):
                    stream.push_text(token)
                stream.flush()
                stream.end_input()

            pusher = asyncio.create_task(push())
            audio = [ev async for ev in stream]
            assert pusher.done()
        await tts_v.aclose()
    assert audio[0].request_id and {ev.request_id for ev in audio} == {audio[0].request_id}
    assert all(ev.segment_id for ev in audio) and len({ev.segment_id for ev in audio}) == 1
    *non_final, final = audio
    assert final.is_final and not any(ev.is_final for ev in non_final)
    assert 0 < final.frame.duration < 0.25
    assert all(0 < ev.frame.duration < 0.25 for ev in non_final)
    expected = b"".join(tone.pcm(piece) for piece in pieces_of(TEXT, tokens))
    assert_pushed_audio([ev.frame for ev in audio], expected)
    assert len(events.metrics) == 1 and not events.errors


async def test_empty_stream_ends_quietly_without_a_request() -> None:
    with local_server() as srv:
        async with glmtts.TTS(api_key=API_KEY, base_url=srv.base_url) as tts_v:
            async with tts_v.stream(conn_options=APIConnectOptions(max_retry=3, timeout=5)) as stream:
                stream.end_input()
                audio = await asyncio.wait_for(collect(stream), 5)
        assert audio == [] and srv.records == []


@contextlib.asynccontextmanager
async def endpoint(kind: str) -> AsyncIterator[tuple[str, str, StalledEndpoint | None]]:
    """(base_url, the phase that must time out, the stalled endpoint if it is ours)."""
    if kind == "server-first-byte":
        with local_server(faults="first_byte_ms=30000") as srv:
            yield srv.base_url, "first byte", None
        return
    async with StalledEndpoint() as stalled:
        url, phase = {
            "stalled-http": (stalled.url("http"), "first byte"),
            "stalled-tls": (stalled.url("https"), "TLS"),
            "stalled-connect": (stalled.connect_url, "connect"),
        }[kind]
        yield url, phase, stalled


async def attempt(tts_v: glmtts.TTS, mode: str, conn_options: APIConnectOptions) -> None:
    if mode == "synthesize":
        async with tts_v.synthesize(TEXT, conn_options=conn_options) as chunked:
            async for _ in chunked:
                pass
        return
    async with tts_v.stream(conn_options=conn_options) as stream:
        stream.push_text(TEXT)
        stream.end_input()
        async for _ in stream:
            pass


async def closed_by_client(stalled: StalledEndpoint | None) -> bool:
    """The endpoint accepted connections and the client closed every one (within a second)."""
    assert stalled is not None and stalled.accepted
    for _ in range(100):
        if not stalled.open:
            return True
        await asyncio.sleep(0.01)
    return False


KINDS = ["stalled-http", "stalled-tls", "stalled-connect", "server-first-byte"]


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_bounds_the_attempt_and_names_the_phase(kind: str, mode: str) -> None:
    """LiveKit's window: ``timeout=2.5, max_retry=0`` fails with APITimeoutError in 1.5-3.5 s."""
    async with endpoint(kind) as (url, phase, stalled):
        tts_v = glmtts.TTS(api_key=API_KEY, base_url=url)
        events = Events(tts_v)
        start = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await asyncio.wait_for(attempt(tts_v, mode, APIConnectOptions(max_retry=0, timeout=2.5)), 10)
        elapsed = time.monotonic() - start
        await tts_v.aclose()
        if kind in ("stalled-http", "stalled-tls"):  # the timed-out attempt closed its connection
            assert await closed_by_client(stalled)
    assert 1.5 <= elapsed <= 3.5, f"{elapsed:.2f} s"
    assert f"{phase} timeout" in str(info.value), str(info.value)
    assert len(events.errors) == 1 and not events.errors[0].recoverable and not events.metrics


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
@pytest.mark.parametrize("kind", ["stalled-http", "server-first-byte"])
async def test_timeouts_are_retried_by_conn_options_only(kind: str, mode: str) -> None:
    """LiveKit's window: ``timeout=0.5, max_retry=3, retry_interval=0`` makes four attempts, four error
    events, no metrics, in 1-3 s (the engine adds no retries and no time of its own)."""
    async with endpoint(kind) as (url, _, _stalled):
        tts_v = glmtts.TTS(api_key=API_KEY, base_url=url)
        events = Events(tts_v)
        start = time.monotonic()
        with pytest.raises(APITimeoutError):
            conn = APIConnectOptions(max_retry=3, timeout=0.5, retry_interval=0.0)
            await asyncio.wait_for(attempt(tts_v, mode, conn), 10)
        elapsed = time.monotonic() - start
        await tts_v.aclose()
    assert 1 <= elapsed <= 3, f"{elapsed:.2f} s"
    assert [e.recoverable for e in events.errors] == [True, True, True, False]
    assert not events.metrics
