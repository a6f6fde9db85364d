"""LiveKit's ``FallbackAdapter`` over a stalled primary and a working secondary: it switches within the
primary's timeout-and-retry budget (``conn_options.timeout`` per attempt, ``max_retry_per_tts``
retries), and the listener gets the secondary's audio, exact."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("livekit.agents")

from livekit.agents import APIConnectOptions
from livekit.agents.tts import FallbackAdapter
from livekit.plugins import glmtts

from glmtts_plugins.testing import ToneEngine

from ._livekit import StalledEndpoint, assert_pushed_audio
from .conftest import API_KEY, local_server
from .test_livekit_plugin import our_tasks, pieces_of

TEXT = "您好，这里是星河银行信用卡中心。请问有什么可以帮您？"
TIMEOUT = 2.0
RETRIES = 1  # max_retry_per_tts
# every attempt on the primary times out; LiveKit waits 0.1 s before the first retry
BUDGET = (RETRIES + 1) * TIMEOUT + 0.1


@pytest.mark.parametrize("mode", ["stream", "synthesize"])
async def test_fallback_switches_to_the_secondary_within_the_budget(mode: str) -> None:
    tone = ToneEngine()
    async with StalledEndpoint() as stalled:
        with local_server(tone) as srv:
            primary = glmtts.TTS(api_key=API_KEY, base_url=stalled.url("http"))
            secondary = glmtts.TTS(api_key=API_KEY, base_url=srv.base_url)
            adapter = FallbackAdapter([primary, secondary], max_retry_per_tts=RETRIES)
            changes: list[tuple[object, bool]] = []
            adapter.on("tts_availability_changed", lambda ev: changes.append((ev.tts, ev.available)))
            conn = APIConnectOptions(max_retry=0, timeout=TIMEOUT)
            start = time.monotonic()
            first_audio = None
            frames = []
            if mode == "stream":
                source = adapter.stream(conn_options=conn)
                source.push_text(TEXT)
                source.end_input()
                expected = b"".join(tone.pcm(p) for p in pieces_of(TEXT, [TEXT]))
            else:
                source = adapter.synthesize(TEXT, conn_options=conn)
                expected = tone.pcm(TEXT)
            async with source:
                async for ev in source:
                    first_audio = first_audio or time.monotonic() - start
                    frames.append(ev.frame)
            await adapter.aclose()  # cancels its background recovery probe of the primary
            await primary.aclose()
            await secondary.aclose()
            assert our_tasks() == set()
            inputs = [r.body["input"] for r in srv.records]
    assert first_audio is not None
    assert BUDGET - 0.3 <= first_audio <= BUDGET + 1.5, f"secondary's first audio at {first_audio:.2f} s"
    assert stalled.accepted >= RETRIES + 1  # the primary was tried, and retried, before the switch
    assert changes == [(primary, False)]
    assert_pushed_audio(frames, expected)
    assert "".join(inputs) == TEXT  # the secondary spoke the text once
