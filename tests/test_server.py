"""The local server answers like the cloud: status codes, business codes and error shapes."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

import httpx
import pytest

from glmtts_plugins import CloudEngine
from glmtts_plugins.server import FAULT_HEADER, MAX_BODY_BYTES, LocalServer, check_bind
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, local_server

GOOD = {"model": "glm-tts", "input": "你好", "voice": "tongtong", "stream": False, "response_format": "wav"}


@pytest.fixture
def http(server: LocalServer):
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        yield client


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"model": "glm-4"}, 400, "1211"),
        ({"model": None}, 400, "1213"),
        ({"input": ""}, 400, "1213"),
        ({"input": "好" * 1025}, 400, "1261"),
        ({"voice": "nobody"}, 400, "1214"),
        ({"speed": 2.5}, 400, "1214"),
        ({"speed": 0.4}, 400, "1214"),
        ({"volume": 0}, 400, "1214"),
        ({"volume": 11}, 400, "1214"),
        ({"response_format": "mp3"}, 400, "1214"),
        ({"stream": True, "response_format": "wav"}, 400, "1214"),
        ({"stream": True, "response_format": "pcm", "encode_format": "base32"}, 400, "1214"),
    ],
)
def test_bad_fields_get_the_clouds_codes(http: httpx.Client, change: dict, status: int, code: str) -> None:
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = http.post("/audio/speech", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["code"], str) and error["message"]


def test_nan_is_an_illegal_value(http: httpx.Client) -> None:
    body = b'{"model":"glm-tts","input":"x","voice":"tongtong","speed":NaN,"response_format":"wav"}'
    response = http.post("/audio/speech", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "1214")


def test_text_the_engine_refuses_is_an_error_reply_not_a_crash(
    server: LocalServer, http: httpx.Client
) -> None:
    # A lone surrogate passes the server's own checks and is refused by the engine's validation: a JSON
    # error for a whole reply (its record "rejected"), an SSE error event for a stream (its record "error").
    body = b'{"model":"glm-tts","input":"hi \\ud800 there","voice":"tongtong","response_format":"wav"}'
    response = http.post("/audio/speech", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 500 and "surrogate" in response.json()["error"]["message"]
    streamed = body.replace(b'"response_format":"wav"', b'"stream":true,"response_format":"pcm"')
    response = http.post("/audio/speech", content=streamed, headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and b'"error"' in response.content and b"surrogate" in response.content
    final = asyncio.run(server.wait_for(lambda: all(r.outcome != "running" for r in server.records), 2))
    assert final and [r.outcome for r in server.records] == ["rejected", "error"]


def test_exactly_1024_characters_is_accepted(http: httpx.Client) -> None:
    assert http.post("/audio/speech", json={**GOOD, "input": "好" * 1024}).status_code == 200


def test_authentication(server: LocalServer) -> None:
    url = server.base_url + "/audio/speech"
    missing = httpx.post(url, json=GOOD)
    wrong = httpx.post(url, json=GOOD, headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "1001")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "1002")


def test_oversized_body_is_rejected(http: httpx.Client) -> None:
    response = http.post("/audio/speech", json={**GOOD, "input": "x" * (MAX_BODY_BYTES + 1)})
    assert response.status_code == 413


def test_bad_json_and_bad_fault_header(http: httpx.Client) -> None:
    assert http.post("/audio/speech", content=b"{not json").json()["error"]["code"] == "1210"
    response = http.post("/audio/speech", json=GOOD, headers={FAULT_HEADER: "explode=1"})
    assert response.status_code == 400 and "explode" in response.json()["error"]["message"]


def test_wav_reply_and_per_request_fault(http: httpx.Client, tone: ToneEngine) -> None:
    response = http.post("/audio/speech", json=GOOD)
    assert response.headers["content-type"] == "audio/wav" and response.content[:4] == b"RIFF"
    failing = http.post("/audio/speech", json=GOOD, headers={FAULT_HEADER: "status=429;code=1113"})
    assert (failing.status_code, failing.json()["error"]["code"]) == (429, "1113")


def test_sse_reply_shape(http: httpx.Client) -> None:
    body = {**GOOD, "stream": True, "response_format": "pcm"}
    response = http.post("/audio/speech", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    import json

    events = [json.loads(line[6:]) for line in lines]
    assert events[0]["choices"][0]["delta"]["return_sample_rate"] == 24000
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert "delta" not in events[-1]["choices"][0]


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None)
    with pytest.raises(ValueError, match="bearer token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="bearer token"):
        LocalServer(ToneEngine(), host="0.0.0.0")
    check_bind("0.0.0.0", ["secret"])


async def test_first_audio_is_not_held_back_on_a_reused_connection() -> None:
    """Nagle's algorithm on the server side held the first SSE event behind the response head until
    the client's delayed ACK: +40 ms on every request but the first of a keep-alive connection."""
    delays = []
    with local_server(ToneEngine(chunk_bytes=960), faults="rtf=0.5") as srv:
        async with CloudEngine(api_key=API_KEY, base_url=srv.base_url) as engine:
            for _ in range(6):
                first = None
                async for _chunk in engine.stream("您好，请问有什么可以帮您？"):
                    first = first or time.monotonic()
                delays.append(1000 * (first - srv.records[-1].first_audio_at))  # type: ignore[operator]
        ports = {port for _, _, port in srv.state.requests_seen}
    assert len(ports) == 1  # one reused connection
    assert statistics.median(delays[1:]) < 20, delays  # ~1 ms; 40+ ms with the stall


