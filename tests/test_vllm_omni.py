"""VllmOmniEngine, its voice registry and the gateway, against the local server's vLLM-Omni emulation."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest

from glmtts_plugins import (
    APIConnectionError,
    AuthenticationError,
    CloudEngine,
    InvalidRequestError,
    RateLimitError,
    Synthesizer,
    TruncatedStreamError,
    VllmOmniEngine,
    VoiceRegistry,
)
from glmtts_plugins.audio import pcm_to_wav, wav_to_pcm
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, FAST_RETRY, collect_pcm, local_server, other_tasks

TEXT = "您好，这里是星河银行信用卡中心。"


def tone_wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    mono = (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    frames = np.repeat(mono, channels) if channels > 1 else mono
    return pcm_to_wav(frames.tobytes(), rate, channels)


@pytest.fixture
def voice_dir(tmp_path: Path) -> Path:
    (tmp_path / "agent_female.wav").write_bytes(tone_wav(4.0))
    (tmp_path / "agent_female.txt").write_text("你好，欢迎致电星河银行。", encoding="utf-8")
    (tmp_path / "agent_male.wav").write_bytes(tone_wav(5.0, rate=44100, channels=2))  # stereo, 44.1 kHz
    (tmp_path / "agent_male.txt").write_text("您好，请问有什么可以帮您？", encoding="utf-8")
    return tmp_path


def engine(srv: LocalServer, voices: object, **kw: object) -> VllmOmniEngine:
    options = {"retry": FAST_RETRY, "api_key": API_KEY, **kw}
    return VllmOmniEngine(srv.root_url, voices=voices, **options)  # type: ignore[arg-type]


# -- voice registry ---------------------------------------------------------------------------------


def test_registry_from_a_directory_validates_and_encodes_once(voice_dir: Path) -> None:
    reg = VoiceRegistry.load(voice_dir)
    assert sorted(reg) == ["agent_female", "agent_male"]
    male = reg.get_voice("agent_male")
    assert male.ref_text == "您好，请问有什么可以帮您？" and male.duration_s == pytest.approx(5.0, abs=0.01)
    assert male.ref_audio.startswith("data:audio/wav;base64,")
    pcm, rate, channels = wav_to_pcm(base64.b64decode(male.ref_audio.split(",", 1)[1]))
    assert (rate, channels) == (24000, 1)  # stereo 44.1 kHz downmixed and resampled
    assert len(pcm) // 2 == pytest.approx(5.0 * 24000, abs=2)


def test_registry_from_toml_json_and_mapping(voice_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "voices.toml"
    toml.write_text(
        '[support]\naudio = "agent_female.wav"\ntext = "你好"\n\n'
        '[remote]\naudio_url = "https://voices.example/remote.wav"\ntext = "远程"\n',
        encoding="utf-8",
    )
    reg = VoiceRegistry.load(toml)
    assert reg.get_voice("remote").ref_audio == "https://voices.example/remote.wav"
    assert reg.get_voice("support").ref_audio.startswith("data:audio/wav;base64,")
    js = tmp_path / "voices.json"
    js.write_text(json.dumps({"x": {"audio_url": "file:///srv/x.wav", "text": "x"}}), encoding="utf-8")
    assert VoiceRegistry.load(js).get_voice("x").ref_audio == "file:///srv/x.wav"
    assert sorted(VoiceRegistry.load({"y": {"audio_url": "https://a/b.wav", "text": "y"}})) == ["y"]


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: (d / "a.wav").write_bytes(tone_wav(4)), "a.txt"),  # missing transcript
        (lambda d: [(d / "a.wav").write_bytes(tone_wav(1)), (d / "a.txt").write_text("x")], "1.0 s"),
        (
            lambda d: [(d / "a.wav").write_bytes(tone_wav(120, 8000)), (d / "a.txt").write_text("x")],
            "120.0 s",
        ),
        (
            lambda d: [(d / "a.wav").write_bytes(b"ID3 not a wav"), (d / "a.txt").write_text("x")],
            "not a readable",
        ),
        (lambda d: [(d / "a.wav").write_bytes(tone_wav(4)), (d / "a.txt").write_text("  ")], "empty"),
    ],
    ids=["missing-transcript", "1s-clip", "2min-clip", "not-wav", "empty-transcript"],
)
def test_registry_rejects_bad_references(tmp_path: Path, make, expect: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    with pytest.raises(InvalidRequestError) as info:
        VoiceRegistry.load(tmp_path)
    assert info.value.field == "voices" and expect in str(info.value) and "'a'" in str(info.value)


def wav_with_rate(rate: int, seconds: float = 4.0) -> bytes:
    header = bytearray(tone_wav(seconds))
    header[24:28] = rate.to_bytes(4, "little")  # the header's sample rate, whatever it says
    return bytes(header)


def symlink_to_dev_zero(d: Path) -> None:
    (d / "a.wav").symlink_to("/dev/zero")
    (d / "a.txt").write_text("x")


def fifo(d: Path) -> None:
    os.mkfifo(d / "a.wav")  # opening it would block until a writer comes: it must not be opened
    (d / "a.txt").write_text("x")


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: [(d / "a.wav").write_bytes(wav_with_rate(0)), (d / "a.txt").write_text("x")], "0 Hz"),
        (lambda d: [(d / "a.wav").write_bytes(wav_with_rate(1)), (d / "a.txt").write_text("x")], "1 Hz"),
        (
            lambda d: [(d / "a.wav").write_bytes(tone_wav(4)), (d / "a.txt").write_bytes(b"\xff\xfe\x00x")],
            "UTF-8",
        ),
        (symlink_to_dev_zero, "not a regular file"),
        (fifo, "not a regular file"),
    ],
    ids=["rate-0", "rate-1", "non-utf8-transcript", "link-to-dev-zero", "fifo"],
)
def test_registry_rejects_hostile_voice_files(tmp_path: Path, make, expect: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    with pytest.raises(InvalidRequestError) as info:
        VoiceRegistry.load(tmp_path)
    assert info.value.field == "voices" and expect in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("v.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("v.toml", "a = " + "[" * 100_000 + "]" * 100_000, "does not parse"),
        (
            "v.json",
            json.dumps({"x": {"audio_url": "https://a/b.wav", "text": ["a", "list"]}}),
            "'text' string",
        ),
        ("v.json", json.dumps({"x": {"audio": 7, "text": "t"}}), "'audio' must be a string"),
    ],
)
def test_registry_files_with_hostile_structure(tmp_path: Path, name: str, content: str, expect: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidRequestError) as info:
        VoiceRegistry.load(path)
    assert info.value.field == "voices" and expect in str(info.value), str(info.value)


def test_unknown_voice_lists_the_registered_ones(voice_dir: Path) -> None:
    with pytest.raises(InvalidRequestError) as info:
        VoiceRegistry.load(voice_dir).get_voice("tongtong")
    assert info.value.field == "voice" and "agent_female, agent_male" in str(info.value)


# -- the engine against the emulation -------------------------------------------------------------------


async def test_request_shape_and_streamed_audio(voice_dir: Path) -> None:
    tone = ToneEngine()
    with local_server(tone, faults="chunk_bytes=7") as srv:  # split samples
        async with engine(srv, voice_dir) as eng:
            pcm = await collect_pcm(eng.stream(TEXT, voice="agent_female", speed=1.2), whole_samples=True)
            assert all(len(c) % 2 == 0 for c in [pcm])
        rec = srv.records[0]
    assert rec.path == "/v1/audio/speech"
    body = rec.body
    assert body["input"] == TEXT and body["model"] == "zai-org/GLM-TTS"
    assert body["ref_text"] == "你好，欢迎致电星河银行。" and body["ref_audio"]["kind"] == "data"
    assert (body["stream"], body["response_format"], body["stream_format"], body["speed"]) == (
        True,
        "pcm",
        "audio",
        1.2,
    )
    assert len(pcm) == len(tone.pcm(TEXT))  # every sample, even with chunks that split samples


async def test_volume_is_gain_with_saturation(voice_dir: Path) -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        async with engine(srv, voice_dir) as eng:
            plain = await collect_pcm(eng.stream(TEXT, voice="agent_female"))
            loud = await collect_pcm(eng.stream(TEXT, voice="agent_female", volume=5.0))
    a = np.frombuffer(plain, "<i2").astype(int)
    b = np.frombuffer(loud, "<i2").astype(int)
    assert np.array_equal(b, np.clip(a * 5, -32768, 32767))  # saturates, never wraps around
    assert b.max() == 32767 and b.min() == -32768


async def test_whole_wav_mode(voice_dir: Path) -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        async with engine(srv, voice_dir) as eng:
            wav = await eng.synthesize(TEXT, voice="agent_male")
        assert srv.records[0].body["stream"] is False
    pcm, rate, channels = wav_to_pcm(wav)
    assert (rate, channels) == (24000, 1) and pcm == tone.pcm(TEXT)


@pytest.mark.parametrize(
    ("faults", "error", "requests"),
    [
        ("status=401", AuthenticationError, 1),
        ("status=429", RateLimitError, 3),  # retried (2 retries) before audio
        ("status=503;times=1", None, 2),  # one retry, then the audio
        ("disconnect_after=2", TruncatedStreamError, 1),  # after audio: never retried
    ],
)
async def test_errors_map_and_retry_only_before_audio(
    voice_dir: Path, faults: str, error, requests: int
) -> None:  # type: ignore[no-untyped-def]
    with local_server(faults=faults) as srv:
        async with engine(srv, voice_dir) as eng:
            if error is None:
                assert await collect_pcm(eng.stream(TEXT, voice="agent_female"))
            else:
                with pytest.raises(error) as info:
                    await collect_pcm(eng.stream(TEXT, voice="agent_female"))
                if error is TruncatedStreamError:
                    assert info.value.retryable is False
        assert len(srv.records) == requests


async def test_bad_request_names_the_field_and_no_key_is_an_authentication_error(voice_dir: Path) -> None:
    with local_server() as srv:
        async with engine(srv, voice_dir, api_key=None) as eng:
            with pytest.raises(AuthenticationError):
                await eng.synthesize(TEXT, voice="agent_female")
        async with engine(srv, voice_dir) as eng:
            with pytest.raises(
                InvalidRequestError
            ) as info:  # the emulation allows speed 0.25-4.0; we 0.5-2.0
                await eng.synthesize(TEXT, voice="agent_female", speed=3.0)
            assert info.value.field == "speed"
            with pytest.raises(InvalidRequestError) as info:
                await eng.synthesize(TEXT, voice="nobody")
            assert info.value.field == "voice" and "agent_female" in str(info.value)
        assert len(srv.records) == 1  # only the unauthenticated one reached the server


async def test_connection_refused_is_a_connection_error(voice_dir: Path) -> None:
    async with VllmOmniEngine("http://127.0.0.1:9", voices=voice_dir, retry=FAST_RETRY) as eng:
        with pytest.raises(APIConnectionError):
            await eng.synthesize(TEXT, voice="agent_female")


async def test_cancel_closes_the_request_and_key_stays_secret(voice_dir: Path) -> None:
    with local_server(faults="rtf=1") as srv:
        async with engine(srv, voice_dir) as eng:
            assert API_KEY not in repr(eng)
            utt = Synthesizer(eng, sample_rate=8000, voice="agent_female").speak(TEXT)
            async for _ in utt:
                await utt.cancel()
            assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
    assert other_tasks() == set()


# -- the gateway: the cloud's API in front of vLLM-Omni --------------------------------------------------


async def test_gateway_serves_the_cloud_api_with_named_voices(voice_dir: Path) -> None:
    tone = ToneEngine()
    with local_server(tone, tokens=["upstream-key"], faults="rtf=0.5") as upstream:
        gateway_engine = VllmOmniEngine(upstream.root_url, voices=voice_dir, api_key="upstream-key")
        with local_server(gateway_engine, voices=list(gateway_engine.voices or ())) as gw:
            # the official SDK, which only speaks the cloud protocol
            from zai import ZhipuAiClient

            client = ZhipuAiClient(api_key=API_KEY, base_url=gw.base_url)
            response = await asyncio.to_thread(
                client.audio.speech,
                model="glm-tts",
                input=TEXT,
                voice="agent_male",
                response_format="wav",
            )
            pcm, rate, _ = wav_to_pcm(response.content)
            assert rate == 24000 and pcm == tone.pcm(TEXT)
            assert upstream.records[0].body["ref_text"] == "您好，请问有什么可以帮您？"

            # an unknown voice gets the cloud's error code, before any upstream request
            async with CloudEngine(api_key=API_KEY, base_url=gw.base_url, retry=FAST_RETRY) as cloud:
                with pytest.raises(InvalidRequestError) as info:
                    await cloud.synthesize(TEXT, voice="tongtong")
                assert info.value.code == "1214"
                assert len(upstream.records) == 1

                # cancellation passes through: the client goes away, the upstream request is closed
                async for _ in cloud.stream(TEXT * 4, voice="agent_female"):
                    break
                assert await gw.wait_for(lambda: gw.records[-1].outcome == "disconnected", 2)
                assert await upstream.wait_for(lambda: upstream.records[-1].outcome == "disconnected", 2)
            await gateway_engine.aclose()


async def test_every_adapter_takes_the_engine_unchanged(voice_dir: Path) -> None:
    """Pipecat and LiveKit with VllmOmniEngine: only the engine object changes."""
    pytest.importorskip("pipecat")
    pytest.importorskip("livekit.agents")
    from livekit.plugins import glmtts
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.tests.utils import run_test
    from pipecat_glmtts import GLMHttpTTSService

    from ._livekit import assert_pushed_audio

    tone = ToneEngine()
    expected_8k = len(tone.pcm_at(TEXT, 8000)) // 2
    with local_server(tone) as srv:
        async with engine(srv, voice_dir) as eng:
            service = GLMHttpTTSService(engine=eng, settings=GLMHttpTTSService.Settings(voice="agent_male"))
            down, _ = await run_test(
                service,
                frames_to_send=[TTSSpeakFrame(TEXT)],
                pipeline_params=PipelineParams(audio_out_sample_rate=8000),
            )
            got = sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2
            assert got == expected_8k
            lk = glmtts.TTS(engine=eng, voice="agent_female")
            frame = await lk.synthesize(TEXT).collect()
            assert_pushed_audio([frame], tone.pcm(TEXT))
        assert [r.body["ref_text"] for r in srv.records] == [
            "您好，请问有什么可以帮您？",
            "你好，欢迎致电星河银行。",
        ]


async def test_closing_the_stream_closes_the_upstream_request(voice_dir: Path) -> None:
    with local_server(faults="rtf=1") as srv:
        async with engine(srv, voice_dir) as eng:
            chunks = eng.stream(TEXT * 3, voice="agent_female")
            await anext(chunks)
            await chunks.aclose()  # what a gateway does when its client goes away
            assert await srv.wait_for(lambda: srv.records[0].outcome == "disconnected", 2)
