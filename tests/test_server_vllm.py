"""The local server's emulation of vLLM-Omni's ``POST /v1/audio/speech`` (GLM-TTS with a reference voice)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from glmtts_plugins.audio.wav import pcm_to_wav, wav_to_pcm
from glmtts_plugins.errors import GLMTTSError, InvalidRequestError
from glmtts_plugins.server import FAULT_HEADER, MAX_BODY_BYTES, VLLM_MAX_BODY_BYTES, VLLM_PATH, LocalServer
from glmtts_plugins.testing import ToneEngine
from glmtts_plugins.voices import DEFAULT_VOICE, VOICES

from .conftest import API_KEY, collect_pcm, local_server

REF_WAV = pcm_to_wav(ToneEngine().pcm("参" * 75), 24000)  # 3 s of tone
REF_URI = "data:audio/wav;base64," + base64.b64encode(REF_WAV).decode()
TEXT = "您好，请问有什么可以帮您？"
STREAM = {
    "model": "zai-org/GLM-TTS",
    "input": TEXT,
    "voice": "default",
    "ref_audio": REF_URI,
    "ref_text": "参考录音的文字。",
    "response_format": "pcm",
    "stream": True,
    "stream_format": "audio",
}
WHOLE = {**STREAM, "stream": False, "response_format": "wav"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class RecordingEngine(ToneEngine):
    """A tone engine that notes each call's voice and speed and when its stream is closed."""

    def __init__(
        self, *, accept: set[str] | None = None, fail: GLMTTSError | None = None, **kw: object
    ) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.accept, self.fail = accept, fail
        self.calls: list[tuple[str, float]] = []
        self.closed = 0

    async def stream(  # type: ignore[override]
        self, text: str, *, voice: str = DEFAULT_VOICE, speed: float = 1.0, volume: float = 1.0
    ) -> AsyncIterator[bytes]:
        self.calls.append((voice, speed))
        if self.accept is not None and voice not in self.accept:
            raise InvalidRequestError(f"unknown voice {voice!r}", field="voice")
        if self.fail is not None:
            raise self.fail
        try:
            async for chunk in super().stream(text, voice=voice, speed=speed, volume=volume):
                yield chunk
        finally:
            self.closed += 1


@pytest.fixture
def srv(server: LocalServer) -> LocalServer:
    return server  # conftest's server, under this file's name


@pytest.fixture
async def client(srv: LocalServer):
    async with httpx.AsyncClient(base_url=srv.root_url, headers=AUTH, timeout=10) as http:
        yield http


