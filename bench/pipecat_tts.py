"""GLMHttpTTSService against a service written the way Pipecat's built-in HTTP TTS services are.

Run: ``.venv/bin/python -m bench.pipecat_tts``. Both services get the same ``CloudEngine`` against the same
local server (tone engine, 20 ms events paced at real-time factor 0.5) and run in Pipecat's own
``run_test`` harness, interleaved, in one run:

* ``GLMHttpTTSService`` (this project): the core's per-utterance low-delay resampler, flushed at the end.
* "Pipecat-style": ``run_tts`` passes the engine's 24 kHz chunks to Pipecat's
  ``_stream_audio_frames_from_iterator(..., in_sample_rate=24000)``, i.e. the shared soxr stream resampler
  that the built-in HTTP services use.

Measured: time from the server writing the first audio event to the first ``TTSAudioRawFrame`` leaving the
service, at 8 kHz; audio lost at the end of each utterance at 8 and 16 kHz (samples expected from the
engine's PCM minus samples received); and interruption latency, from the ``InterruptionFrame`` reaching
the service to the server seeing the client disconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import Frame, InterruptionFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TTSService
from pipecat.tests.utils import SleepFrame, run_test
from pipecat_glmtts import GLMHttpTTSService

from glmtts_plugins import CloudEngine, RetryPolicy
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

TOKEN = "bench-token"
TEXTS = [
    "您好，这里是星河银行信用卡中心，请问有什么可以帮您？",
    "好的，我帮您查一下。",
    "您本期账单金额是三千二百六十八元五角，最后还款日是十二月八日。",
    "Sure, your order has shipped and should arrive tomorrow.",
]


class PipecatStyleTTS(TTSService):
    """A minimal HTTP TTS service the way Pipecat's built-ins are written."""

    def __init__(self, engine: CloudEngine, **kwargs: object) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True, **kwargs)  # type: ignore[arg-type]
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="utterances (and interruptions) per service")
    args = parser.parse_args()
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

            for i in range(args.runs):
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
    print(f"{args.runs} utterances per service and rate, local server rtf=0.5, 20 ms events\n")
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
