"""The xiaozhi-esp32 speaker example, played by a fake device: real Opus, real time, aborts.

The fake device does what the firmware does on the wire: the connection headers, ``hello``, ``listen``
messages, 60 ms Opus packets of real speech paced in real time, ``abort``. It models the firmware's
playback (packets play back to back from their arrival) to measure the stale audio an abort leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("pipecat")
pytest.importorskip("av")
websockets = pytest.importorskip("websockets.asyncio.client")
from pipecat_glmtts.xiaozhi import pack, unpack  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from examples.xiaozhi_speaker.bot import BotConfig, create_app  # noqa: E402
from glmtts_plugins import OfflineEngine  # noqa: E402
from glmtts_plugins.audio import OpusDecoder, OpusEncoder, StreamResampler  # noqa: E402
from glmtts_plugins.server import LocalServer, ThreadedServer  # noqa: E402

from .conftest import collect_pcm, local_server  # noqa: E402

TOKEN = "device-token-3f9a"
KEY = "local-key-7c1d"
PREBUFFER_MS = 300
FRAME_MS = 60
SCRIPT = ("好的，我在听。今天天气晴，适合散步。", "没问题。闹钟设好了。")
ABORT_TO_STOP_BOUND_S = 0.5  # measured ~10 ms; generous for a loaded machine
SLACK_MS = 40  # scheduling jitter on a loaded machine, on top of pre-buffer + one frame


_speech: list[bytes] = []


async def device_speech() -> list[bytes]:
    """What a device microphone sends: real speech (the offline voice) as 16 kHz Opus, 60 ms packets."""
    if not _speech:
        async with OfflineEngine() as engine:
            pcm = await collect_pcm(engine.stream("明天早上七点叫我起床。", voice="xiaochen"))
        rs = StreamResampler(24000, 16000)
        pcm16 = rs.process(pcm) + rs.flush()
        enc = OpusEncoder(16000, FRAME_MS)
        pcm16 += bytes(-len(pcm16) % enc.frame_bytes)
        _speech.extend(
            enc.encode(pcm16[i : i + enc.frame_bytes]) for i in range(0, len(pcm16), enc.frame_bytes)
        )
    return _speech


@dataclass
class Event:
    t: float
    kind: str  # "json" | "audio"
    message: dict = field(default_factory=dict)
    packet: bytes = b""


class FakeDevice:
    """A xiaozhi-esp32 device on the wire."""

    def __init__(self, ws: object, version: int) -> None:
        self.ws = ws
        self.version = version
        self.events: list[Event] = []
        self.hello: dict | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:  # type: ignore[attr-defined]
            now = time.monotonic()
            if isinstance(message, str):
                self.events.append(Event(now, "json", json.loads(message)))
            else:
                kind, payload = unpack(message, self.version)
                assert kind == 0
                self.events.append(Event(now, "audio", packet=payload))

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))  # type: ignore[attr-defined]

    async def start(self, version_in_hello: int = 1) -> dict:
        await self.send(
            {
                "type": "hello",
                "version": version_in_hello,
                "features": {"mcp": True},
                "transport": "websocket",
                "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
            }
        )
        hello = await self.wait(lambda e: e.kind == "json" and e.message.get("type") == "hello", 10)
        return hello.message

    async def speak(self, packets: list[bytes], *, mode: str = "manual", stop: bool = True) -> float:
        """listen start, the packets in real time, listen stop; returns when the turn ended."""
        await self.send({"session_id": "", "type": "listen", "state": "start", "mode": mode})
        await self.stream(packets)
        if stop:
            await self.send({"session_id": "", "type": "listen", "state": "stop"})
        return time.monotonic()

    async def stream(self, packets: list[bytes]) -> None:
        clock = time.monotonic()
        for p in packets:
            await self.ws.send(pack(p, self.version, timestamp_ms=0))  # type: ignore[attr-defined]
            clock += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, clock - time.monotonic()))

    async def wait(self, predicate: Callable[[Event], bool], within: float, *, after: float = 0.0) -> Event:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for e in self.events:
                if e.t >= after and predicate(e):
                    return e
            await asyncio.sleep(0.005)
        raise AssertionError(
            f"timed out; last events: {[e.message or len(e.packet) for e in self.events[-5:]]}"
        )

    def since(self, t: float, until: float = float("inf")) -> list[Event]:
        return [e for e in self.events if t <= e.t < until]

    async def close(self) -> None:
        await self.ws.close()  # type: ignore[attr-defined]
        await self._reader


def tts(state: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "json" and e.message.get("type") == "tts" and e.message.get("state") == state


def stale_ms(events: list[Event], at: float) -> float:
    """Audio the device holds, not yet played, at ``at`` (it plays packets back to back from arrival)."""
    playing_until = 0.0
    for e in events:
        if e.kind == "audio" and e.t <= at:
            playing_until = max(playing_until, e.t) + FRAME_MS / 1000
    return max(0.0, 1000 * (playing_until - at))


def stale_after_stop(events: list[Event]) -> list[str]:
    """What came between a ``tts stop`` and the next ``tts start`` that belongs to a reply: audio packets
    and ``sentence_start`` messages (each as ``"<index> <what>"``); empty when nothing did."""
    stale = []
    stopped = False
    for i, e in enumerate(events):
        if tts("stop")(e):
            stopped = True
        elif tts("start")(e):
            stopped = False
        elif stopped and (e.kind == "audio" or tts("sentence_start")(e)):
            stale.append(f"{i} {'audio packet' if e.kind == 'audio' else e.message}")
    return stale


def check_reply(events: list[Event], script_reply: str, rate: int = 24000) -> np.ndarray:
    """tts start, then sentence_start before each sentence's packets, packets, tts stop: the audio."""
    kinds = [(e.kind, e.message.get("state")) for e in events]
    assert kinds[0] == ("json", "start"), kinds[:3]
    assert kinds[1] == ("json", "sentence_start"), kinds[:3]
    assert kinds[-1] == ("json", "stop")
    sentences = [e.message["text"] for e in events if e.message.get("state") == "sentence_start"]
    assert len(sentences) >= 2 and "".join(sentences) == script_reply
    # each sentence_start is followed by that sentence's audio before the next one
    for i, e in enumerate(events):
        if e.message.get("state") == "sentence_start":
            assert events[i + 1].kind == "audio"
    packets = [e.packet for e in events if e.kind == "audio"]
    dec = OpusDecoder(rate)
    audio = np.frombuffer(b"".join(dec.decode(p) for p in packets) + dec.flush(), "<i2")
    assert len(audio) == len(packets) * rate * FRAME_MS // 1000
    return audio


