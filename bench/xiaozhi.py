"""A xiaozhi-esp32 device against our bridge and against a bridge built the xiaozhi-esp32-server way.

Run: ``.venv/bin/python -m bench.xiaozhi [--turns 12]``. One fake device (real 16 kHz Opus speech in
60 ms packets, real time; it models the firmware's playback: packets play back to back from their
arrival) talks to three servers in one run, turns interleaved, both speaking the same scripted replies
through the same local GLM-TTS stand-in (offline engine, 300 ms first byte, real-time factor 0.5):

* ours: ``examples/xiaozhi_speaker`` (Pipecat, ``GLMHttpTTSService`` streaming each sentence, Opus per
  60 ms frame as audio arrives, the core's ``pace`` with a 300 ms pre-buffer, abort = interruption);
* ours on the core alone: the README's custom-bridge snippet (``Synthesizer(encoding="opus")`` + ``pace``,
  barge-in = cancelling the task) in a bare Starlette endpoint;
* xiaozhi-esp32-server's way (``core/handle`` + its TTS providers, re-created here without Pipecat):
  the first piece cut at the first ，、,。？?！!；;：, each piece synthesized whole, then encoded to 60 ms
  Opus (24 kbps, complexity 10) and sent 5 packets at once, then one per 60 ms on absolute monotonic
  deadlines from the reply's start; abort sets a flag that the sender checks per packet, clears the
  queues and sends ``tts stop``, while the synthesis already running finishes and is thrown away.

Per turn the device sends ``listen stop`` after its speech and ``abort`` 1.5 s after the first packet.
Measured: ``listen stop`` -> first packet; ``abort`` -> last packet received; stale audio on the device at
the abort (what it still had to play); how long the TTS request kept running after the abort; the longest
gap in playback before the abort. CPU per second of audio for encoding is measured separately, on the
same 10 s of speech, for each way's encoder settings (libopus through PyAV for both: the reference's
``opuslib_next`` needs a system libopus).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect

from examples.xiaozhi_speaker.bot import BotConfig, create_app
from glmtts_plugins import CloudEngine, OfflineEngine, Synthesizer, pace
from glmtts_plugins.audio import OpusEncoder, StreamResampler
from glmtts_plugins.server import LocalServer, ThreadedServer

TOKEN = "bench-token"
FRAME_MS = 60
RATE = 24000
FAULTS = "first_byte_ms=300;rtf=0.5"
ABORT_AFTER_S = 1.5
REPLIES = (
    "好的，我帮您看一下。明天北京晴转多云，最高气温二十三度，最低十一度，适合出门。",
    "没问题，已经帮您设好明天早上七点的闹钟。需要我顺便提醒您带伞吗？",
    "这首歌叫《晴天》，是周杰伦在二零零三年发行的，收录在专辑《叶惠美》里。",
)
FIRST_CUT = "，、,。？?！!；;："
SENTENCE_END = "。？?！!；;"


# -- the xiaozhi-esp32-server way ------------------------------------------------------------------


def reference_pieces(text: str) -> list[str]:
    """The first piece cut at the first pause punctuation, the rest at sentence ends."""
    pieces: list[str] = []
    current = ""
    for ch in text:
        current += ch
        if ch in (FIRST_CUT if not pieces else SENTENCE_END):
            pieces.append(current)
            current = ""
    return [*pieces, current] if current.strip() else pieces


class ReferenceConnection:
    """One device connection handled the way xiaozhi-esp32-server does it."""

    def __init__(self, ws: WebSocket, engine: CloudEngine) -> None:
        self.ws, self.engine = ws, engine
        self.audio: asyncio.Queue[tuple[str, list[bytes]] | None] = asyncio.Queue()
        self.abort = False
        self.reply = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self.ws.accept()
        sender = asyncio.create_task(self.send_audio())
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is None:
                    continue  # device audio: the scripted replies need no ASR
                msg = json.loads(message["text"])
                if msg.get("type") == "hello":
                    params = {"format": "opus", "sample_rate": RATE, "channels": 1, "frame_duration": 60}
                    hello = {"type": "hello", "transport": "websocket", "session_id": str(uuid.uuid4())}
                    await self.ws.send_text(json.dumps({**hello, "audio_params": params}))
                elif msg.get("type") == "listen" and msg.get("state") == "stop":
                    self.abort = False
                    text = REPLIES[self.reply % len(REPLIES)]
                    self.reply += 1
                    task = asyncio.create_task(self.synthesize(text, self.reply))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                elif msg.get("type") == "abort":
                    self.abort = True
                    while not self.audio.empty():
                        self.audio.get_nowait()
                    await self.ws.send_text(json.dumps({"type": "tts", "state": "stop"}))
        except WebSocketDisconnect:
            return
        finally:
            sender.cancel()
            for task in list(self.tasks):
                task.cancel()

    async def synthesize(self, text: str, reply: int) -> None:
        """The TTS thread: each piece synthesized whole, then encoded; skipped once aborted."""
        encoder = OpusEncoder(RATE, FRAME_MS, bitrate=24000, complexity=10)
        pieces = reference_pieces(text)
        for i, piece in enumerate(pieces):
            pcm = bytearray()
            async for chunk in self.engine.stream(piece):
                pcm += chunk  # the whole piece before anything is encoded
            if self.abort or reply != self.reply:
                return  # the finished synthesis is thrown away
            pcm += bytes(-len(pcm) % encoder.frame_bytes)
            packets = [
                encoder.encode(bytes(pcm[j : j + encoder.frame_bytes]))
                for j in range(0, len(pcm), encoder.frame_bytes)
            ]
            self.audio.put_nowait((piece, packets))
            if i == len(pieces) - 1:
                self.audio.put_nowait(None)

    async def send_audio(self) -> None:
        """5 packets at once, then one per 60 ms on absolute deadlines from the reply's start."""
        start = None
        sent = 0
        while True:
            item = await self.audio.get()
            if item is None:
                if start is not None and not self.abort:
                    await self.ws.send_text(json.dumps({"type": "tts", "state": "stop"}))
                start, sent = None, 0
                continue
            piece, packets = item
            if start is None:
                start = time.monotonic()
                await self.ws.send_text(json.dumps({"type": "tts", "state": "start"}))
            await self.ws.send_text(json.dumps({"type": "tts", "state": "sentence_start", "text": piece}))
            for packet in packets:
                if self.abort:
                    start, sent = None, 0  # the next reply starts its own clock
                    break
                if sent >= 5:
                    await asyncio.sleep(max(0.0, start + (sent - 5) * FRAME_MS / 1000 - time.monotonic()))
                    if self.abort:
                        start, sent = None, 0
                        break
                await self.ws.send_bytes(packet)
                sent += 1