async def test_streams_the_engines_pcm_exactly(client: httpx.AsyncClient, srv: LocalServer) -> None:
    async with client.stream("POST", VLLM_PATH, json=STREAM) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/pcm"
        assert response.headers["x-request-id"] == srv.records[-1].id
        body = await collect_pcm(response.aiter_raw())
    assert body == ToneEngine().pcm(TEXT)
    assert await srv.wait_for(lambda: srv.records[-1].outcome == "completed")
    rec = srv.records[-1]
    assert rec.path == VLLM_PATH and rec.status == 200 and rec.code is None
    assert rec.audio_bytes == len(body) and rec.events == -(-len(body) // 960)
    assert rec.first_audio_at is not None and rec.started <= rec.first_audio_at <= rec.ended  # type: ignore[operator]


async def test_chunk_bytes_fault_splits_samples_and_keeps_every_byte(
    client: httpx.AsyncClient, srv: LocalServer
) -> None:
    response = await client.post(VLLM_PATH, json=STREAM, headers={FAULT_HEADER: "chunk_bytes=7"})
    assert response.status_code == 200 and response.content == ToneEngine().pcm(TEXT)
    assert await srv.wait_for(lambda: srv.records[-1].outcome == "completed")
    assert srv.records[-1].events == -(-len(response.content) // 7)
    assert srv.records[-1].fault == "chunk_bytes=7"


async def test_whole_replies_as_wav_or_pcm(client: httpx.AsyncClient) -> None:
    wav = await client.post(VLLM_PATH, json=WHOLE)
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    assert wav_to_pcm(wav.content) == (ToneEngine().pcm(TEXT), 24000, 1)
    pcm = await client.post(VLLM_PATH, json={**WHOLE, "response_format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm" and pcm.content == ToneEngine().pcm(TEXT)
    default = await client.post(VLLM_PATH, json={k: v for k, v in WHOLE.items() if k != "response_format"})
    assert default.headers["content-type"] == "audio/wav"  # vLLM's default format


NOT_WAV = "data:audio/wav;base64," + base64.b64encode(b"ID3\x03 this is not a wave file" * 10).decode()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": None}, "input"),
        ({"input": "   "}, "input"),
        ({"input": 42}, "input"),
        ({"ref_audio": None}, "ref_audio"),
        ({"ref_audio": ""}, "ref_audio"),
        ({"ref_audio": "/tmp/ref.wav"}, "ref_audio"),
        ({"ref_audio": "data:audio/wav;base64,@@not base64@@"}, "ref_audio"),
        ({"ref_audio": "data:audio/mpeg;base64," + base64.b64encode(REF_WAV).decode()}, "ref_audio"),
        ({"ref_audio": NOT_WAV}, "ref_audio"),
        ({"ref_text": None}, "ref_text"),
        ({"ref_text": ""}, "ref_text"),
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"stream": "yes"}, "stream"),
        ({"response_format": "mp3"}, "response_format"),
        ({"response_format": "flac", "stream": False}, "response_format"),
        ({"response_format": "ogg"}, "response_format"),
        ({"response_format": "wav"}, "response_format"),  # streaming is pcm only
        ({"stream_format": "sse"}, "stream_format"),
        ({"speed": 0.2}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"speed": True}, "speed"),
    ],
)
async def test_bad_fields_name_the_field(
    client: httpx.AsyncClient, srv: LocalServer, change: dict, param: str
) -> None:
    body = {k: v for k, v in {**STREAM, **change}.items() if v is not None}
    response = await client.post(VLLM_PATH, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["param"] == param and error["code"] == 400
    assert param in error["message"]
    rec = srv.records[-1]
    assert (rec.outcome, rec.status, rec.code) == ("rejected", 400, "400")


async def test_unsupported_formats_say_what_is_supported(client: httpx.AsyncClient) -> None:
    response = await client.post(VLLM_PATH, json={**WHOLE, "response_format": "mp3"})
    message = response.json()["error"]["message"]
    assert "mp3" in message and "pcm" in message and "wav" in message


async def test_nan_speed_and_bad_json_are_rejected(client: httpx.AsyncClient) -> None:
    nan = (
        b'{"model":"m","input":"x","ref_audio":"https://x/r.wav","ref_text":"t",'
        b'"response_format":"wav","speed":NaN}'
    )
    response = await client.post(VLLM_PATH, content=nan)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "speed")
    broken = await client.post(VLLM_PATH, content=b"{not json")
    assert broken.status_code == 400 and broken.json()["error"]["param"] is None
    listed = await client.post(VLLM_PATH, json=[STREAM])
    assert listed.status_code == 400 and "object" in listed.json()["error"]["message"]


async def test_urls_and_unknown_fields_are_accepted_and_speed_is_clamped() -> None:
    engine = RecordingEngine()
    with local_server(engine, tokens=None) as srv:
        async with httpx.AsyncClient(base_url=srv.root_url) as http:  # no tokens: no auth needed
            for ref, speed in (
                ("https://example.com/r.wav", 4.0),
                ("file:///srv/r.wav", 0.25),
                ("http://h/r", 1.3),
            ):
                body = {**WHOLE, "ref_audio": ref, "speed": speed, "volume": 3, "language": "zh"}
                response = await http.post(VLLM_PATH, json=body)
                assert response.status_code == 200, response.text
            response = await http.post(VLLM_PATH, json={k: v for k, v in WHOLE.items() if k != "voice"})
            assert response.status_code == 200
    assert [speed for _, speed in engine.calls] == [2.0, 0.5, 1.3, 1.0]
    assert srv.records[0].body["ref_audio"] == "https://example.com/r.wav"
    assert srv.records[0].body["language"] == "zh"


