"""Failover with Pipecat's own ServiceSwitcher: a dead primary is written off within the stated bound, a
blip is ridden out, and ``set_usable(True)`` brings a service back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyFailover
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.errors import ErrorCategory
from pipecat_glmtts import GLMHttpTTSService

from bench._server import free_port
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine

from .conftest import API_KEY, local_server

UNUSABLE_AFTER_S = 1.5  # the service's default: how long every connection may be refused
EVERY_S = 2.5  # one sentence every 2.5 s: the 1.5 s bound plus a margin for a loaded machine
SLACK_S = 1.0  # loaded machine


def url_of(srv: LocalServer, port: int) -> str:
    """The base URL ``srv`` will have once started on ``port`` (nothing listens there yet)."""
    return srv.base_url.replace(":0/", f":{port}/")


def sentences(n: int) -> list:
    frames: list = []
    for i in range(n):
        frames += [TTSSpeakFrame(f"这是第{i}句话。"), SleepFrame(EVERY_S)]
    return frames


async def test_dead_primary_fails_over_within_the_bound_losing_one_sentence() -> None:
    n = 4
    with local_server() as backup_srv:
        primary = GLMHttpTTSService(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}")
        backup = GLMHttpTTSService(api_key=API_KEY, base_url=backup_srv.base_url)
        switcher = ServiceSwitcher(services=[primary, backup], strategy_type=ServiceSwitcherStrategyFailover)
        switched_at: list[float] = []

        @switcher.strategy.event_handler("on_service_switched")
        async def on_switched(_strategy: object, service: object) -> None:
            switched_at.append(time.monotonic())

        t0 = time.monotonic()
        down, up = await run_test(
            switcher,
            frames_to_send=sentences(n),
            pipeline_params=PipelineParams(audio_out_sample_rate=16000),
        )
        spoken = [r.body["input"] for r in backup_srv.records if r.outcome == "completed"]
        first_audio = backup_srv.records[0].first_audio_at
    lost = n - len(spoken)
    switch_s = switched_at[0] - t0
    backup_first_audio_s = first_audio - t0
    print(f"switch {switch_s:.2f} s, backup's first audio {backup_first_audio_s:.2f} s, lost {lost}")
    assert not primary.is_usable and backup.is_usable and switcher.strategy.active_service is backup
    assert lost <= 1 and spoken == [f"这是第{i}句话。" for i in range(lost, n)]
    # the primary rode out the outage for the bound, then gave up on its one sentence and was written off
    assert UNUSABLE_AFTER_S - 0.1 <= switch_s <= UNUSABLE_AFTER_S + SLACK_S
    # the backup speaks the next sentence as it arrives
    assert backup_first_audio_s <= EVERY_S + SLACK_S
    assert sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) > 0
    # the switch absorbed the primary's error: nothing reached the pipeline above the switcher
    assert not [f for f in up if isinstance(f, ErrorFrame) and "unreachable" in f.error]


async def test_a_blip_shorter_than_the_bound_is_ridden_out_without_failover() -> None:
    port = free_port()
    tone = ToneEngine()
    srv = local_server(tone, port=port)
    primary = GLMHttpTTSService(api_key=API_KEY, base_url=url_of(srv, port))
    with local_server() as backup_srv:
        backup = GLMHttpTTSService(api_key=API_KEY, base_url=backup_srv.base_url)
        switcher = ServiceSwitcher(services=[primary, backup], strategy_type=ServiceSwitcherStrategyFailover)
        timer = threading.Timer(0.6, srv.start)  # the endpoint comes back after 0.6 s of refusals
        timer.start()
        try:
            down, up = await run_test(
                switcher,
                frames_to_send=[TTSSpeakFrame("您好。"), SleepFrame(0.5), TTSSpeakFrame("请讲。")],
                pipeline_params=PipelineParams(audio_out_sample_rate=16000),
            )
            await asyncio.to_thread(timer.join)
            primary_inputs = [r.body["input"] for r in srv.records if r.outcome == "completed"]
        finally:
            srv.stop()
        assert backup_srv.records == []
    assert primary.is_usable and switcher.strategy.active_service is primary
    assert primary_inputs == ["您好。", "请讲。"]  # nothing lost, only delayed
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    assert sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2 == sum(
        len(tone.pcm_at(t, 16000)) // 2 for t in ("您好。", "请讲。")
    )


async def test_an_unreachable_service_reports_connectivity_and_set_usable_brings_it_back() -> None:
    port = free_port()
    tone = ToneEngine()
    srv = local_server(tone, port=port)
    tts = GLMHttpTTSService(api_key=API_KEY, base_url=url_of(srv, port), unusable_after_s=0.5)
    usable: list[bool] = []

    @tts.event_handler("on_usable_changed")
    async def on_usable_changed(_tts: object, is_usable: bool) -> None:
        usable.append(is_usable)

    def endpoint_is_back() -> None:  # what an application's health check would do
        srv.start()
        asyncio.run_coroutine_threadsafe(tts.set_usable(True), loop)

    loop = asyncio.get_running_loop()
    timer = threading.Timer(1.5, endpoint_is_back)
    timer.start()
    try:
        down, up = await run_test(
            tts,
            frames_to_send=[TTSSpeakFrame("第一句。"), SleepFrame(2.5), TTSSpeakFrame("第二句。")],
            pipeline_params=PipelineParams(audio_out_sample_rate=8000),
        )
        await asyncio.to_thread(timer.join)
        inputs = [r.body["input"] for r in srv.records]
    finally:
        srv.stop()
    errors = [f for f in up if isinstance(f, ErrorFrame) and "unreachable" in f.error]
    assert errors and errors[0].category is ErrorCategory.CONNECTIVITY
    assert usable == [False, True] and tts.is_usable
    assert inputs == ["第二句。"]
    assert (
        sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2
        == len(tone.pcm_at("第二句。", 8000)) // 2
    )
