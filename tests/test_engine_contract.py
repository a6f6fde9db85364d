"""The one engine contract: construction errors, use after ``aclose()``, brand names, and a user's
minimal engine given the whole contract by ``as_engine``."""

from __future__ import annotations

import httpx
import pytest

from glmtts_plugins import (
    BaseEngine,
    CloudEngine,
    EngineClosedError,
    GLMTTSError,
    InvalidRequestError,
    OfflineEngine,
    VllmOmniEngine,
)
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY

VOICES = {"v": {"audio_url": "https://example.invalid/v.wav", "text": "参考。"}}
BAD_URLS = ["localhost:8000", "http://", "ftp://host/x", "http://[::1", "http://h:99999", "http:///x", " "]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_base_url_fails_at_construction_naming_the_field(url: str) -> None:
    for make in (
        lambda: CloudEngine(api_key="k", base_url=url),
        lambda: VllmOmniEngine(url, voices=VOICES),
    ):
        with pytest.raises(InvalidRequestError) as info:
            make()
        assert info.value.field == "base_url" and isinstance(info.value, ValueError)
        assert not info.value.retryable


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"connect_timeout": "5"}, "connect_timeout"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"first_byte_timeout": float("inf")}, "first_byte_timeout"),
        ({"read_timeout": -1}, "read_timeout"),
        ({"read_timeout": True}, "read_timeout"),
        ({"model": ""}, "model"),
        ({"retry": 3}, "retry"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict, field: str) -> None:
    for make in (
        lambda: CloudEngine(api_key="k", base_url="http://127.0.0.1:9", **kwargs),
        lambda: VllmOmniEngine("http://127.0.0.1:9", voices=VOICES, **kwargs),
    ):
        with pytest.raises(InvalidRequestError) as info:
            make()
        assert info.value.field == field


def test_offline_chunk_ms_names_the_field() -> None:
    with pytest.raises(InvalidRequestError) as info:
        OfflineEngine(chunk_ms=20.0)  # type: ignore[arg-type]
    assert info.value.field == "chunk_ms"


async def test_use_after_aclose_is_a_typed_error_not_httpx_runtime_error(server) -> None:  # type: ignore[no-untyped-def]
    cloud = CloudEngine(api_key=API_KEY, base_url=server.base_url)
    await cloud.aclose()
    for use in (
        lambda: cloud.synthesize("你好。"),
        cloud.prewarm,
        lambda: anext(cloud.stream("你好。")),
    ):
        with pytest.raises(EngineClosedError, match="closed") as info:
            await use()
        assert isinstance(info.value, GLMTTSError) and not info.value.retryable
    # a client the user closed behind the engine's back reads the same way
    client = httpx.AsyncClient()
    vllm = VllmOmniEngine(server.root_url, voices=VOICES, http_client=client)
    await client.aclose()
    with pytest.raises(EngineClosedError):
        await vllm.synthesize("你好。", voice="v")
    assert server.records == []


def test_provider_is_a_brand_and_model_is_everywhere() -> None:
    cloud = CloudEngine(api_key="k", base_url="http://127.0.0.1:9/v4")
    vllm = VllmOmniEngine("http://127.0.0.1:9", voices=VOICES)
    assert (cloud.provider, cloud.model, cloud.base_url) == ("GLM-TTS", "glm-tts", "http://127.0.0.1:9/v4")
    assert (vllm.provider, vllm.model) == ("vLLM-Omni", "zai-org/GLM-TTS")
    assert (OfflineEngine.provider, OfflineEngine.model) == ("offline", "espeak-ng")
    assert isinstance(ToneEngine().model, str) and isinstance(BaseEngine.provider, str)