class _ClosableStream:
    """An async iterator that is not a generator (as a wrapped HTTP response may be): only an explicit
    ``aclose()`` releases it."""

    def __init__(self, chunks: list[bytes], closed: list[int]) -> None:
        self._chunks, self._closed = list(chunks), closed

    def __aiter__(self) -> _ClosableStream:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    async def aclose(self) -> None:
        self._closed.append(1)


class _IteratorEngine(ToneEngine):
    def __init__(self) -> None:
        super().__init__()
        self.closed: list[int] = []

    def stream(self, text: str, **kw: object) -> _ClosableStream:  # type: ignore[override]
        pcm = self.pcm(text)
        return _ClosableStream([pcm[i : i + 960] for i in range(0, len(pcm), 960)], self.closed)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/paas/v4/audio/speech", GOOD),  # the whole-WAV branch, which did not close it
        ("/api/paas/v4/audio/speech", {**GOOD, "stream": True, "response_format": "pcm"}),
        (
            "/v1/audio/speech",
            {"model": "m", "input": "你好", "ref_audio": "https://h/r.wav", "ref_text": "t"},
        ),
        (
            "/v1/audio/speech",
            {"model": "m", "input": "你好", "ref_audio": "https://h/r.wav", "ref_text": "t", "stream": True}
            | {"response_format": "pcm"},
        ),
    ],
)
async def test_every_reply_closes_the_engine_stream(path: str, body: dict) -> None:
    engine = _IteratorEngine()
    with local_server(engine) as srv:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            response = await http.post(srv.root_url + path, json=body)
        assert response.status_code == 200 and len(response.content) >= len(engine.pcm("你好"))
        assert await srv.wait_for(lambda: srv.records[-1].outcome == "completed")
    assert engine.closed == [1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/paas/v4/audio/speech",
            {**GOOD, "input": "你好" * 100, "stream": True, "response_format": "pcm"},
        ),
        (
            "/v1/audio/speech",
            {"model": "m", "input": "你好" * 100, "ref_audio": "https://h/r.wav", "ref_text": "t"}
            | {"stream": True, "response_format": "pcm"},
        ),
    ],
)
async def test_a_stream_cut_by_server_shutdown_ends_its_record(path: str, body: dict) -> None:
    """The server stops while a paced stream is mid-way: the response is cancelled, and its record ends
    (``aborted``) instead of staying ``running``; the engine's stream is closed."""
    engine = _IteratorEngine()
    srv = local_server(engine, faults="rtf=1", shutdown_timeout=0.2).start()  # ~24 s of audio, in real time
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            async with http.stream("POST", srv.root_url + path, json=body) as response:
                assert response.status_code == 200
                chunks = response.aiter_bytes()
                await anext(chunks)  # mid-stream
                rec = srv.records[-1]
                assert rec.outcome == "running"
                await asyncio.to_thread(srv.stop)
                with pytest.raises(httpx.HTTPError):  # the connection went with the server
                    async for _ in chunks:
                        pass
    finally:
        srv.stop()
    assert rec.outcome == "aborted" and rec.done.is_set() and rec.ended is not None
    assert engine.closed == [1]


