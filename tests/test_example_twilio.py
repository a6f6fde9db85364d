"""The Twilio call-center example, played by a fake Twilio: greeting, barge-in with real speech, answer."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("pipecat")
websockets = pytest.importorskip("websockets.asyncio.client")

from pipecat.frames.frames import LLMTextFrame  # noqa: E402

from examples.pipecat_twilio.bot import (  # noqa: E402
    GREETING,
    BotConfig,
    build_tts,
    create_app,
    greeting_frames,
    new_context,
    streamed_reply,
)
from glmtts_plugins import OfflineEngine  # noqa: E402
from glmtts_plugins.audio import StreamResampler, lin2ulaw, ulaw2lin  # noqa: E402
from glmtts_plugins.server import ThreadedServer  # noqa: E402
from glmtts_plugins.text import Segmenter  # noqa: E402

from .conftest import collect_pcm, local_server  # noqa: E402

STREAM_SID = "MZ00000000000000000000000000000001"
PACKET = 160  # 20 ms of 8 kHz μ-law, what Twilio sends
SILENCE = b"\xff" * PACKET
BARGE_IN_BOUND_S = 1.0  # VAD needs start_secs=0.2 of speech; the rest is pipeline and socket time


async def caller_speech(text: str) -> bytes:
    """Real speech for the caller: the offline engine's voice at 8 kHz μ-law, as a phone would send it."""
    async with OfflineEngine() as engine:
        pcm = await collect_pcm(engine.stream(text, voice="xiaochen"))
    rs = StreamResampler(24000, 8000)
    return lin2ulaw(rs.process(pcm) + rs.flush())


def media(payload: bytes, seq: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(seq),
                "timestamp": str(seq * 20),
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": STREAM_SID,
        }
    )


async def fake_call(
    app: object, listen_ms: float, speech: bytes
) -> tuple[list[tuple[float, dict]], float, float]:
    """A fake Twilio call: listen to ``listen_ms`` of the bot, talk over it, then 3 s of silence.

    Returns the events received (with their arrival times) and when the caller's speech started and ended.
    """
    events: list[tuple[float, dict]] = []
    with ThreadedServer(app, lifespan="on") as srv:
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:

            async def receive() -> None:
                async for message in ws:
                    events.append((time.monotonic(), json.loads(message)))

            reader = asyncio.create_task(receive())
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "streamSid": STREAM_SID,
                "callSid": "CA00000000000000000000000000000001",
                "accountSid": "AC00000000000000000000000000000001",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {},
            }
            await ws.send(
                json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": STREAM_SID})
            )

            seq = 2
            clock = time.monotonic()

            async def send(payload: bytes) -> None:  # one packet every 20 ms, like a phone line
                nonlocal seq, clock
                await ws.send(media(payload, seq))
                seq += 1
                clock += 0.02
                await asyncio.sleep(max(0.0, clock - time.monotonic()))

            def outbound_ms() -> float:
                return (
                    sum(
                        len(base64.b64decode(e["media"]["payload"]))
                        for _, e in events
                        if e["event"] == "media"
                    )
                    / 8
                )

            # the caller listens to the greeting for listen_ms of received audio
            deadline = time.monotonic() + 20
            while outbound_ms() < listen_ms:
                assert time.monotonic() < deadline, "no greeting"
                await send(SILENCE)
            # then talks over the bot
            speech_started = time.monotonic()
            for i in range(0, len(speech) - PACKET + 1, PACKET):
                await send(speech[i : i + PACKET])
            speech_ended = time.monotonic()
            for _ in range(150):  # 3 s of silence: VAD ends the turn, the bot answers
                await send(SILENCE)
            await ws.close()
            await reader

    return events, speech_started, speech_ended


async def test_twilio_call_greets_stops_on_barge_in_and_answers() -> None:
    speech = await caller_speech("你好，我想查一下我这个月的信用卡账单。")
    app = create_app(BotConfig())  # scripted flow, offline engine behind the local server
    events, speech_started, speech_ended = await fake_call(app, 1500, speech)
    greeting_ms = (
        sum(
            len(base64.b64decode(e["media"]["payload"]))
            for t, e in events
            if e["event"] == "media" and t < speech_started
        )
        / 8
    )
    kinds = [e["event"] for _, e in events]
    assert "clear" in kinds
    t_clear = next(t for t, e in events if e["event"] == "clear")
    assert all(e.get("streamSid") == STREAM_SID for _, e in events)
    # the greeting arrived as 8 kHz μ-law media that decodes to real audio
    greeting = [e for t, e in events if e["event"] == "media" and t < speech_started]
    audio = np.frombuffer(
        ulaw2lin(b"".join(base64.b64decode(e["media"]["payload"]) for e in greeting)), "<i2"
    )
    assert greeting_ms >= 1500 and np.abs(audio).max() > 1000
    # barge-in: `clear` soon after the caller started speaking, and no bot audio until the caller stopped
    barge_in_s = t_clear - speech_started
    after_clear = [t for t, e in events if e["event"] == "media" and t > t_clear]
    silent_until = (after_clear[0] if after_clear else float("inf")) - t_clear
    print(
        f"clear {barge_in_s * 1000:.0f} ms after the caller started;"
        f" bot silent {silent_until * 1000:.0f} ms after it"
    )
    assert 0 < barge_in_s < BARGE_IN_BOUND_S
    assert after_clear and after_clear[0] > speech_ended  # nothing from the greeting after the clear
    # the scripted answer came after the caller's turn: at least a second of it
    answer = [e for t, e in events if e["event"] == "media" and t > speech_ended]
    assert sum(len(base64.b64decode(e["media"]["payload"])) for e in answer) >= 8000


