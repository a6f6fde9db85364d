"""GLMHttpTTSService against a service written the way Pipecat's built-in HTTP TTS services are.

Run: ``.venv/bin/python -m bench.pipecat_tts`` (``--part utterances|streamed|failover``, default all).

**utterances**: both services get the same ``CloudEngine`` against the same local server (tone engine,
20 ms events paced at real-time factor 0.5) and run in Pipecat's own ``run_test`` harness, interleaved:

* ``GLMHttpTTSService`` (this project): the core's per-utterance low-delay resampler, flushed at the end.
* "Pipecat-style": ``run_tts`` passes the engine's 24 kHz chunks to Pipecat's
  ``_stream_audio_frames_from_iterator(..., in_sample_rate=24000)``, i.e. the shared soxr stream resampler
  that the built-in HTTP services use.

Measured: time from the server writing the first audio event to the first ``TTSAudioRawFrame`` leaving the
service, at 8 kHz; audio lost at the end of each utterance at 8 and 16 kHz (samples expected from the
engine's PCM minus samples received); and interruption latency, from the ``InterruptionFrame`` reaching
the service to the server seeing the client disconnect.

**streamed**: corpus replies as LLM tokens of 1-4 characters every 30 ms into ``run_test``, the offline
engine behind a local server in its own process (300 ms first byte, real-time factor 0.5 and 0.9), the
audio played by a simulated real-time listener. Ways: the new default (one streamed core utterance per
turn, one piece prefetched), ``text_aggregation_mode=SENTENCE`` (Pipecat's sentences, one request each, in
turn), and the Pipecat-style service (Pipecat's default sentence aggregation). Time to first audio counts
from the first token; silence is the sum of playback gaps after the first frame.

**failover**: Pipecat's ``ServiceSwitcher`` with ``ServiceSwitcherStrategyFailover`` over a dead primary
(connection refused on loopback) and a live backup, one ``TTSSpeakFrame`` every 2 s: time from the first
sentence to the switch and to the backup's first audio, and sentences lost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode, TTSService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat_glmtts import GLMHttpTTSService

from glmtts_plugins import CloudEngine, RetryPolicy
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine, llm_tokens

from . import _corpus
from ._playback import Listener
from ._server import server_process

TOKEN = "bench-token"
TEXTS = [
    "您好，这里是星河银行信用卡中心，请问有什么可以帮您？",
    "好的，我帮您查一下。",
    "您本期账单金额是三千二百六十八元五角，最后还款日是十二月八日。",
    "Sure, your order has shipped and should arrive tomorrow.",
]


class PipecatStyleTTS(TTSService):
    """A minimal HTTP TTS service the way Pipecat's built-ins are written."""

    def __init__(self, engine: CloudEngine, **kwargs: Any) -> None:  # kwargs passed on to TTSService
        super().__init__(push_start_frame=True, push_stop_frames=True, **kwargs)
        self._engine = engine

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        async for frame in self._stream_audio_frames_from_iterator(
            self._engine.stream(text), in_sample_rate=24000, context_id=context_id
        ):
            yield frame


class Stamp(FrameProcessor):
    """Notes when frames pass: the first audio frame, and interruptions."""

    def __init__(self) -> None:
        super().__init__()
        self.first_audio: float | None = None
        self.interrupted: float | None = None
        self.samples = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.first_audio = self.first_audio or time.monotonic()
            self.samples += len(frame.audio) // 2
        elif isinstance(frame, InterruptionFrame):
            self.interrupted = time.monotonic()
        await self.push_frame(frame, direction)


def expected_samples(tone: ToneEngine, text: str, rate: int) -> int:
    return round(len(tone.pcm(text)) // 2 * rate / 24000)


class Ear(FrameProcessor):
    """After the TTS: plays its audio in real time (``Listener``); before it: notes the first token."""

    def __init__(self, listener: Listener | None = None) -> None:
        super().__init__()
        self.listener = listener
        self.first_token: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame) and self.first_token is None:
            self.first_token = time.monotonic()
        elif isinstance(frame, TTSAudioRawFrame) and self.listener is not None:
            self.listener.hear(1000 * len(frame.audio) / 2 / frame.sample_rate)
        await self.push_frame(frame, direction)