async def test_a_whole_reply_cut_by_server_shutdown_ends_its_record() -> None:
    """The server stops while a whole reply waits for its first byte: the record ends ``aborted`` too."""
    srv = local_server(shutdown_timeout=0.2).start()
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            url = srv.root_url + "/api/paas/v4/audio/speech"
            request = asyncio.create_task(
                http.post(url, json=GOOD, headers={FAULT_HEADER: "first_byte_ms=30000"})
            )
            assert await srv.wait_for(lambda: bool(srv.records) and srv.records[-1].fault != "")
            rec = srv.records[-1]
            assert rec.outcome == "running"
            await asyncio.to_thread(srv.stop)
            response = await request
            assert response.status_code == 500  # uvicorn's answer to a response that never started
    finally:
        srv.stop()
    assert rec.outcome == "aborted" and rec.done.is_set()


@pytest.mark.parametrize("path", ["/api/paas/v4/audio/speech", "/v1/audio/speech"])
def test_deeply_nested_json_is_a_clean_400(server: LocalServer, path: str) -> None:
    url = server.root_url + path
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    for nested in (b"[" * 60_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000):  # under the 64 KiB limit
        response = httpx.post(url, content=nested, headers=auth)
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["error"]["message"]
    assert [r.outcome for r in server.records] == ["rejected", "rejected"]


@pytest.mark.parametrize("status", ["99", "101", "600", "1000", "-1"])
def test_a_status_no_http_reply_can_carry_is_a_bad_fault_spec(http: httpx.Client, status: str) -> None:
    response = http.post("/audio/speech", json=GOOD, headers={FAULT_HEADER: f"status={status}"})
    assert response.status_code == 400  # answered, not a dropped connection
    error = response.json()["error"]
    assert error["code"] == "1210" and "status" in error["message"] and "200 to 599" in error["message"]


@pytest.mark.parametrize("fault", ["first_byte_ms=nan", "rtf=-1", "chunk_bytes=-5", "times=-2"])
def test_non_finite_or_negative_fault_numbers_are_refused(http: httpx.Client, fault: str) -> None:
    response = http.post("/audio/speech", json=GOOD, headers={FAULT_HEADER: fault})
    assert response.status_code == 400 and fault.split("=")[0] in response.json()["error"]["message"]


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_write_no_body(server: LocalServer, status: int) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}", FAULT_HEADER: f"status={status}"}
    for url, body in (
        (server.base_url + "/audio/speech", GOOD),
        (
            server.root_url + "/v1/audio/speech",
            {"model": "m", "input": "x", "ref_audio": "https://h/r", "ref_text": "t"},
        ),
    ):
        with httpx.Client(headers=auth) as client:
            response = client.post(url, json=body)
            assert response.status_code == status and response.content == b""
            assert "content-length" not in response.headers or response.headers["content-length"] == "0"
            assert client.post(url, json=body).status_code == status  # the connection is still usable
    assert [r.outcome for r in server.records] == ["rejected"] * 4


async def test_injected_434_is_an_authentication_error(server: LocalServer) -> None:
    from glmtts_plugins import AuthenticationError

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        direct = await http.post(
            server.base_url + "/audio/speech", json=GOOD, headers={FAULT_HEADER: "status=434"}
        )
    assert direct.status_code == 434 and "code" not in direct.json()["error"]  # none documented for 434
    with local_server(faults="status=434") as srv:
        async with CloudEngine(api_key=API_KEY, base_url=srv.base_url) as engine:
            with pytest.raises(AuthenticationError) as info:
                await engine.synthesize("你好")
    assert (info.value.status, info.value.code) == (434, None)
    assert len(srv.records) == 1  # not retried


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("path", ["/api/paas/v4/audio/speech", "/v1/audio/speech"])
async def test_a_client_leaving_mid_body_logs_no_traceback(server: LocalServer, path: str) -> None:
    logs = _Collect()
    logging.getLogger("uvicorn.error").addHandler(logs)
    try:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            )
            writer.write(head.encode() + b'{"model": "glm-tts", "input": "')
            assert await server.wait_for(
                lambda: bool(server.records) and server.records[-1].outcome == "running"
            )
            writer.close()
            await writer.wait_closed()
        assert await server.wait_for(
            lambda: len(server.records) == 3 and all(r.outcome == "disconnected" for r in server.records)
        )
        await asyncio.sleep(0.2)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(logs)
    assert [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING] == []