def reference_app(base_url: str) -> Starlette:
    engines: list[CloudEngine] = []

    async def endpoint(ws: WebSocket) -> None:
        async with CloudEngine(api_key=TOKEN, base_url=base_url) as engine:
            engines.append(engine)
            await ReferenceConnection(ws, engine).run()

    return Starlette(routes=[WebSocketRoute("/xiaozhi/v1/", endpoint)])


# -- a custom bridge on the core alone (the README's snippet) -----------------------------------------


def core_app(base_url: str) -> Starlette:
    """The README's custom-bridge snippet as a server: ``Synthesizer(encoding="opus")`` + ``pace``."""

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        async with CloudEngine(api_key=TOKEN, base_url=base_url) as engine:
            synth = Synthesizer(engine, sample_rate=RATE, encoding="opus", frame_ms=FRAME_MS)

            async def speak(llm_tokens: list[str]) -> None:  # the snippet, with Starlette's send names
                await ws.send_text(json.dumps({"type": "tts", "state": "start"}))
                sentence = -1
                try:
                    async with contextlib.aclosing(
                        pace(synth.speak_stream(llm_tokens), prebuffer_ms=300)
                    ) as frames:
                        async for frame in frames:
                            if frame.segment_index != sentence:
                                sentence = frame.segment_index
                                start = {"type": "tts", "state": "sentence_start", "text": frame.segment_text}
                                await ws.send_text(json.dumps(start))
                            await ws.send_bytes(frame.audio)
                    await asyncio.sleep(0.3)
                finally:
                    await ws.send_text(json.dumps({"type": "tts", "state": "stop"}))

            task: asyncio.Task[None] | None = None
            replies = 0
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("text") is None:
                        continue  # device audio: the scripted replies need no ASR
                    msg = json.loads(message["text"])
                    if msg.get("type") == "hello":
                        params = {"format": "opus", "sample_rate": RATE, "channels": 1, "frame_duration": 60}
                        hello = {"type": "hello", "transport": "websocket", "session_id": str(uuid.uuid4())}
                        await ws.send_text(json.dumps({**hello, "audio_params": params}))
                    elif msg.get("type") == "listen" and msg.get("state") == "stop":
                        text = REPLIES[replies % len(REPLIES)]
                        replies += 1
                        tokens = [text[i : i + 6] for i in range(0, len(text), 6)]  # as an LLM streams it
                        task = asyncio.create_task(speak(tokens))
                    elif msg.get("type") == "abort" and task is not None:
                        task.cancel()  # barge-in: the snippet's finally sends tts stop
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    return Starlette(routes=[WebSocketRoute("/xiaozhi/v1/", endpoint)])