def reply_frames(text: str, rng: random.Random, token_ms: float) -> list[Frame]:
    frames: list[Frame] = [LLMFullResponseStartFrame()]
    for token in llm_tokens(text, rng):
        frames += [LLMTextFrame(token), SleepFrame(token_ms / 1000)]
    return [*frames, LLMFullResponseEndFrame()]


async def streamed(replies: int, token_ms: float) -> None:
    texts = _corpus.replies()
    texts = random.Random(7).sample(texts, min(replies, len(texts)))
    names = ("new default (one streamed utterance per turn)", "SENTENCE mode", "Pipecat-style built-in")
    for rtf in (0.5, 0.9):
        faults = f"first_byte_ms=300;rtf={rtf}"
        ttfa: dict[str, list[float]] = {n: [] for n in names}
        silence: dict[str, list[float]] = {n: [] for n in names}
        with server_process(faults, engine="offline") as base_url:
            async with CloudEngine(
                api_key=TOKEN, base_url=base_url, retry=RetryPolicy(max_retries=0)
            ) as engine:
                await engine.prewarm()
                for i, text in enumerate(texts):
                    for name in names:
                        if name == names[0]:
                            tts: TTSService = GLMHttpTTSService(engine=engine)
                        elif name == names[1]:
                            tts = GLMHttpTTSService(
                                engine=engine, text_aggregation_mode=TextAggregationMode.SENTENCE
                            )
                        else:
                            tts = PipecatStyleTTS(engine)
                        ear = Listener(0.0)
                        before, after = Ear(), Ear(ear)
                        await run_test(
                            Pipeline([before, tts, after]),
                            frames_to_send=reply_frames(text, random.Random(i), token_ms),
                            pipeline_params=PipelineParams(audio_out_sample_rate=24000),
                        )
                        assert before.first_token is not None
                        ear.t0 = before.first_token  # time to first audio counts from the first token
                        first, gaps = ear.result()
                        ttfa[name].append(first)
                        silence[name].append(gaps)
        print(f"\n{len(texts)} replies, tokens of 1-4 characters every {token_ms:.0f} ms, server {faults}\n")
        print(
            "| way | time to first audio: median | p90 | silence between pieces per reply: median | p90 "
            "| mean | replies with any silence |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in names:
            t, x = ttfa[name], silence[name]
            print(
                f"| {name} | {statistics.median(t):.0f} ms | {np.percentile(t, 90):.0f} ms "
                f"| {statistics.median(x):.0f} ms | {np.percentile(x, 90):.0f} ms "
                f"| {statistics.mean(x):.0f} ms "
                f"| {sum(v > 20 for v in x)}/{len(x)} |"
            )


async def failover(runs: int) -> None:
    every_s, n = 2.0, 4
    switch: list[float] = []
    first_audio: list[float] = []
    lost: list[int] = []
    with LocalServer(ToneEngine(), tokens=[TOKEN]) as srv:
        for _ in range(runs):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                dead = s.getsockname()[1]
            primary = GLMHttpTTSService(api_key=TOKEN, base_url=f"http://127.0.0.1:{dead}/api/paas/v4")
            backup = GLMHttpTTSService(api_key=TOKEN, base_url=srv.base_url)
            switcher = ServiceSwitcher(
                services=[primary, backup], strategy_type=ServiceSwitcherStrategyFailover
            )
            switched: list[float] = []

            @switcher.strategy.event_handler("on_service_switched")
            async def on_switched(
                _strategy: object, _service: object, switched: list[float] = switched
            ) -> None:
                switched.append(time.monotonic())

            before = len(srv.records)
            frames: list[Frame] = []
            for i in range(n):
                frames += [TTSSpeakFrame(f"这是第{i}句话。"), SleepFrame(every_s)]
            t0 = time.monotonic()
            await run_test(
                switcher, frames_to_send=frames, pipeline_params=PipelineParams(audio_out_sample_rate=16000)
            )
            recs = [r for r in srv.records[before:] if r.outcome == "completed"]
            switch.append(switched[0] - t0)
            first_audio.append(recs[0].first_audio_at - t0)  # type: ignore[operator]  # completed: it has audio
            lost.append(n - len(recs))
    print(
        f"\nServiceSwitcher failover, dead primary (connection refused), "
        f"one sentence every {every_s:.0f} s, {runs} runs\n"
    )
    print(
        "| switch after the first sentence: median | max | backup's first audio: median | max "
        "| sentences lost: max |"
    )
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {statistics.median(switch):.2f} s | {max(switch):.2f} s | {statistics.median(first_audio):.2f} s "
        f"| {max(first_audio):.2f} s | {max(lost)} of {n} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "utterances", "streamed", "failover"), default="all")
    parser.add_argument("--runs", type=int, default=40, help="utterances (and interruptions) per service")
    parser.add_argument("--replies", type=int, default=12, help="corpus replies for the streamed table")
    parser.add_argument("--token-ms", type=float, default=30.0, help="pause between LLM tokens")
    parser.add_argument("--failover-runs", type=int, default=3)
    args = parser.parse_args()
    if args.part in ("all", "utterances"):
        await utterances(args.runs)
    if args.part in ("all", "streamed"):
        await streamed(args.replies, args.token_ms)
    if args.part in ("all", "failover"):
        await failover(args.failover_runs)


async def utterances(runs: int) -> None:
    tone = ToneEngine(chunk_bytes=960)
    rng = random.Random(1)
    names = ("GLMHttpTTSService (ours)", "Pipecat-style (_stream_audio_frames_from_iterator)")
    ttfa: dict[str, list[float]] = {n: [] for n in names}
    lost: dict[tuple[str, int], list[float]] = {(n, r): [] for n in names for r in (8000, 16000)}
    interrupt: dict[str, list[float]] = {n: [] for n in names}
    with LocalServer(tone, tokens=[TOKEN], faults="rtf=0.5") as srv:
        async with CloudEngine(
            api_key=TOKEN, base_url=srv.base_url, retry=RetryPolicy(max_retries=0)
        ) as engine:
            await engine.prewarm()

            def make(name: str) -> TTSService:
                if name == names[0]:
                    return GLMHttpTTSService(engine=engine)
                return PipecatStyleTTS(engine)

            for i in range(runs):
                text = TEXTS[i % len(TEXTS)]
                for rate in (8000, 16000):
                    for name in names:
                        stamp = Stamp()
                        before = len(srv.records)
                        await run_test(
                            Pipeline([make(name), stamp]),
                            frames_to_send=[TTSSpeakFrame(text)],
                            pipeline_params=PipelineParams(audio_out_sample_rate=rate),
                        )
                        rec = srv.records[before]
                        if rate == 8000 and stamp.first_audio and rec.first_audio_at:
                            ttfa[name].append(1000 * (stamp.first_audio - rec.first_audio_at))
                        lost[(name, rate)].append(
                            1000 * (expected_samples(tone, text, rate) - stamp.samples) / rate
                        )
                for name in names:
                    stamp = Stamp()
                    before = len(srv.records)
                    await run_test(
                        Pipeline([stamp, make(name)]),
                        frames_to_send=[
                            TTSSpeakFrame(TEXTS[0] + TEXTS[2]),  # 2.5 s of audio, 1.3 s to stream
                            SleepFrame(rng.uniform(0.1, 0.9)),
                            InterruptionFrame(),
                            SleepFrame(0.3),
                        ],
                        pipeline_params=PipelineParams(audio_out_sample_rate=8000),
                    )
                    rec = srv.records[before]
                    if rec.outcome == "disconnected" and stamp.interrupted and rec.ended:
                        interrupt[name].append(1000 * (rec.ended - stamp.interrupted))
    print(f"{runs} utterances per service and rate, local server rtf=0.5, 20 ms events\n")
    print(
        "| service | first audio event -> first frame at 8 kHz: median | p90 "
        "| audio lost per utterance at 8 kHz | at 16 kHz "
        "| interruption -> server sees disconnect: median | p99 | n |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        t, x = ttfa[name], interrupt[name]
        print(
            f"| {name} | {statistics.median(t):.1f} ms | {np.percentile(t, 90):.1f} ms "
            f"| {statistics.median(lost[(name, 8000)]):.1f} ms "
            f"| {statistics.median(lost[(name, 16000)]):.1f} ms "
            f"| {statistics.median(x):.1f} ms | {np.percentile(x, 99):.1f} ms | {len(x)} |"
        )


if __name__ == "__main__":
    import logging

    from loguru import logger

    logger.remove()
    logging.disable(logging.WARNING)
    asyncio.run(main())
