"""GLMHttpTTSService in Pipecat's own test harness (``run_test``) against the local server on loopback."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.errors import ErrorCategory
from pipecat_glmtts import GLMHttpTTSService

from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, local_server

TEXT = "您好，这里是星河银行信用卡中心，请问有什么可以帮您？"
LONG = (
    "您好，这里是星河银行信用卡中心。我们今天为您准备了一份新的优惠活动，消费满两百元立减三十元，每人限一次。"
)


def params(rate: int) -> PipelineParams:
    return PipelineParams(audio_out_sample_rate=rate, enable_metrics=True, enable_usage_metrics=True)


def service(srv: LocalServer, **kw: object) -> GLMHttpTTSService:
    return GLMHttpTTSService(api_key=API_KEY, base_url=srv.base_url, **kw)  # type: ignore[arg-type]


def expected_samples(tone: ToneEngine, text: str, rate: int) -> int:
    return len(tone.pcm_at(text, rate)) // 2


def audio(frames: list, context_id: str | None = None) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame) and context_id in (None, f.context_id)]


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_frames_in_order_at_the_pipeline_rate_with_the_tail(rate: int) -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        down, up = await run_test(
            service(srv), frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(rate)
        )
    kinds = [type(f) for f in down if isinstance(f, TTSStartedFrame | TTSAudioRawFrame | TTSStoppedFrame)]
    assert kinds[0] is TTSStartedFrame and kinds[-1] is TTSStoppedFrame
    assert set(kinds[1:-1]) == {TTSAudioRawFrame}
    frames = audio(down)
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(rate, 1)}
    # every sample of the utterance, resampler tail included (Pipecat's shared resampler loses ~87 ms at 8k)
    assert sum(len(f.audio) for f in frames) // 2 == expected_samples(tone, TEXT, rate)
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_sample_rate_from_the_constructor_wins_and_bad_rates_are_refused() -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        down, _ = await run_test(
            service(srv, sample_rate=16000),
            frames_to_send=[TTSSpeakFrame(TEXT)],
            pipeline_params=params(8000),
        )
    assert {f.sample_rate for f in audio(down)} == {16000}
    from glmtts_plugins import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="sample_rate"):
        GLMHttpTTSService(api_key=API_KEY, sample_rate=11025)


async def test_settings_update_reaches_the_next_request() -> None:
    with local_server() as srv:
        tts = service(srv, settings=GLMHttpTTSService.Settings(voice="tongtong"))
        await run_test(
            tts,
            frames_to_send=[
                TTSSpeakFrame("第一句。"),
                TTSUpdateSettingsFrame(
                    delta=GLMHttpTTSService.Settings(voice="xiaochen", speed=1.3, volume=2.0)
                ),
                TTSSpeakFrame("第二句。"),
            ],
            pipeline_params=params(8000),
        )
        bodies = [r.body for r in srv.records]
    assert bodies[0]["voice"] == "tongtong"
    assert (bodies[1]["voice"], bodies[1]["speed"], bodies[1]["volume"]) == ("xiaochen", 1.3, 2.0)


async def test_bad_settings_update_is_refused_with_the_field() -> None:
    with local_server() as srv:
        tts = service(srv)
        _, up = await run_test(
            tts,
            frames_to_send=[
                TTSUpdateSettingsFrame(delta=GLMHttpTTSService.Settings(speed=9.0)),
                TTSSpeakFrame("还能说话。"),
            ],
            pipeline_params=params(8000),
        )
        bodies = [r.body for r in srv.records]
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors and "speed" in errors[0].error
    assert bodies and bodies[0]["speed"] == 1.0


async def test_authentication_error_is_permanent() -> None:
    with local_server() as srv:
        tts = GLMHttpTTSService(api_key="wrong-key-0000", base_url=srv.base_url)
        _, up = await run_test(tts, frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(8000))
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors[0].category is ErrorCategory.AUTHENTICATION
    assert not tts.is_usable
    assert "wrong-key-0000" not in errors[0].error


async def test_rate_limit_before_audio_is_retried() -> None:
    tone = ToneEngine()
    with local_server(tone, faults="status=429;code=1302;times=1") as srv:
        down, up = await run_test(
            service(srv), frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(8000)
        )
        outcomes = [(r.status, r.outcome) for r in srv.records]
    assert outcomes == [(429, "rejected"), (200, "completed")]
    assert sum(len(f.audio) for f in audio(down)) // 2 == expected_samples(tone, TEXT, 8000)
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_drop_after_audio_is_not_retried_and_keeps_the_audio() -> None:
    tone = ToneEngine(chunk_bytes=960)
    with local_server(tone, faults="disconnect_after=3") as srv:
        down, up = await run_test(
            service(srv), frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(8000)
        )
        records = list(srv.records)
    assert len(records) == 1  # no second request: it would repeat speech
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors and errors[0].category is ErrorCategory.CONNECTIVITY
    assert sum(len(f.audio) for f in audio(down)) // 2 == 3 * 960 // 2 // 3  # 3 events of 20 ms, at 8 kHz


@pytest.mark.parametrize("text", ["。", "……！", "😊", "  ", "?!"])
async def test_punctuation_only_makes_no_request_and_no_error(text: str) -> None:
    with local_server() as srv:
        down, up = await run_test(
            service(srv), frames_to_send=[TTSSpeakFrame(text)] * 4, pipeline_params=params(8000)
        )
        assert srv.records == []
    assert not audio(down)
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_long_text_is_split_not_truncated() -> None:
    text = "，".join(f"这是第{i}句话的内容" for i in range(150)) + "。"
    with local_server(ToneEngine(ms_per_char=1)) as srv:
        await run_test(service(srv), frames_to_send=[TTSSpeakFrame(text)], pipeline_params=params(8000))
        sent = [r.body["input"] for r in srv.records]
    assert len(sent) >= 2 and all(len(s) <= 1024 for s in sent) and "".join(sent) == text


async def test_any_core_engine_can_be_passed_in() -> None:
    tone = ToneEngine()
    down, _ = await run_test(
        GLMHttpTTSService(engine=tone), frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(16000)
    )
    assert sum(len(f.audio) for f in audio(down)) // 2 == expected_samples(tone, TEXT, 16000)


async def test_random_interruptions_stop_the_utterance_and_the_request() -> None:
    """50 runs: an InterruptionFrame at a random moment of a paced utterance, then a fresh utterance."""
    rng = random.Random(4)
    tone = ToneEngine()
    with local_server(tone, faults="rtf=0.5") as srv:
        for run in range(50):
            before = len(srv.records)
            rate = rng.choice([8000, 16000])
            down, _ = await run_test(
                service(srv),
                frames_to_send=[
                    TTSSpeakFrame(LONG),
                    SleepFrame(rng.uniform(0.05, 0.6)),
                    InterruptionFrame(),
                    SleepFrame(0.05),
                    TTSSpeakFrame("好的。"),
                ],
                pipeline_params=params(rate),
            )
            cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
            first = audio(down[:cut])
            assert first, f"run {run}: no audio before the interruption"
            interrupted = first[0].context_id
            assert not audio(down[cut:], interrupted), (
                f"run {run}: audio of the interrupted utterance after it"
            )
            after = audio(down[cut:])
            assert sum(len(f.audio) for f in after) // 2 == expected_samples(tone, "好的。", rate), run
            assert await srv.wait_for(lambda b=before: srv.records[b].outcome == "disconnected", 2), run


# -- issue 10: defects found as a Pipecat user ---------------------------------------------------------


async def test_a_failure_before_audio_ends_its_audio_context_at_once() -> None:
    """No stop_frame_timeout_s (12 s here) wait after an ErrorFrame: the next text is spoken at once."""
    tone = ToneEngine()
    with local_server(tone, faults="status=400;code=1301;when_input=拒绝") as srv:
        t0 = time.monotonic()
        down, up = await run_test(
            service(srv),
            frames_to_send=[TTSSpeakFrame("请拒绝这句。"), TTSSpeakFrame(TEXT)],
            pipeline_params=params(8000),
        )
        elapsed = time.monotonic() - t0
    errors = [f for f in up if isinstance(f, ErrorFrame) and "GLM-TTS" in f.error]
    assert errors and errors[0].category is ErrorCategory.UNKNOWN  # a blocked text is not permanent
    assert elapsed < 4.0, elapsed
    stops = [f for f in down if isinstance(f, TTSStoppedFrame)]
    assert len(stops) == 2
    assert sum(len(f.audio) for f in audio(down)) // 2 == expected_samples(tone, TEXT, 8000)


async def stalled_listener() -> tuple[asyncio.Server, str]:
    """Accepts TCP connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/paas/v4"