# -- the fake device --------------------------------------------------------------------------------


@dataclass
class Turn:
    first_packet_ms: float
    abort_to_last_packet_ms: float
    abort_to_stop_ms: float
    stale_ms: float
    request_after_abort_ms: float
    longest_gap_ms: float


@dataclass
class Device:
    ws: ClientConnection
    events: list[tuple[float, str, Any]] = field(default_factory=list)  # (time, kind, JSON or audio)

    async def read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                kind = "json" if isinstance(message, str) else "audio"
                self.events.append(
                    (time.monotonic(), kind, json.loads(message) if kind == "json" else message)
                )

    async def wait(self, predicate: Callable[[str, Any], bool], within: float, after: float) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for t, kind, payload in self.events:
                if t >= after and predicate(kind, payload):
                    return t
            await asyncio.sleep(0.002)
        raise TimeoutError("the server did not answer")


def playback(audio_times: list[float], at: float) -> tuple[float, float]:
    """(stale ms at ``at``, longest gap in playback before ``at``) for packets played back to back."""
    playing_until, gap = 0.0, 0.0
    for t in audio_times:
        if t > at:
            break
        if playing_until and t > playing_until:
            gap = max(gap, t - playing_until)
        playing_until = max(playing_until, t) + FRAME_MS / 1000
    return max(0.0, 1000 * (playing_until - at)), 1000 * gap


async def run_turn(device: Device, speech: list[bytes], tts_server: LocalServer) -> Turn:
    await device.ws.send(json.dumps({"type": "listen", "state": "start", "mode": "manual"}))
    clock = time.monotonic()
    for p in speech:
        await device.ws.send(p)
        clock += FRAME_MS / 1000
        await asyncio.sleep(max(0.0, clock - time.monotonic()))
    await device.ws.send(json.dumps({"type": "listen", "state": "stop"}))
    t_stop = time.monotonic()
    first = await device.wait(lambda k, _: k == "audio", 20, t_stop)
    await asyncio.sleep(max(0.0, first + ABORT_AFTER_S - time.monotonic()))
    t_abort = time.monotonic()
    running = [r for r in tts_server.records if r.outcome == "running"]
    await device.ws.send(json.dumps({"type": "abort"}))
    stop = await device.wait(lambda k, p: k == "json" and p.get("state") == "stop", 10, t_abort)
    await asyncio.sleep(3.0)  # late packets, and the reference's synthesis running on
    audio = [t for t, k, _ in device.events if k == "audio" and t >= t_stop]
    stale, gap = playback(audio, t_abort)
    ended = [r.ended for r in running if r.ended is not None]
    return Turn(
        first_packet_ms=1000 * (first - t_stop),
        abort_to_last_packet_ms=max(0.0, 1000 * (max(audio) - t_abort)),
        abort_to_stop_ms=1000 * (stop - t_abort),
        stale_ms=stale,
        request_after_abort_ms=max([1000 * (e - t_abort) for e in ended], default=0.0),
        longest_gap_ms=gap,
    )


async def device_speech() -> list[bytes]:
    pcm = bytearray()
    async with OfflineEngine() as engine:
        async for chunk in engine.stream("明天天气怎么样？", voice="xiaochen"):
            pcm += chunk
    rs = StreamResampler(24000, 16000)
    pcm16 = rs.process(bytes(pcm)) + rs.flush()
    enc = OpusEncoder(16000, FRAME_MS)
    pcm16 += bytes(-len(pcm16) % enc.frame_bytes)
    return [enc.encode(pcm16[i : i + enc.frame_bytes]) for i in range(0, len(pcm16), enc.frame_bytes)]