async def test_record_summarizes_the_reference_and_masks_the_token(
    client: httpx.AsyncClient, srv: LocalServer
) -> None:
    response = await client.post(VLLM_PATH, json={**WHOLE, "speed": 1.5})
    assert response.status_code == 200
    rec = srv.records[-1]
    assert rec.body["ref_audio"] == {"kind": "data", "bytes": len(REF_WAV)}
    assert rec.body["ref_text"] == STREAM["ref_text"] and rec.body["input"] == TEXT
    assert rec.body["speed"] == 1.5 and rec.body["stream"] is False and rec.body["model"] == "zai-org/GLM-TTS"
    assert rec.headers["authorization"] == "Bearer ***" and API_KEY not in str(rec.headers)
    assert rec.headers["content-type"] == "application/json"
    assert REF_URI not in repr(rec)


async def test_the_voice_follows_the_reference_and_falls_back_to_the_default() -> None:
    engine = RecordingEngine()
    refs = [f"https://example.com/speaker-{i}.wav" for i in range(12)] + [REF_URI]
    with local_server(engine, tokens=None) as srv:
        async with httpx.AsyncClient(base_url=srv.root_url) as http:
            for ref in [*refs, *refs]:
                assert (await http.post(VLLM_PATH, json={**WHOLE, "ref_audio": ref})).status_code == 200
    voices = [voice for voice, _ in engine.calls]
    assert voices[: len(refs)] == voices[len(refs) :]  # stable
    assert set(voices) <= set(VOICES) and len(set(voices)) > 1  # different references, different voices

    picky = RecordingEngine(accept={DEFAULT_VOICE})
    with local_server(picky, tokens=None) as srv:
        async with httpx.AsyncClient(base_url=srv.root_url) as http:
            for ref in refs[:6]:
                response = await http.post(VLLM_PATH, json={**STREAM, "ref_audio": ref})
                assert response.status_code == 200 and response.content == ToneEngine().pcm(TEXT)
    assert picky.calls[-1][0] == DEFAULT_VOICE
    assert any(voice != DEFAULT_VOICE for voice, _ in picky.calls)  # some were tried first and rejected


async def test_authentication_when_the_server_has_tokens(srv: LocalServer) -> None:
    async with httpx.AsyncClient(base_url=srv.root_url) as http:
        missing = await http.post(VLLM_PATH, json=WHOLE)
        wrong = await http.post(VLLM_PATH, json=WHOLE, headers={"Authorization": "Bearer nope"})
        not_bearer = await http.post(VLLM_PATH, json=WHOLE, headers={"Authorization": API_KEY})
        right = await http.post(VLLM_PATH, json=WHOLE, headers=AUTH)
    for response in (missing, wrong, not_bearer):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "AuthenticationError" and error["code"] == 401 and error["message"]
        assert error["param"] is None
    assert right.status_code == 200
    assert (
        "authorization" not in srv.records[0].headers
        and srv.records[1].headers["authorization"] == "Bearer ***"
    )


async def test_body_limit_is_16_mib_here_and_unchanged_on_the_cloud_path(client: httpx.AsyncClient) -> None:
    assert MAX_BODY_BYTES == 64 * 1024
    long_ref = pcm_to_wav(ToneEngine().pcm("参" * 1000), 24000)  # 40 s, ~1.9 MB: 30x the cloud's limit
    big = "data:audio/wav;base64," + base64.b64encode(long_ref).decode()
    response = await client.post(VLLM_PATH, json={**WHOLE, "ref_audio": big})
    assert response.status_code == 200, response.text
    huge = await client.post(VLLM_PATH, json={**WHOLE, "ref_text": "x" * VLLM_MAX_BODY_BYTES})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == 413


async def test_injected_status_then_success(srv: LocalServer) -> None:
    fault = {FAULT_HEADER: "status=503;times=1"}
    async with httpx.AsyncClient(base_url=srv.root_url, headers={**AUTH, **fault}) as http:
        first = await http.post(VLLM_PATH, json=STREAM)
        second = await http.post(VLLM_PATH, json=STREAM)
        limited = await http.post(VLLM_PATH, json=STREAM, headers={FAULT_HEADER: "status=429"})
    assert first.status_code == 503
    assert first.json()["error"] == {
        "message": "injected failure",
        "type": "InternalServerError",
        "param": None,
        "code": 503,
    }
    assert second.status_code == 200 and second.content == ToneEngine().pcm(TEXT)
    assert (limited.status_code, limited.json()["error"]["type"]) == (429, "RateLimitError")
    assert [r.outcome for r in srv.records] == ["rejected", "completed", "rejected"]


