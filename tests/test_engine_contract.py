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
    Synthesizer,
    VllmOmniEngine,
    as_engine,
    resolve_engine,
)
from glmtts_plugins.audio import wav_to_pcm
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, collect_pcm

VOICES = {"v": {"audio_url": "https://example.invalid/v.wav", "text": "参考。"}}
BAD_URLS = [
    "localhost:8000",
    "http://",
    "ftp://host/x",
    "http://[::1",
    "http://h:99999",
    "http:///x",
    " ",
    "https://user:s3cret-pw@host/v4",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_malformed_base_url_fails_at_construction_naming_the_field(url: str) -> None:
    for make in (
        lambda: CloudEngine(api_key="k", base_url=url),
        lambda: VllmOmniEngine(url, voices=VOICES),
    ):
        with pytest.raises(InvalidRequestError) as info:
            make()
        assert info.value.field == "base_url" and isinstance(info.value, ValueError)
        assert not info.value.retryable and "s3cret-pw" not in str(info.value)


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


@pytest.mark.parametrize("key", ["密钥-secret", "bad key", "line\nbreak"])
def test_a_key_that_cannot_be_sent_is_refused_without_showing_it(key: str) -> None:
    for make in (
        lambda: CloudEngine(api_key=key, base_url="http://127.0.0.1:9"),
        lambda: VllmOmniEngine("http://127.0.0.1:9", voices=VOICES, api_key=key),
    ):
        with pytest.raises(InvalidRequestError) as info:
            make()
        assert info.value.field == "api_key" and key not in str(info.value)


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


class Minimal:
    """A user's engine with only what the contract requires of it."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def stream(self, text, *, voice, speed, volume):  # type: ignore[no-untyped-def]
        self.calls.append(text)
        yield b"\x01\x00" * 160
        yield b"\x02\x00" * 160


async def test_as_engine_gives_a_minimal_engine_the_whole_contract() -> None:
    inner = Minimal()
    engine = as_engine(inner)
    assert isinstance(engine, BaseEngine) and as_engine(engine) is engine
    assert engine.sample_rate == 16000 and engine.provider == "Minimal"
    await engine.prewarm()  # safe defaults where the engine has none
    pcm, rate, _ = wav_to_pcm(await engine.synthesize("你好。"))
    assert (len(pcm), rate) == (640, 16000)
    with pytest.raises(InvalidRequestError) as info:
        await engine.synthesize("你好。", speed=9)
    assert info.value.field == "speed" and inner.calls == ["你好。"]  # refused before the engine ran
    async with engine:
        pass
    for bad in (object(), type("NoRate", (), {"stream": lambda self: None})(), "tone"):
        with pytest.raises(TypeError, match="sample_rate"):
            as_engine(bad)


async def test_synthesizer_and_resolve_engine_apply_as_engine() -> None:
    inner = Minimal()
    synth = Synthesizer(inner, sample_rate=16000, frame_ms=20)
    assert isinstance(synth.engine, BaseEngine)
    assert len(await collect_pcm(synth.speak("你好。"))) == 640
    engine, owned = resolve_engine(inner)
    assert isinstance(engine, BaseEngine) and not owned
    await engine.aclose()  # the adapters can call it: a no-op for an engine without one
    with pytest.raises(TypeError):
        Synthesizer(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"text": "你好\ud800。"}, "text"), ({"voice": "\udfff"}, "voice")]
)
async def test_a_lone_surrogate_is_refused_naming_the_field(server, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    request = {"text": "你好。", **kwargs}
    text = request.pop("text")
    async with CloudEngine(api_key=API_KEY, base_url=server.base_url) as cloud:
        for call in (lambda: cloud.synthesize(text, **request), lambda: anext(cloud.stream(text, **request))):
            with pytest.raises(InvalidRequestError) as info:
                await call()
            assert info.value.field == field and "surrogate" in str(info.value)
    assert server.records == []
    if field == "voice":
        synth = Synthesizer(ToneEngine())
        with pytest.raises(InvalidRequestError):
            synth.update_options(voice=kwargs["voice"])
        assert synth.voice == "tongtong"


def test_no_engine_validates_by_hand_and_none_overrides_stream() -> None:
    import inspect

    from glmtts_plugins import engines, testing

    for module in (engines.cloud, engines.vllm_omni, engines.offline, engines.http, testing):
        source = inspect.getsource(module)
        assert "validate_request(" not in source and "type: ignore[override]" not in source, module
    for cls in (CloudEngine, VllmOmniEngine, OfflineEngine, ToneEngine):
        assert cls.stream is BaseEngine.stream and cls.synthesize is BaseEngine.synthesize


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"sample_rate": 24000.0}, "sample_rate"), ({"frame_ms": 20.0}, "frame_ms")]
)
def test_synthesizer_refuses_float_rates_and_frame_sizes(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        Synthesizer(ToneEngine(), **kwargs)
    assert info.value.field == field


async def test_speak_timeout_reaches_a_users_engine_through_as_engine() -> None:
    import asyncio

    from glmtts_plugins import APITimeoutError

    class Stalled(Minimal):
        async def stream(self, text, *, voice, speed, volume):  # type: ignore[no-untyped-def]
            await asyncio.sleep(10)
            yield b"\0\0"

    synth = Synthesizer(Stalled(), sample_rate=16000)
    with pytest.raises(APITimeoutError, match="first byte"):
        async with asyncio.timeout(5):
            await collect_pcm(synth.speak("你好。", timeout=0.2))


async def test_closing_the_engine_mid_request_never_surfaces_httpx_runtime_error() -> None:
    import asyncio

    from .conftest import served

    async with served(faults="first_byte_ms=300") as (_, cloud):
        task = asyncio.create_task(cloud.synthesize("你好。"))
        await asyncio.sleep(0.1)
        await cloud.aclose()
        with pytest.raises(GLMTTSError) as info:
            await task
    assert not isinstance(info.value, RuntimeError)
