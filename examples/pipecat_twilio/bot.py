"""A call-center bot on a phone line: Twilio Media Streams -> Pipecat (8 kHz) -> GLM-TTS, with barge-in.

Run: ``python -m examples.pipecat_twilio.bot`` (see this folder's README for the TwiML and the settings).

* With ``ZAI_API_KEY`` and ``DEEPGRAM_API_KEY`` it is a real bot: Deepgram hears the caller, a GLM chat
  model answers through Pipecat's OpenAI-compatible LLM service pointed at Zhipu's endpoint, and GLM-TTS
  speaks.
* Without one of them (one log line names it), and with no network, it still runs end to end:
  a scripted call-center flow (a greeting, then one scripted answer after each caller turn that Silero VAD
  detects), each streamed as an LLM would stream it, spoken by the offline engine through the local
  server, over the exact cloud protocol.

Each reply is one streamed GLM-TTS utterance: its first request leaves at the first clause, the next piece is
requested while one plays, and the assistant context keeps only the pieces the caller actually heard.

Either way the caller can talk over the bot: VAD hears speech, the pipeline is interrupted, the TTS request
is closed and Twilio gets a ``clear`` event so it drops the audio it has buffered.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from pipecat_glmtts import GLMHttpTTSService

PHONE_RATE = 8000
GREETING = (
    "您好，这里是星河银行信用卡中心，我是智能客服小星。"
    "请问您今天想办理什么业务？账单查询、还款、分期，还是挂失？"
)
SCRIPT = (
    "好的，我帮您查一下。您本期账单金额是三千二百六十八元五角，最后还款日是十二月八日。",
    "明白了。分期可以选三期、六期或者十二期，手续费按月计算。需要我帮您办理吗？",
    "好的，已经为您记录。还有其他可以帮您的吗？",
    "感谢您的来电，祝您生活愉快，再见！",
)
SYSTEM_PROMPT = (
    "你是星河银行信用卡中心的电话客服小星。"
    "回答简短、口语化，每次不超过三句话，不要使用任何Markdown或表情符号。"
)


@dataclass
class BotConfig:
    """What a call needs; ``from_env`` reads it from the environment (see README)."""

    voice: str = "tongtong"
    tts_base_url: str | None = None  # None: the GLM-TTS cloud (real mode) or the local server (scripted)
    tts_api_key: str | None = None
    zai_api_key: str | None = None  # with deepgram_api_key: real bot (STT, LLM, cloud TTS); else scripted
    deepgram_api_key: str | None = None
    llm_model: str = "glm-4-flash"
    llm_base_url: str = "https://open.bigmodel.cn/api/paas/v4"
    greeting: str = GREETING
    script: tuple[str, ...] = SCRIPT
    vad: VADParams = field(default_factory=lambda: VADParams(start_secs=0.2, stop_secs=0.6))

    @classmethod
    def from_env(cls) -> BotConfig:
        return cls(
            voice=os.environ.get("GLMTTS_VOICE", "tongtong"),
            tts_base_url=os.environ.get("GLMTTS_BASE_URL"),
            tts_api_key=os.environ.get("GLMTTS_API_KEY"),
            zai_api_key=os.environ.get("ZAI_API_KEY"),
            deepgram_api_key=os.environ.get("DEEPGRAM_API_KEY"),
            llm_model=os.environ.get("GLM_LLM_MODEL", "glm-4-flash"),
        )

    @property
    def missing_keys(self) -> list[str]:
        """The keys the real bot uses that are not set (their environment names)."""
        keys = {"ZAI_API_KEY": self.zai_api_key, "DEEPGRAM_API_KEY": self.deepgram_api_key}
        return [name for name, value in keys.items() if not value]

    @property
    def real(self) -> bool:
        """Every key the real bot uses is set; otherwise the call runs the scripted flow."""
        return not self.missing_keys


def streamed_reply(text: str, token_chars: int = 3) -> list[Frame]:
    """``text`` as an LLM streams it: a response start, tokens of a few characters, a response end."""
    tokens = [LLMTextFrame(text[i : i + token_chars]) for i in range(0, len(text), token_chars)]
    return [LLMFullResponseStartFrame(), *tokens, LLMFullResponseEndFrame()]


def new_context() -> LLMContext:
    """The call's conversation: empty; the greeting enters it once, as heard (``greeting_frames``)."""
    return LLMContext()


def greeting_frames(config: BotConfig) -> list[Frame]:
    """The greeting: spoken by the TTS and added to the context by the assistant aggregator once played
    (seeding the context with it as well would put it there twice)."""
    if config.real:
        return [TTSSpeakFrame(config.greeting)]
    return streamed_reply(config.greeting)  # the scripted agent stands in for the LLM


class ScriptedAgent(FrameProcessor):
    """The keyless stand-in for STT + LLM: barge-in on caller speech, the next scripted answer after it,
    streamed as tokens like an LLM reply."""

    def __init__(self, answers: tuple[str, ...], **kwargs: Any) -> None:  # passed on to FrameProcessor
        super().__init__(**kwargs)
        self._answers: Iterator[str] = iter(answers)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self.broadcast_interruption()  # stops the TTS and makes Twilio `clear` its buffer
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            answer = next(self._answers, None)
            if answer is not None:
                for reply_frame in streamed_reply(answer):
                    await self.push_frame(reply_frame)