async def encode_cpu_ms_per_s(*, bitrate: int | None = None, complexity: int = 10) -> float:
    """Median CPU per second of audio to encode 10 s of 24 kHz speech in 60 ms frames."""
    pcm = bytearray()
    async with OfflineEngine() as engine:
        for text in REPLIES:
            async for chunk in engine.stream(text):
                pcm += chunk
    enc = OpusEncoder(RATE, FRAME_MS, bitrate=bitrate, complexity=complexity)
    pcm = pcm[: 10 * RATE * 2]
    frames = [
        bytes(pcm[i : i + enc.frame_bytes]) for i in range(0, len(pcm) - enc.frame_bytes + 1, enc.frame_bytes)
    ]
    seconds = len(frames) * FRAME_MS / 1000
    runs = []
    for _ in range(7):
        enc.reset()
        t = time.process_time()
        for f in frames:
            enc.encode(f)
        runs.append(1000 * (time.process_time() - t) / seconds)
    return statistics.median(runs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=12)
    args = parser.parse_args()
    speech = await device_speech()
    results: dict[str, list[Turn]] = {"ours": [], "core": [], "reference": []}
    with LocalServer(OfflineEngine(), tokens=[TOKEN], faults=FAULTS) as tts_server:
        ours = create_app(BotConfig(script=REPLIES, tts_base_url=tts_server.base_url, tts_api_key=TOKEN))
        with (
            ThreadedServer(ours, lifespan="on") as a,
            ThreadedServer(core_app(tts_server.base_url)) as c,
            ThreadedServer(reference_app(tts_server.base_url)) as b,
        ):
            devices = {}
            async with contextlib.AsyncExitStack() as stack:
                for name, port in (("ours", a.port), ("core", c.port), ("reference", b.port)):
                    ws = await stack.enter_async_context(
                        connect(
                            f"ws://127.0.0.1:{port}/xiaozhi/v1/", additional_headers={"Protocol-Version": "1"}
                        )
                    )
                    device = Device(ws)
                    reader = asyncio.create_task(device.read())
                    stack.callback(reader.cancel)
                    params = {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
                    await ws.send(json.dumps({"type": "hello", "version": 1, "audio_params": params}))
                    await device.wait(lambda k, p: k == "json" and p.get("type") == "hello", 10, 0)
                    devices[name] = device
                for _ in range(args.turns):
                    for name, device in devices.items():
                        results[name].append(await run_turn(device, speech, tts_server))
    cpu = {
        "ours": await encode_cpu_ms_per_s(),
        "core": await encode_cpu_ms_per_s(),
        "reference": await encode_cpu_ms_per_s(bitrate=24000, complexity=10),
    }
    names = {
        "ours": "ours (examples/xiaozhi_speaker: streaming TTS, pace 300 ms)",
        "core": "ours, core only (the README's custom-bridge snippet)",
        "reference": "xiaozhi-esp32-server way (whole sentence, 5 at once + 1/60 ms)",
    }
    print(f"xiaozhi device, {args.turns} turns per server, TTS stand-in {FAULTS}, abort {ABORT_AFTER_S} s in")
    print()
    print(
        "| server | listen stop -> first packet | abort -> last packet | abort -> tts stop"
        " | stale audio at abort | TTS request running after abort | longest playback gap"
        " | encode CPU per s of audio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, turns in results.items():

        def med(attr: str, turns: list[Turn] = turns) -> float:
            median: float = statistics.median(getattr(t, attr) for t in turns)
            return median

        worst = max(t.stale_ms for t in turns)
        print(
            f"| {names[name]} | {med('first_packet_ms'):.0f} ms | {med('abort_to_last_packet_ms'):.0f} ms"
            f" | {med('abort_to_stop_ms'):.1f} ms | {med('stale_ms'):.0f} ms (max {worst:.0f})"
            f" | {med('request_after_abort_ms'):.0f} ms"
            f" | {med('longest_gap_ms'):.0f} ms (max {max(t.longest_gap_ms for t in turns):.0f})"
            f" | {cpu[name]:.2f} ms |"
        )
    o, r = results["ours"], results["reference"]
    ratio = statistics.median(t.first_packet_ms for t in r) / statistics.median(t.first_packet_ms for t in o)
    print()
    print(f"first packet: the reference way takes {ratio:.1f}x as long (medians)")


if __name__ == "__main__":
    asyncio.run(main())