async def test_prewarm_never_delays_the_start() -> None:
    server, url = await stalled_listener()
    async with server:
        tts = GLMHttpTTSService(api_key=API_KEY, base_url=url)
        t0 = time.monotonic()
        await run_test(tts, frames_to_send=[], pipeline_params=params(8000))
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed  # the prewarm's HEAD never gets an answer; it runs in the background


@pytest.mark.parametrize(
    ("keyword", "value", "field", "sent"),
    [
        ("voice", "xiaochen", "voice", "xiaochen"),
        ("voice_id", "xiaochen", "voice", "xiaochen"),
        ("speed", 1.5, "speed", 1.5),
        ("model", "glm-tts", "model", "glm-tts"),
    ],
)
async def test_constructor_keywords_of_other_services_work_with_a_deprecation_warning(
    keyword: str, value: object, field: str, sent: object
) -> None:
    from pipecat.utils import deprecation

    deprecation._warned_sites.clear()
    with local_server() as srv:
        with pytest.warns(DeprecationWarning, match=keyword):
            tts = service(srv, **{keyword: value})
        await run_test(tts, frames_to_send=[TTSSpeakFrame("您好。")], pipeline_params=params(8000))
        body = srv.records[0].body
    assert body[field] == sent


async def test_every_core_rate_works_and_others_are_refused_with_an_error_frame() -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        down, up = await run_test(
            service(srv), frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(22050)
        )
        assert {f.sample_rate for f in audio(down)} == {22050}
        assert sum(len(f.audio) for f in audio(down)) // 2 == expected_samples(tone, TEXT, 22050)
        before = len(srv.records)
        tts = service(srv)
        down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame(TEXT)], pipeline_params=params(11025))
        assert len(srv.records) == before  # nothing requested at a rate it cannot produce
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors and "sample_rate" in errors[0].error and errors[0].category is ErrorCategory.INVALID_REQUEST
    assert not audio(down) and not tts.is_usable