def speech_share(audio: np.ndarray, rate: int = 24000) -> float:
    """Share of 100 ms windows that carry speech energy (not silence)."""
    win = rate // 10
    rms = [np.sqrt(np.mean(audio[i : i + win].astype(float) ** 2)) for i in range(0, len(audio) - win, win)]
    return float(np.mean(np.array(rms) > 500))


class Served:
    """The example app, remembering the server's event loop so the test can count its tasks."""

    def __init__(self, app: object) -> None:
        self.app = app
        self.state = app.state  # type: ignore[attr-defined]
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)  # type: ignore[operator]


def server_tasks(app: Served) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    assert app.loop is not None
    return asyncio.run_coroutine_threadsafe(count(), app.loop).result(5)


def connect(port: int, version: int | None = 1, token: str | None = TOKEN, **kw: object):  # type: ignore[no-untyped-def]
    headers = {"Device-Id": "aa:bb:cc:dd:ee:ff", "Client-Id": "3c1b0d2e-0000-4000-8000-000000000001"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if version is not None:
        headers["Protocol-Version"] = str(version)
    return websockets.connect(f"ws://127.0.0.1:{port}/xiaozhi/v1/", additional_headers=headers, **kw)


@pytest.fixture
def tts_server():
    """GLM-TTS's stand-in, streaming at twice real time like the cloud (so a reply is still being
    synthesized when the user aborts it)."""
    with local_server(OfflineEngine(), tokens=[KEY], faults="rtf=0.5") as srv:
        yield srv


def app_with(**kw: object) -> Served:
    return Served(create_app(BotConfig(token=TOKEN, script=SCRIPT, prebuffer_ms=PREBUFFER_MS, **kw)))  # type: ignore[arg-type]


async def test_manual_turn_then_abort_mid_reply(tts_server: LocalServer) -> None:
    speech = await device_speech()
    app = app_with(tts_base_url=tts_server.base_url, tts_api_key=KEY)
    with ThreadedServer(app, lifespan="on") as srv:
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            hello = await device.start()
            assert hello["transport"] == "websocket" and hello["session_id"]
            assert hello["audio_params"] == {
                "format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60
            }  # fmt: skip

            # turn 1: the whole reply
            t_stop = await device.speak(speech)
            stop = await device.wait(tts("stop"), 30, after=t_stop)
            reply = device.since(t_stop, stop.t + 1e-6)
            audio = check_reply(reply, SCRIPT[0])
            first_packet = next(e.t for e in reply if e.kind == "audio")
            assert speech_share(audio) > 0.5 and len(audio) / 24000 > 1.5
            assert max(stale_ms(reply, e.t) for e in reply) <= PREBUFFER_MS + FRAME_MS + SLACK_MS  # paced
            tasks_after_turn_1 = server_tasks(app)

            # turn 2: abort once the device has played ~0.8 s of the reply
            t_stop2 = await device.speak(speech)
            first = await device.wait(lambda e: e.kind == "audio", 30, after=t_stop2)
            await asyncio.sleep(0.8)
            t_abort = time.monotonic()
            stale = stale_ms(device.since(t_stop2), t_abort)
            await device.send({"session_id": hello["session_id"], "type": "abort"})
            stop2 = await device.wait(tts("stop"), 5, after=t_abort)
            await asyncio.sleep(1.0)  # anything of the aborted reply would have come by now
            late = [e for e in device.since(stop2.t + 1e-6) if e.kind == "audio"]
            assert late == []
            assert await tts_server.wait_for(
                lambda: all(r.outcome != "running" for r in tts_server.records), 2
            )
            outcomes = [r.outcome for r in tts_server.records]
            tasks_after_abort = server_tasks(app)
            await device.close()
        assert await asyncio.to_thread(_wait, lambda: app.state.sessions == 0)

    print(
        f"listen stop -> first packet {1000 * (first_packet - t_stop):.0f} ms; abort -> tts stop"
        f" {1000 * (stop2.t - t_abort):.1f} ms; stale audio at abort {stale:.0f} ms; outcomes {outcomes}"
    )
    assert first.t > t_stop2
    assert stop2.t - t_abort < ABORT_TO_STOP_BOUND_S
    assert stale <= PREBUFFER_MS + FRAME_MS + SLACK_MS
    assert "disconnected" in outcomes  # the running request was closed, the server saw it
    assert tasks_after_abort <= tasks_after_turn_1


def _wait(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize(("header", "in_hello", "rate"), [(2, 1, 24000), (None, 3, 16000)])
async def test_protocol_versions_2_and_3(header: int | None, in_hello: int, rate: int) -> None:
    """Version 2 chosen by the Protocol-Version header, version 3 by the hello's version field; the
    server's Opus at 24 or 16 kHz, as announced in its hello."""
    speech = await device_speech()
    with ThreadedServer(app_with(sample_rate=rate), lifespan="on") as srv:  # the example's own local server
        async with connect(srv.port, version=header) as ws:
            version = header or in_hello
            device = FakeDevice(ws, version)
            hello = await device.start(version_in_hello=in_hello)
            assert hello["audio_params"]["sample_rate"] == rate
            t_stop = await device.speak(speech[:20])
            stop = await device.wait(tts("stop"), 30, after=t_stop)
            audio = check_reply(device.since(t_stop, stop.t + 1e-6), SCRIPT[0], rate)
            assert speech_share(audio, rate) > 0.5
            await device.close()


async def test_auto_mode_the_server_vad_ends_the_turn_and_hears_barge_in() -> None:
    speech = await device_speech()
    silence = OpusEncoder(16000, FRAME_MS)
    quiet = [silence.encode(bytes(silence.frame_bytes)) for _ in range(25)]  # 1.5 s
    with ThreadedServer(app_with(), lifespan="on") as srv:
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            await device.start()
            # auto: no listen stop; the VAD hears the speech end in the silence that follows
            t0 = await device.speak(speech + quiet, mode="auto", stop=False)
            start = await device.wait(tts("start"), 10, after=t0 - 1.6)
            assert start.t > t0 - 1.5 + 0.5  # not before the VAD's 0.6 s of silence
            # realtime: the user talks over the reply; the VAD hears it and the reply stops
            await device.send({"type": "listen", "state": "start", "mode": "realtime"})
            await device.wait(lambda e: e.kind == "audio", 10, after=start.t)
            t_talk = time.monotonic()
            talk = asyncio.create_task(device.stream(speech))
            stop = await device.wait(tts("stop"), 5, after=t_talk)
            assert stop.t - t_talk < 1.5  # VAD start_secs=0.2 plus pipeline time
            await talk
            await device.close()


async def test_real_mode_needs_every_key_it_uses_else_scripted_replies_and_one_line_names_it() -> None:
    """With ZAI_API_KEY but no DEEPGRAM_API_KEY (the default STT's) a session speaks the scripted replies on
    the offline engine (it used to go real and hand Deepgram no key); local Whisper needs no STT key."""
    from loguru import logger

    assert BotConfig(zai_api_key="z", deepgram_api_key="d").real
    assert BotConfig(zai_api_key="z", stt="whisper").real
    assert BotConfig(stt="whisper").missing_keys == ["ZAI_API_KEY"]
    assert BotConfig().missing_keys == ["ZAI_API_KEY", "DEEPGRAM_API_KEY"]
    speech = await device_speech()
    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{level} {message}")
    try:
        app = app_with(zai_api_key="zai-key-not-used")
    finally:
        logger.remove(sink)
    assert lines == ["WARNING scripted replies on the offline engine: DEEPGRAM_API_KEY not set\n"]
    with ThreadedServer(app, lifespan="on") as srv:
        assert app.state.local_server is not None  # the offline engine's server started with the app
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            await device.start()
            t_stop = await device.speak(speech[:10])
            stop = await device.wait(tts("stop"), 30, after=t_stop)
            check_reply(device.since(t_stop, stop.t + 1e-6), SCRIPT[0])
            await device.close()


async def test_a_wrong_or_missing_token_is_refused() -> None:
    with ThreadedServer(app_with(), lifespan="on") as srv:
        for token in (None, "wrong-token", TOKEN + "x"):
            with pytest.raises(InvalidStatus) as err:  # type: ignore[attr-defined]
                async with connect(srv.port, token=token):
                    pass
            assert err.value.response.status_code == 403
        with pytest.raises(InvalidStatus):  # type: ignore[attr-defined]
            async with connect(srv.port, version=7):
                pass
        async with connect(srv.port) as ws:  # the right one
            device = FakeDevice(ws, 1)
            assert (await device.start())["type"] == "hello"
            await device.close()


def test_beyond_loopback_the_app_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.xiaozhi_speaker import bot

    monkeypatch.delenv("XIAOZHI_TOKEN", raising=False)
    with pytest.raises(SystemExit) as err:
        bot.main(["--host", "0.0.0.0", "--port", "0"])
    assert err.value.code == 2


async def test_malformed_input_is_ignored_and_the_session_still_works() -> None:
    speech = await device_speech()
    app = app_with()
    with ThreadedServer(app, lifespan="on") as srv:
        async with connect(srv.port, version=2) as ws, connect(srv.port, version=3) as other_ws:
            other = FakeDevice(other_ws, 3)
            await other.start()
            device = FakeDevice(ws, 2)
            await ws.send(b"\x01\x02\x03 binary before the hello")
            await ws.send("not json {")
            await ws.send(json.dumps({"type": "listen", "state": "start"}))  # before hello
            await device.start()
            for junk in (
                "not json {",
                "[1, 2, 3]",
                json.dumps({"type": "dance"}),
                json.dumps({"type": "listen", "state": "jump"}),
                json.dumps({"type": "listen", "state": "start", "mode": "telepathy"}),
            ):
                await ws.send(junk)
            await ws.send(b"\x00\x02\x00\x00")  # shorter than a version-2 header
            await ws.send(pack(b"\x01" * 10, 3))  # a version-3 header on a version-2 session
            await ws.send(pack(b"\xff\xff\xff", 2))  # not Opus
            await ws.send(b"\x00\x02" + b"\x00" * 10 + b"\x00\x00\x00\x09" + b"abc")  # wrong payload size
            # a third device sends an oversized frame: only it is closed (1009)
            async with connect(srv.port) as big_ws:
                big = FakeDevice(big_ws, 1)
                await big.start()
                await big_ws.send(b"\x00" * 100_000)
                with pytest.raises(ConnectionClosed):  # type: ignore[attr-defined]
                    await asyncio.wait_for(big._reader, 5)
                assert big_ws.close_code == 1009
            async with connect(srv.port) as flood_ws:  # and one that floods junk: closed (1008)
                flood = FakeDevice(flood_ws, 1)
                await flood.start()
                for _ in range(101):
                    await flood_ws.send("{")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(flood._reader, 5)
                assert flood_ws.close_code == 1008

            async def turn(d: FakeDevice) -> None:
                t_stop = await d.speak(speech[:15])
                stop = await d.wait(tts("stop"), 30, after=t_stop)
                check_reply(d.since(t_stop, stop.t + 1e-6), SCRIPT[0])

            await asyncio.gather(turn(device), turn(other))  # both sessions still work
            assert app.state.sessions == 2
            await device.close()
            await other.close()


def _message_of_bytes(size: int, **fields: object) -> str:
    """A JSON text of exactly ``size`` UTF-8 bytes, padded with Chinese (3 bytes a character)."""
    base = len(json.dumps({**fields, "pad": ""}, ensure_ascii=False).encode())
    chars, ascii_ = divmod(size - base, 3)
    text = json.dumps({**fields, "pad": "好" * chars + "x" * ascii_}, ensure_ascii=False)
    assert len(text.encode()) == size and len(text) < size // 2
    return text


async def test_the_text_limit_counts_utf8_bytes_not_characters() -> None:
    """64 KiB of UTF-8 on the wire, whatever the characters: a Chinese message of exactly the limit is
    taken (it starts a turn, which gets a reply), one byte more closes the connection with 1009, and so
    does a Chinese hello over the limit (a third of it in characters)."""
    limit = 64 * 1024
    with ThreadedServer(app_with(), lifespan="on") as srv:
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            await device.start()
            t0 = time.monotonic()
            await ws.send(_message_of_bytes(limit, type="listen", state="start", mode="manual"))
            await device.send({"type": "listen", "state": "stop"})
            await device.wait(tts("start"), 30, after=t0)  # the turn was taken
            await device.wait(tts("stop"), 30, after=t0)
            await ws.send(_message_of_bytes(limit + 1, type="listen", state="detect", text="你好小智"))
            with pytest.raises(ConnectionClosed):  # type: ignore[attr-defined]
                await asyncio.wait_for(device._reader, 5)
            assert ws.close_code == 1009
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            hello = {
                "type": "hello",
                "version": 1,
                "transport": "websocket",
                "audio_params": {"format": "opus"},
            }
            await ws.send(_message_of_bytes(limit + 1, **hello))
            with pytest.raises(ConnectionClosed):  # type: ignore[attr-defined]
                await asyncio.wait_for(device._reader, 5)
            assert ws.close_code == 1009 and device.events == []  # no server hello


async def test_twenty_random_aborts_leave_no_stale_packet_task_or_request(tts_server: LocalServer) -> None:
    speech = await device_speech()
    app = app_with(tts_base_url=tts_server.base_url, tts_api_key=KEY)
    rng = random.Random(11)
    with ThreadedServer(app, lifespan="on") as srv:
        async with connect(srv.port) as ws:
            device = FakeDevice(ws, 1)
            await device.start()
            counts = []
            for i in range(20):
                await device.speak(speech[:3])
                await asyncio.sleep(rng.uniform(0.0, 0.8))  # before the first packet, or while playing
                t_abort = time.monotonic()
                await device.send({"type": "abort", **({"reason": "wake_word_detected"} if i % 2 else {})})
                stop = await device.wait(tts("stop"), 5, after=t_abort)
                assert stop.t - t_abort < ABORT_TO_STOP_BOUND_S
                counts.append(server_tasks(app))
            await asyncio.sleep(1.0)
            # after each tts stop, nothing until the next turn's tts start
            replies = [e for e in device.events if e.kind == "json" and e.message.get("type") == "tts"]
            for a, b in zip(device.events, device.events[1:], strict=False):
                if a.message.get("state") == "stop":
                    assert b.kind == "json", "a packet came after tts stop"
            assert stale_after_stop(device.events) == []  # every event up to the next tts start
            assert sum(1 for e in replies if e.message["state"] == "stop") >= 20
            assert await tts_server.wait_for(
                lambda: all(r.outcome != "running" for r in tts_server.records), 3
            )
            await device.close()
        assert await asyncio.to_thread(_wait, lambda: app.state.sessions == 0)
    print(f"server tasks after each abort: {counts}")
    assert max(counts[5:]) <= counts[4] + 2  # no growth with the number of aborts
    assert any(r.outcome == "disconnected" for r in tts_server.records)


async def test_the_speaker_shows_what_was_heard_and_orders_a_reply() -> None:
    """XiaozhiSpeaker alone in Pipecat's harness: stt for a transcription; tts start, sentence_start and
    packets in order (timestamps for the version-2 header), tts stop after the last packet."""
    from pipecat.frames.frames import (
        AggregatedTextFrame,
        OutputTransportMessageUrgentFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.tests.utils import SleepFrame, run_test
    from pipecat_glmtts.xiaozhi import XiaozhiPacket, XiaozhiSession, XiaozhiSpeaker

    session = XiaozhiSession(None, "s", 1, None, None, 16000, 24000, 60)  # type: ignore[arg-type]
    speaker = XiaozhiSpeaker(session, prebuffer_ms=120)
    sentence = AggregatedTextFrame("你好。", "sentence")
    sentence.will_be_spoken, sentence.context_id = True, "c1"
    tone = (np.sin(np.arange(24000 // 2) / 5) * 8000).astype("<i2").tobytes()  # 0.5 s
    down, _ = await run_test(
        speaker,
        frames_to_send=[
            TranscriptionFrame("明天天气怎么样", "user", "now"),
            sentence,
            TTSStartedFrame(context_id="c1"),
            TTSAudioRawFrame(tone, 24000, 1, context_id="c1"),
            TTSStoppedFrame(context_id="c1"),
            SleepFrame(1.2),
        ],
        expected_down_frames=None,
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
    )
    sent = [f.message for f in down if isinstance(f, OutputTransportMessageUrgentFrame)]
    assert sent[0] == {"type": "stt", "text": "明天天气怎么样"}
    assert sent[1] == {"type": "tts", "state": "start"}
    assert sent[2] == {"type": "tts", "state": "sentence_start", "text": "你好。"}
    packets = sent[3:-1]
    assert len(packets) == 9 and all(isinstance(p, XiaozhiPacket) for p in packets)  # ceil(500 / 60)
    assert [p.timestamp_ms for p in packets] == [60 * i for i in range(9)]
    assert sent[-1] == {"type": "tts", "state": "stop"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, -0.5, "300", True, None])
async def test_the_speaker_and_the_hello_refuse_bad_numbers_naming_the_field(bad: object) -> None:
    """Non-finite, negative and non-number values are refused at construction, each naming its field."""
    from pipecat_glmtts.xiaozhi import XiaozhiSession, XiaozhiSpeaker, accept_device

    from glmtts_plugins import InvalidRequestError

    session = XiaozhiSession(None, "s", 1, None, None, 16000, 24000, FRAME_MS)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError) as info:
        XiaozhiSpeaker(session, prebuffer_ms=bad)  # type: ignore[arg-type]
    assert info.value.field == "prebuffer_ms" and "prebuffer_ms" in str(info.value)
    for name in ("sample_rate", "frame_ms"):  # the session's numbers the speaker encodes with
        odd = dataclasses.replace(session, **{name: bad})
        with pytest.raises(InvalidRequestError) as info:
            XiaozhiSpeaker(odd)
        assert info.value.field == name and name in str(info.value)
    for name in ("hello_timeout", "sample_rate"):  # refused before the websocket is touched
        with pytest.raises(InvalidRequestError) as info:
            await accept_device(None, **{name: bad})  # type: ignore[arg-type]
        assert info.value.field == name and name in str(info.value)
    assert XiaozhiSpeaker(session, prebuffer_ms=0).prebuffer_ms == 0  # zero is a valid pre-buffer


async def test_interrupted_contexts_are_forgotten_once_a_new_one_begins_and_late_frames_still_dropped() -> (
    None
):
    """Thirty replies, each interrupted mid-way and followed by late frames of its context (a new sentence,
    audio, its stop: what was in flight from the TTS). None of the late frames reaches the device, and the
    speaker's set of interrupted contexts does not grow with the interruptions (it grew by one each)."""
    from pipecat.frames.frames import (
        AggregatedTextFrame,
        InterruptionFrame,
        OutputTransportMessageUrgentFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.tests.utils import SleepFrame, run_test
    from pipecat_glmtts.xiaozhi import XiaozhiPacket, XiaozhiSession, XiaozhiSpeaker

    session = XiaozhiSession(None, "s", 1, None, None, 16000, 24000, FRAME_MS)  # type: ignore[arg-type]
    speaker = XiaozhiSpeaker(session, prebuffer_ms=120)
    tone = (np.sin(np.arange(24000 // 2) / 5) * 8000).astype("<i2").tobytes()  # 0.5 s

    def sentence(text: str, context_id: str) -> AggregatedTextFrame:
        frame = AggregatedTextFrame(text, "sentence")
        frame.will_be_spoken, frame.context_id = True, context_id
        return frame

    replies = 30
    frames: list = []
    for i in range(replies):
        ctx = f"c{i}"
        frames += [
            sentence(f"第{i}句。", ctx),
            TTSStartedFrame(context_id=ctx),
            TTSAudioRawFrame(tone, 24000, 1, context_id=ctx),
            SleepFrame(0.08),  # tts start, the sentence and the pre-buffered packets are sent
            InterruptionFrame(),
            sentence(f"迟到{i}。", ctx),  # late: still in flight from the TTS when the interruption came
            TTSStartedFrame(context_id=ctx),
            TTSAudioRawFrame(tone, 24000, 1, context_id=ctx),
            TTSStoppedFrame(context_id=ctx),
            SleepFrame(0.02),
        ]
    down, _ = await run_test(
        speaker,
        frames_to_send=frames,
        expected_down_frames=None,
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
    )
    sent = [f.message for f in down if isinstance(f, OutputTransportMessageUrgentFrame)]
    said = [m["text"] for m in sent if isinstance(m, dict) and m.get("state") == "sentence_start"]
    assert said == [f"第{i}句。" for i in range(replies)]  # not one late sentence
    states = [m["state"] if isinstance(m, dict) else "audio" for m in sent]
    assert states.count("start") == states.count("stop") == replies
    after_stop = False
    for state in states:  # between a stop and the next start: nothing (no late packet)
        if state == "stop":
            after_stop = True
        elif state == "start":
            after_stop = False
        else:
            assert not after_stop, states
    assert sum(isinstance(m, XiaozhiPacket) for m in sent) >= replies
    assert speaker._dropped == {f"c{replies - 1}"}  # the last one's late frames are still dropped; no more


@pytest.mark.parametrize("mode", ["streamed turn (default)", "SENTENCE"])
async def test_each_sentence_start_carries_the_text_of_the_audio_after_it(mode: str) -> None:
    """The real GLM-TTS service into the speaker: in the default mode each core piece, in SENTENCE mode
    each of Pipecat's sentences, is announced with exactly its text before its first packet, and the
    packets up to the next announcement are exactly that text's audio (whole 60 ms frames)."""
    from pipecat.frames.frames import (
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        OutputTransportMessageUrgentFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.services.tts_service import TextAggregationMode
    from pipecat.tests.utils import SleepFrame, run_test
    from pipecat_glmtts import GLMHttpTTSService
    from pipecat_glmtts.xiaozhi import XiaozhiPacket, XiaozhiSession, XiaozhiSpeaker

    from glmtts_plugins.testing import ToneEngine

    class Recording(ToneEngine):
        def __init__(self) -> None:
            super().__init__(ms_per_char=30, gap_s=0.005)
            self.texts: list[str] = []

        async def _stream(self, text: str, **kw: object):  # type: ignore[no-untyped-def, override]
            self.texts.append(text)
            async for chunk in super()._stream(text, **kw):  # type: ignore[arg-type]
                yield chunk

    reply = "好的，我在听。今天天气晴，适合散步。没问题，闹钟设好了。"
    engine = Recording()
    sentence_mode = TextAggregationMode.SENTENCE if mode == "SENTENCE" else None
    tts = GLMHttpTTSService(engine=engine, text_aggregation_mode=sentence_mode)
    session = XiaozhiSession(None, "s", 1, None, None, 16000, 24000, FRAME_MS)  # type: ignore[arg-type]
    tokens = [reply[i : i + 3] for i in range(0, len(reply), 3)]
    frames = [LLMFullResponseStartFrame()]
    for t in tokens:
        frames += [LLMTextFrame(t), SleepFrame(0.01)]
    frames += [LLMFullResponseEndFrame(), SleepFrame(len(reply) * 0.03 + 1.5)]  # played out by then
    down, _ = await run_test(
        Pipeline([tts, XiaozhiSpeaker(session, prebuffer_ms=60)]),
        frames_to_send=frames,
        expected_down_frames=None,
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
    )
    sent = [f.message for f in down if isinstance(f, OutputTransportMessageUrgentFrame)]
    assert sent[0] == {"type": "tts", "state": "start"} and sent[-1] == {"type": "tts", "state": "stop"}
    said: list[str] = []
    packets: list[int] = []
    for m in sent[1:-1]:
        if isinstance(m, XiaozhiPacket):
            packets[-1] += 1
        else:
            assert m["state"] == "sentence_start", m
            said.append(m["text"])
            packets.append(0)
    assert "".join(said) == reply and len(said) >= 2
    requested = [t.strip() for t in engine.texts]
    if sentence_mode is None:
        assert said == requested  # one announcement per core piece, in order
    # the audio after each announcement is its text's, to the request: group the requests per text
    per_text: list[int] = []
    i = 0
    for text in said:
        got = ""
        samples_ = 0
        while got != text:
            got += requested[i]
            samples_ += len(engine.pcm(engine.texts[i])) // 2
            i += 1
        per_text.append(-(-samples_ // (24000 * FRAME_MS // 1000)))
    assert i == len(requested)
    assert packets == per_text, (said, packets, per_text)
