"""The official SDK (zai-sdk) talks to the local server exactly as it talks to the cloud."""

from __future__ import annotations

import base64

from zai import ZhipuAiClient

from glmtts_plugins.audio import wav_to_pcm
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY

TEXT = "您好，请问有什么可以帮您？"


def test_sdk_whole_wav_and_streaming(server: LocalServer, tone: ToneEngine) -> None:
    client = ZhipuAiClient(api_key=API_KEY, base_url=server.base_url)
    wav = client.audio.speech(model="glm-tts", input=TEXT, voice="xiaochen", response_format="wav")
    assert wav_to_pcm(wav.content) == (tone.pcm(TEXT), 24000, 1)

    chunks = client.audio.speech(
        model="glm-tts",
        input=TEXT,
        voice="tongtong",
        response_format="pcm",
        stream=True,
        encode_format="base64",
    )
    pcm = b""
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                pcm += base64.b64decode(choice.delta.content)
            finish = choice.finish_reason or finish
    assert pcm == tone.pcm(TEXT)
    assert finish == "stop"
    assert [r.outcome for r in server.records] == ["completed", "completed"]


def test_sdk_sees_the_clouds_errors(server: LocalServer) -> None:
    import pytest
    from zai.core import APIStatusError

    client = ZhipuAiClient(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    with pytest.raises(APIStatusError) as info:
        client.audio.speech(model="glm-tts", input=TEXT, voice="nobody", response_format="wav")
    assert info.value.status_code == 400
    assert "1214" in str(info.value.response.json())
