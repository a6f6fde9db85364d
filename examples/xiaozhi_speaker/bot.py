"""A smart-speaker back end: xiaozhi-esp32 devices -> Pipecat (Opus, 16 kHz in) -> GLM-TTS, with barge-in.

Run: ``python -m examples.xiaozhi_speaker.bot [--host H] [--port P] [--token T]`` and point the device's
WebSocket URL at ``ws://HOST:PORT/xiaozhi/v1/`` (see this folder's README).

* With ``ZAI_API_KEY`` and the STT's key (``DEEPGRAM_API_KEY`` for the default Deepgram; none for local
  Whisper) it is a real assistant: the STT hears the user, a GLM chat model answers through Pipecat's
  OpenAI-compatible LLM service pointed at Zhipu's endpoint, GLM-TTS speaks.
* Without one of them (one log line names it), and with no network, it still runs end to end: after each
  user turn it speaks the next scripted reply (two or more sentences, streamed to the TTS as an LLM would)
  with the offline engine through the local server, over the exact cloud protocol.

The device's ``abort`` (or, in auto/realtime mode, the server VAD hearing the user over the bot) stops the
reply at once: the TTS request is closed, ``tts stop`` is sent, and no packet of that reply follows.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from pipecat_glmtts import GLMHttpTTSService
from pipecat_glmtts.xiaozhi import (
    XiaozhiFrameSerializer,
    XiaozhiSession,
    XiaozhiSpeaker,
    XiaozhiTurns,
    accept_device,
)

IN_RATE = 16000  # the pipeline's input: device Opus decoded to 16 kHz for VAD and STT
SCRIPT = (
    "好的，我在听。今天天气晴，最高气温二十三度，适合出门散步。",
    "没问题，已经帮您设好明天早上七点的闹钟。还有别的需要吗？",
    "这首歌叫《晴天》，是周杰伦在二零零三年发行的。要我现在播放吗？",
    "好的，不客气。有需要随时叫我。",
)
SYSTEM_PROMPT = (
    "你是一个智能音箱里的语音助手小智。回答简短、口语化，每次两三句话，不要使用任何Markdown、列表或表情符号。"
)


@dataclass
class BotConfig:
    """What a device session needs; ``from_env`` reads it from the environment (see README)."""

    token: str | None = None  # required by devices; required to bind beyond loopback
    sample_rate: int = 24000  # the Opus the server sends (16000 or 24000)
    prebuffer_ms: float = 300.0
    voice: str = "tongtong"
    tts_base_url: str | None = None  # None: the GLM-TTS cloud (real mode) or the local server (scripted)
    tts_api_key: str | None = None
    zai_api_key: str | None = None  # with the STT's key: real assistant (STT, LLM, cloud TTS); else scripted
    stt: str = "deepgram"
    deepgram_api_key: str | None = None
    llm_model: str = "glm-4-flash"
    llm_base_url: str = "https://open.bigmodel.cn/api/paas/v4"
    script: tuple[str, ...] = SCRIPT
    vad: VADParams = field(default_factory=lambda: VADParams(start_secs=0.2, stop_secs=0.6))

    @classmethod
    def from_env(cls) -> BotConfig:
        return cls(
            token=os.environ.get("XIAOZHI_TOKEN") or None,
            sample_rate=int(os.environ.get("XIAOZHI_SAMPLE_RATE", "24000")),
            prebuffer_ms=float(os.environ.get("XIAOZHI_PREBUFFER_MS", "300")),
            voice=os.environ.get("GLMTTS_VOICE", "tongtong"),
            tts_base_url=os.environ.get("GLMTTS_BASE_URL"),
            tts_api_key=os.environ.get("GLMTTS_API_KEY"),
            zai_api_key=os.environ.get("ZAI_API_KEY"),
            stt=os.environ.get("XIAOZHI_STT", "deepgram"),
            deepgram_api_key=os.environ.get("DEEPGRAM_API_KEY"),
            llm_model=os.environ.get("GLM_LLM_MODEL", "glm-4-flash"),
        )

    @property
    def missing_keys(self) -> list[str]:
        """The keys the real assistant uses that are not set (their environment names): Zhipu's, and
        Deepgram's unless the STT is local Whisper."""
        keys = {"ZAI_API_KEY": self.zai_api_key}
        if self.stt != "whisper":
            keys["DEEPGRAM_API_KEY"] = self.deepgram_api_key
        return [name for name, value in keys.items() if not value]

    @property
    def real(self) -> bool:
        """Every key the real assistant uses is set; otherwise the session speaks scripted replies."""
        return not self.missing_keys


class ScriptedAgent(FrameProcessor):
    """The keyless stand-in for STT + LLM: the next scripted reply after each user turn, streamed in
    small chunks like LLM tokens so the TTS speaks (and the device subtitles) it sentence by sentence."""

    def __init__(self, replies: tuple[str, ...], **kwargs: Any) -> None:  # passed on to FrameProcessor
        super().__init__(**kwargs)
        self._replies: Iterator[str] = _cycle(replies)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self.broadcast_interruption()  # the user talks over the bot: stop it
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            reply = next(self._replies)
            await self.push_frame(LLMFullResponseStartFrame())
            for i in range(0, len(reply), 6):
                await self.push_frame(LLMTextFrame(reply[i : i + 6]))
            await self.push_frame(LLMFullResponseEndFrame())


def _cycle(items: tuple[str, ...]) -> Iterator[str]:
    while True:
        yield from items