@pytest.mark.parametrize(
    ("field", "bad", "good"), [("voice", "no-such-voice", "tongtong"), ("model", "glm-x", "glm-tts")]
)
async def test_an_unknown_runtime_voice_or_model_is_reverted_and_the_service_lives(
    field: str, bad: str, good: str
) -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        tts = service(srv)
        _, up = await run_test(
            tts,
            frames_to_send=[
                TTSSpeakFrame("第一句。"),
                TTSUpdateSettingsFrame(delta=GLMHttpTTSService.Settings(**{field: bad})),
                TTSSpeakFrame("第二句。"),
                TTSSpeakFrame("第三句。"),
            ],
            pipeline_params=params(8000),
        )
        sent = [(r.body["input"], r.body[field], r.status) for r in srv.records]
    assert sent == [("第一句。", good, 200), ("第二句。", bad, 400), ("第三句。", good, 200)]
    errors = [f for f in up if isinstance(f, ErrorFrame) and "GLM-TTS" in f.error]
    assert len(errors) == 1 and field in errors[0].error and bad in errors[0].error
    assert errors[0].category is ErrorCategory.APPLICATION and tts.is_usable


async def test_reuse_after_end_frame_is_a_typed_error() -> None:
    with local_server() as srv:
        tts = service(srv)
        await run_test(tts, frames_to_send=[TTSSpeakFrame("您好。")], pipeline_params=params(8000))
        down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame("您好。")], pipeline_params=params(8000))
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert errors and "stopped" in errors[0].error and errors[0].category is ErrorCategory.APPLICATION
    assert not audio(down)


async def test_a_lone_surrogate_is_a_typed_error_and_the_next_text_is_spoken() -> None:
    tone = ToneEngine()
    with local_server(tone) as srv:
        tts = service(srv)
        down, up = await run_test(
            tts,
            frames_to_send=[TTSSpeakFrame("你好\ud800世界。"), TTSSpeakFrame(TEXT)],
            pipeline_params=params(8000),
        )
        inputs = [r.body["input"] for r in srv.records]
    errors = [f for f in up if isinstance(f, ErrorFrame) and "GLM-TTS" in f.error]
    assert errors and "surrogate" in errors[0].error and "text" in errors[0].error
    assert errors[0].category is ErrorCategory.APPLICATION and tts.is_usable
    assert inputs == [TEXT]
    assert sum(len(f.audio) for f in audio(down)) // 2 == expected_samples(tone, TEXT, 8000)


def test_token_mode_is_refused_clearly() -> None:
    from pipecat.services.tts_service import TextAggregationMode

    with pytest.raises(ValueError, match="text_aggregation_mode"):
        GLMHttpTTSService(api_key=API_KEY, text_aggregation_mode=TextAggregationMode.TOKEN)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"request_timeout": 0}, "request_timeout"),
        ({"unusable_after_s": -1}, "unusable_after_s"),
        ({"sample_rate": 11025}, "sample_rate"),
        ({"prefetch": "x"}, "prefetch"),
        ({"settings": GLMHttpTTSService.Settings(speed=5.0)}, "speed"),
        ({"settings": GLMHttpTTSService.Settings(model="")}, "model"),
    ],
)
def test_constructor_mistakes_are_value_errors_naming_the_field(kw: dict, field: str) -> None:
    from glmtts_plugins import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=field) as info:
        GLMHttpTTSService(api_key=API_KEY, **kw)
    assert isinstance(info.value, ValueError) and info.value.field == field