async def piece_ms(text: str) -> float:
    """How long the offline engine speaks ``text``."""
    async with OfflineEngine() as engine:
        samples = len(await collect_pcm(engine.stream(text), whole_samples=True)) // 2
    return 1000 * samples / engine.sample_rate


async def test_after_barge_in_mid_reply_the_context_holds_only_the_pieces_played() -> None:
    """Through the real output transport (Twilio serializer over a WebSocket): the streamed greeting is
    cut into the core segmenter's pieces; the caller talks over it during its second piece."""
    segmenter = Segmenter()
    tokens = [f.text for f in streamed_reply(GREETING) if isinstance(f, LLMTextFrame)]
    pieces = [p for t in tokens for p in segmenter.push(t)] + segmenter.flush()
    assert len(pieces) >= 2
    first_ms = await piece_ms(pieces[0])
    speech = await caller_speech("等一下，我想挂失。")
    app = create_app(BotConfig())
    events, _, _ = await fake_call(app, first_ms + 1000, speech)
    t_clear = next(t for t, e in events if e["event"] == "clear")
    played_ms = (
        sum(
            len(base64.b64decode(e["media"]["payload"]))
            for t, e in events
            if e["event"] == "media" and t < t_clear
        )
        / 8
    )
    messages = app.state.contexts[0].get_messages()
    said = messages[0]
    assert said["role"] == "assistant"
    # whole pieces, those whose audio went out before the clear, and not the rest of the reply
    heard = [k for k in range(1, len(pieces)) if said["content"] == "".join(pieces[:k])]
    assert heard, (said["content"], pieces)
    k = heard[0]
    assert sum([await piece_ms(p) for p in pieces[:k]]) <= played_ms + 40
    assert played_ms < sum([await piece_ms(p) for p in pieces[: k + 1]])
    assert said["content"] != GREETING and "，" in said["content"]  # punctuation kept, nothing inserted


async def test_the_real_mode_greeting_enters_the_context_once() -> None:
    """Real mode greets with a TTSSpeakFrame into an empty context (it used to be seeded there too)."""
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
    from pipecat.tests.utils import run_test

    with local_server(tokens=["k" * 16]) as srv:
        config = BotConfig(
            zai_api_key="not-used",
            deepgram_api_key="not-used",
            tts_base_url=srv.base_url,
            tts_api_key="k" * 16,
        )
        assert config.real
        context = new_context()
        await run_test(
            Pipeline([build_tts(config, None, None), LLMAssistantAggregator(context)]),
            frames_to_send=greeting_frames(config),
        )
    assert context.get_messages() == [{"role": "assistant", "content": GREETING}]


async def test_a_zai_key_alone_runs_the_scripted_flow_and_one_line_names_the_missing_key() -> None:
    """Real mode needs every key it uses: with ZAI_API_KEY but no DEEPGRAM_API_KEY the call runs the
    scripted flow on the offline engine (it used to go real and hand Deepgram no key)."""
    from loguru import logger

    assert BotConfig().missing_keys == ["ZAI_API_KEY", "DEEPGRAM_API_KEY"] and not BotConfig().real
    assert BotConfig(zai_api_key="z", deepgram_api_key="d").real
    config = BotConfig(zai_api_key="zai-key-not-used")
    assert config.missing_keys == ["DEEPGRAM_API_KEY"] and not config.real
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{level} {message}")
    try:
        app = create_app(config)
    finally:
        logger.remove(sink)
    assert lines == ["WARNING scripted flow on the offline engine: DEEPGRAM_API_KEY not set\n"]
    events, _, _ = await fake_call(app, 500, b"")  # the scripted greeting, from the local server
    greeting = [e for _, e in events if e["event"] == "media"]
    audio = np.frombuffer(
        ulaw2lin(b"".join(base64.b64decode(e["media"]["payload"]) for e in greeting)), "<i2"
    )
    assert len(audio) >= 8000 // 2 and np.abs(audio).max() > 1000