def build_tts(config: BotConfig, local_url: str | None, local_token: str | None) -> GLMHttpTTSService:
    settings = GLMHttpTTSService.Settings(voice=config.voice)
    if config.tts_base_url or not config.real:
        base_url = config.tts_base_url or local_url
        key = config.tts_api_key or local_token or config.zai_api_key
        return GLMHttpTTSService(api_key=key, base_url=base_url, settings=settings)
    return GLMHttpTTSService(api_key=config.zai_api_key, settings=settings)


def build_stt(config: BotConfig) -> FrameProcessor:
    """The STT of your choice (``XIAOZHI_STT``): ``deepgram`` (cloud) or ``whisper`` (local)."""
    from pipecat.transcriptions.language import Language

    if config.stt == "whisper":  # pip install "pipecat-ai[whisper]"
        from pipecat.services.whisper.stt import WhisperSTTService

        return WhisperSTTService(settings=WhisperSTTService.Settings(language=Language.ZH))
    from pipecat.services.deepgram.stt import DeepgramSTTService  # pip install "pipecat-ai[deepgram]"

    if not config.deepgram_api_key:  # BotConfig.real requires it; a direct caller gets a clear error
        raise ValueError("DEEPGRAM_API_KEY is not set: the Deepgram STT needs it")
    return DeepgramSTTService(
        api_key=config.deepgram_api_key, settings=DeepgramSTTService.Settings(language=Language.ZH)
    )


def build_processors(
    config: BotConfig, speaker: XiaozhiSpeaker
) -> tuple[list[FrameProcessor], list[FrameProcessor]]:
    """(processors between XiaozhiTurns and the TTS, processors after the transport output)."""
    if not config.real:
        return [ScriptedAgent(config.script)], []
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.services.openai.llm import OpenAILLMService

    llm = OpenAILLMService(
        api_key=config.zai_api_key,
        base_url=config.llm_base_url,
        settings=OpenAILLMService.Settings(model=config.llm_model, system_instruction=SYSTEM_PROMPT),
    )
    user, assistant = LLMContextAggregatorPair(LLMContext())

    @user.event_handler("on_user_turn_stopped")
    async def heard(_aggregator: object, _strategy: object, message: Any) -> None:
        if message.content:
            await speaker.send_stt(message.content)  # the device shows what it heard

    return [build_stt(config), user, llm], [assistant]


async def run_device(
    websocket: WebSocket,
    session: XiaozhiSession,
    config: BotConfig,
    local_url: str | None,
    local_token: str | None,
) -> None:
    """One device session, from its hello to its disconnect."""
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,  # Pipecat's bot-speaking events; the device gets XiaozhiSpeaker's Opus
            add_wav_header=False,
            serializer=XiaozhiFrameSerializer(session),
        ),
    )
    turns = XiaozhiTurns(session, vad_analyzer=SileroVADAnalyzer(sample_rate=IN_RATE, params=config.vad))
    speaker = XiaozhiSpeaker(session, prebuffer_ms=config.prebuffer_ms)
    tts = build_tts(config, local_url, local_token)
    before, after = build_processors(config, speaker)
    pipeline = Pipeline([transport.input(), turns, *before, tts, speaker, transport.output(), *after])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=IN_RATE, audio_out_sample_rate=session.sample_rate),
    )

    @transport.event_handler("on_client_disconnected")
    async def gone(_transport: object, _ws: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def create_app(config: BotConfig | None = None) -> FastAPI:
    """The web app: the device endpoint at ``/xiaozhi/v1/``.

    In scripted mode (a key of the real assistant not set: logged once, naming it) and without
    ``tts_base_url``, a local GLM-TTS server on the offline engine starts with the app and stops with it
    (``app.state.local_server``).
    """
    config = config or BotConfig.from_env()
    if missing := config.missing_keys:
        level = "WARNING" if config.zai_api_key or config.deepgram_api_key else "INFO"  # half set up: warn
        logger.log(level, f"scripted replies on the offline engine: {' and '.join(missing)} not set")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.local_server = app.state.local_token = None
        if not config.real and not config.tts_base_url:
            from glmtts_plugins import OfflineEngine
            from glmtts_plugins.server import LocalServer

            app.state.local_token = secrets.token_hex(16)
            app.state.local_server = LocalServer(OfflineEngine(), tokens=[app.state.local_token]).start()
        try:
            yield
        finally:
            if app.state.local_server is not None:
                app.state.local_server.stop()

    app = FastAPI(lifespan=lifespan)
    app.state.sessions = 0  # device sessions running now

    async def device(websocket: WebSocket) -> None:
        session = await accept_device(websocket, token=config.token, sample_rate=config.sample_rate)
        if session is None:
            return
        server = websocket.app.state.local_server
        app.state.sessions += 1
        try:
            await run_device(
                websocket, session, config, server.base_url if server else None, app.state.local_token
            )
        finally:
            app.state.sessions -= 1

    app.add_api_websocket_route("/xiaozhi/v1/", device)
    app.add_api_websocket_route("/xiaozhi/v1", device)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="xiaozhi-esp32 speaker back end on GLM-TTS")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", help="the devices' bearer token (default: XIAOZHI_TOKEN)")
    args = parser.parse_args(argv)
    config = BotConfig.from_env()
    if args.token:
        config.token = args.token
    if not config.token and not is_loopback(args.host):
        parser.exit(
            2, f"refusing to listen on {args.host} without a token: pass --token or set XIAOZHI_TOKEN\n"
        )
    from glmtts_plugins.server.runner import listening_socket

    # listening_socket: accepted connections get TCP_NODELAY, so small Opus packets are not batched
    server = uvicorn.Server(uvicorn.Config(create_app(config), lifespan="on", ws_max_size=1 << 20))
    server.run(sockets=[listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