async def test_when_input_limits_a_fault_to_matching_text(client: httpx.AsyncClient) -> None:
    fault = {FAULT_HEADER: "status=500;when_input=BAD"}
    ok = await client.post(VLLM_PATH, json=STREAM, headers=fault)
    bad = await client.post(VLLM_PATH, json={**STREAM, "input": "BAD 坏了"}, headers=fault)
    assert (ok.status_code, bad.status_code) == (200, 500)


async def test_disconnect_after_drops_the_connection(client: httpx.AsyncClient, srv: LocalServer) -> None:
    received = bytearray()
    with pytest.raises(httpx.HTTPError):
        async with client.stream(
            "POST", VLLM_PATH, json=STREAM, headers={FAULT_HEADER: "disconnect_after=2"}
        ) as response:
            assert response.status_code == 200
            await collect_pcm(response.aiter_raw(), into=received)
    assert await srv.wait_for(lambda: srv.records[-1].outcome == "aborted")
    assert srv.records[-1].events == 2 and bytes(received) == ToneEngine().pcm(TEXT)[: 2 * 960]


async def test_engine_error_before_audio_is_an_http_error() -> None:
    engines = [
        RecordingEngine(fail=GLMTTSError("the model fell over")),
        RecordingEngine(fail=GLMTTSError("busy", status=503)),
        RecordingEngine(fail=InvalidRequestError("text has no speakable characters", field="input")),
    ]
    expected = [
        (500, "InternalServerError", None),
        (503, "InternalServerError", None),
        (400, "BadRequestError", "input"),
    ]
    for engine, (status, kind, param) in zip(engines, expected, strict=True):
        with local_server(engine, tokens=None) as srv:
            async with httpx.AsyncClient(base_url=srv.root_url) as http:
                response = await http.post(VLLM_PATH, json=STREAM)
        error = response.json()["error"]
        assert (response.status_code, error["type"], error["param"], error["code"]) == (
            status,
            kind,
            param,
            status,
        )
        assert error["message"] == engine.fail.message  # type: ignore[union-attr]
        assert srv.records[-1].outcome == "rejected"


async def test_engine_error_mid_stream_breaks_the_transfer() -> None:
    class Failing(ToneEngine):
        async def stream(self, text: str, **kw: object) -> AsyncIterator[bytes]:  # type: ignore[override]
            async for i, chunk in _enumerate(super().stream(text, **kw)):  # type: ignore[arg-type]
                if i == 2:
                    raise GLMTTSError("out of memory", code="500")
                yield chunk

    with local_server(Failing(), tokens=None) as srv:
        async with httpx.AsyncClient(base_url=srv.root_url) as http:
            with pytest.raises(httpx.HTTPError):
                await http.post(VLLM_PATH, json=STREAM)
        assert await srv.wait_for(lambda: srv.records[-1].outcome == "error")
    assert (srv.records[-1].code, srv.records[-1].events) == ("500", 2)


async def _enumerate(source: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    i = 0
    async for item in source:
        yield i, item
        i += 1


async def test_client_disconnect_is_recorded_and_closes_the_engine_stream() -> None:
    engine = RecordingEngine()
    with local_server(engine, tokens=None, faults="rtf=1") as srv:
        async with httpx.AsyncClient(base_url=srv.root_url, timeout=10) as http:
            body = {**STREAM, "input": "好" * 50}  # 2 s of audio, sent in real time
            async with http.stream("POST", VLLM_PATH, json=body) as response:
                async for _chunk in response.aiter_raw():
                    break
        assert await srv.wait_for(lambda: srv.records[-1].outcome == "disconnected")
        assert await srv.wait_for(lambda: engine.closed == 1)
        rec = srv.records[-1]
        assert 1 <= rec.events < 50 and rec.first_audio_at is not None
        assert rec.ended is not None and rec.ended - rec.started < 1.5