def build_tts(config: BotConfig, local_url: str | None, local_token: str | None) -> GLMHttpTTSService:
    settings = GLMHttpTTSService.Settings(voice=config.voice)
    if config.tts_base_url or not config.real:
        base_url = config.tts_base_url or local_url
        key = config.tts_api_key or local_token or config.zai_api_key
        return GLMHttpTTSService(api_key=key, base_url=base_url, settings=settings)
    return GLMHttpTTSService(api_key=config.zai_api_key, settings=settings)


def build_processors(
    config: BotConfig, context: LLMContext
) -> tuple[list[FrameProcessor], list[FrameProcessor]]:
    """(processors between transport input and TTS, processors after transport output)."""
    vad = SileroVADAnalyzer(sample_rate=PHONE_RATE, params=config.vad)
    if not config.real:
        agent = ScriptedAgent(config.script)
        return [VADProcessor(vad_analyzer=vad), agent], [LLMAssistantAggregator(context)]
    # Real mode: imports only needed with keys (Deepgram needs `pip install "pipecat-ai[deepgram]"`).
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.transcriptions.language import Language

    if not config.deepgram_api_key:  # BotConfig.real requires it; a direct caller gets a clear error
        raise ValueError("DEEPGRAM_API_KEY is not set: real mode needs it for speech-to-text")
    stt = DeepgramSTTService(
        api_key=config.deepgram_api_key, settings=DeepgramSTTService.Settings(language=Language.ZH)
    )
    llm = OpenAILLMService(
        api_key=config.zai_api_key,
        base_url=config.llm_base_url,
        settings=OpenAILLMService.Settings(model=config.llm_model, system_instruction=SYSTEM_PROMPT),
    )
    user, assistant = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(vad_analyzer=vad))
    return [stt, user, llm], [assistant]


async def run_call(
    websocket: WebSocket,
    config: BotConfig,
    local_url: str | None,
    local_token: str | None,
    context: LLMContext | None = None,
) -> None:
    """One phone call, from Twilio's ``start`` message to hang-up."""
    _, call = await parse_telephony_websocket(websocket)  # reads Twilio's `connected` and `start`
    serializer = TwilioFrameSerializer(
        stream_sid=call["stream_id"],
        call_sid=call["call_id"],
        account_sid=os.environ.get("TWILIO_ACCOUNT_SID"),
        auth_token=os.environ.get("TWILIO_AUTH_TOKEN"),
        params=TwilioFrameSerializer.InputParams(auto_hang_up=bool(os.environ.get("TWILIO_AUTH_TOKEN"))),
    )
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            audio_out_10ms_chunks=2,  # 20 ms media messages, as Twilio sends them
        ),
    )
    tts = build_tts(config, local_url, local_token)
    before, after = build_processors(config, context if context is not None else new_context())
    pipeline = Pipeline([transport.input(), *before, tts, transport.output(), *after])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=PHONE_RATE, audio_out_sample_rate=PHONE_RATE),
    )

    @transport.event_handler("on_client_connected")
    async def greet(_transport: object, _ws: object) -> None:
        await worker.queue_frames(greeting_frames(config))

    @transport.event_handler("on_client_disconnected")
    async def hang_up(_transport: object, _ws: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def create_app(config: BotConfig | None = None, *, public_host: str | None = None) -> FastAPI:
    """The web app: ``POST /twiml`` for Twilio's voice webhook, ``/ws`` for the media stream.

    In scripted mode (a key of the real bot not set: logged once, naming it) and without ``tts_base_url``,
    a local GLM-TTS server on the offline engine starts with the app and stops with it.
    ``app.state.contexts`` holds each call's conversation (what the caller heard of the bot, and what the
    caller said).
    """
    config = config or BotConfig.from_env()
    if missing := config.missing_keys:
        level = "WARNING" if config.zai_api_key or config.deepgram_api_key else "INFO"  # half set up: warn
        logger.log(level, f"scripted flow on the offline engine: {' and '.join(missing)} not set")
    local: dict[str, Any] = {}
    contexts: list[LLMContext] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not config.real and not config.tts_base_url:
            from glmtts_plugins import OfflineEngine
            from glmtts_plugins.server import LocalServer

            local["token"] = secrets.token_hex(16)
            local["server"] = LocalServer(OfflineEngine(), tokens=[local["token"]]).start()
        try:
            yield
        finally:
            if "server" in local:
                local["server"].stop()

    app = FastAPI(lifespan=lifespan)
    app.state.contexts = contexts

    @app.api_route("/twiml", methods=["GET", "POST"])
    async def twiml(request: Request) -> Response:
        host = public_host or request.headers.get("host", "localhost")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<Response><Connect><Stream url="wss://{host}/ws"/></Connect></Response>'
        )
        return Response(body, media_type="application/xml")

    @app.websocket("/ws")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        server = local.get("server")
        context = new_context()
        contexts.append(context)
        await run_call(websocket, config, server.base_url if server else None, local.get("token"), context)

    return app


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Twilio call-center bot on GLM-TTS")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--public-host", help="host name Twilio reaches (e.g. your ngrok domain)")
    args = parser.parse_args()
    import uvicorn

    from glmtts_plugins.server import listening_socket

    # listening_socket: accepted connections get TCP_NODELAY, so 20 ms media messages are not batched
    server = uvicorn.Server(uvicorn.Config(create_app(public_host=args.public_host), lifespan="on"))
    server.run(sockets=[listening_socket(args.host, args.port)])


if __name__ == "__main__":
    main()
