"""The local server answers like the cloud: status codes, business codes and error shapes."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from glmtts_plugins import CloudEngine
from glmtts_plugins.server import FAULT_HEADER, MAX_BODY_BYTES, LocalServer, check_bind
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY

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
    with LocalServer(ToneEngine(chunk_bytes=960), tokens=[API_KEY], faults="rtf=0.5") as srv:
        async with CloudEngine(api_key=API_KEY, base_url=srv.base_url) as engine:
            for _ in range(6):
                first = None
                async for _chunk in engine.stream("您好，请问有什么可以帮您？"):
                    first = first or time.monotonic()
                delays.append(1000 * (first - srv.records[-1].first_audio_at))  # type: ignore[operator]
        ports = {port for _, _, port in srv.state.requests_seen}
    assert len(ports) == 1  # one reused connection
    assert statistics.median(delays[1:]) < 20, delays  # ~1 ms; 40+ ms with the stall
