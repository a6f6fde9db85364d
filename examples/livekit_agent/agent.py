"""A LiveKit voice agent that answers in Chinese with GLM-TTS.

Run (LiveKit Cloud or a self-hosted LiveKit server, see README):
``python -m examples.livekit_agent.agent dev``

``AgentSession`` = speech-to-text of your choice (Deepgram here) + a GLM chat model through
``livekit-plugins-openai`` pointed at Zhipu's OpenAI-compatible endpoint + ``glmtts.TTS``. GLM-TTS
streams: the first clause of the model's answer is spoken while the rest is still being generated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from livekit.agents import NOT_GIVEN, Agent, AgentServer, AgentSession, JobContext, NotGivenOr, cli
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import vad as lk_vad
from livekit.plugins import glmtts

ZHIPU_OPENAI_URL = "https://open.bigmodel.cn/api/paas/v4/"
GREETING = "您好，我是星河银行的智能客服小星，请问有什么可以帮您？"
INSTRUCTIONS = (
    "你是星河银行信用卡中心的语音客服小星。用简短、口语化的中文回答，每次不超过三句话。"
    "不要使用Markdown、列表或表情符号，数字用口语读法。"
)


@dataclass
class AgentConfig:
    """Settings from the environment (see README)."""

    voice: str = "tongtong"
    zai_api_key: str | None = None
    tts_base_url: str | None = None  # a self-hosted GLM-TTS speaking the cloud's API; None: the cloud
    tts_api_key: str | None = None
    llm_model: str = "glm-4-flash"
    deepgram_api_key: str | None = None

    @classmethod
    def from_env(cls) -> AgentConfig:
        return cls(
            voice=os.environ.get("GLMTTS_VOICE", "tongtong"),
            zai_api_key=os.environ.get("ZAI_API_KEY"),
            tts_base_url=os.environ.get("GLMTTS_BASE_URL"),
            tts_api_key=os.environ.get("GLMTTS_API_KEY"),
            llm_model=os.environ.get("GLM_LLM_MODEL", "glm-4-flash"),
            deepgram_api_key=os.environ.get("DEEPGRAM_API_KEY"),
        )


class CallCenterAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions=INSTRUCTIONS)


def build_tts(config: AgentConfig) -> glmtts.TTS:
    key = config.tts_api_key or config.zai_api_key
    return glmtts.TTS(voice=config.voice, api_key=key, base_url=config.tts_base_url)


def build_session(config: AgentConfig) -> AgentSession[None]:
    """The session: STT and LLM when their keys are set (a TTS-only session otherwise), GLM-TTS always."""
    stt: NotGivenOr[lk_stt.STT[Any]] = NOT_GIVEN  # no STT, no LLM
    llm: NotGivenOr[lk_llm.LLM[Any]] = NOT_GIVEN
    vad: lk_vad.VAD | None = None  # no VAD (NOT_GIVEN would load LiveKit's default one)
    if config.zai_api_key:
        from livekit.plugins import openai

        llm = openai.LLM(model=config.llm_model, base_url=ZHIPU_OPENAI_URL, api_key=config.zai_api_key)
    if config.deepgram_api_key:  # pip install livekit-plugins-deepgram livekit-plugins-silero
        import livekit.plugins.deepgram as deepgram
        import livekit.plugins.silero as silero

        stt = deepgram.STT(language="zh", api_key=config.deepgram_api_key)
        vad = silero.VAD.load()
    return AgentSession(stt=stt, llm=llm, tts=build_tts(config), vad=vad)


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = build_session(AgentConfig.from_env())
    await session.start(agent=CallCenterAgent(), room=ctx.room)
    await session.say(GREETING)


if __name__ == "__main__":
    cli.run_app(server)
