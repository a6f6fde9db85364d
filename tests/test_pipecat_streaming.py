"""Each LLM turn as one streamed core utterance (issue 14): Pipecat's ``run_test`` and the local server."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.errors import ErrorCategory
from pipecat_glmtts import GLMHttpTTSService

from bench import _corpus
from glmtts_plugins.server import LocalServer
from glmtts_plugins.testing import ToneEngine, llm_tokens
from glmtts_plugins.text import Segmenter

from .conftest import API_KEY, local_server

REPLIES = _corpus.replies()


def turn(tokens: list[str], gap_s: float = 0.0) -> list[Frame]:
    frames: list[Frame] = [LLMFullResponseStartFrame()]
    for t in tokens:
        frames.append(LLMTextFrame(t))
        if gap_s:
            frames.append(SleepFrame(gap_s))
    return [*frames, LLMFullResponseEndFrame()]


def pieces_of(tokens: list[str]) -> list[str]:
    seg = Segmenter()
    return [p for t in tokens for p in seg.push(t)] + seg.flush()


def samples(tone: ToneEngine, pieces: list[str], rate: int) -> int:
    return sum(len(tone.pcm_at(p, rate)) // 2 for p in pieces)


def params(rate: int) -> PipelineParams:
    return PipelineParams(audio_out_sample_rate=rate, enable_metrics=True, enable_usage_metrics=True)


def service(srv: LocalServer, **kw: object) -> GLMHttpTTSService:
    return GLMHttpTTSService(api_key=API_KEY, base_url=srv.base_url, **kw)  # type: ignore[arg-type]


class Stamps(FrameProcessor):
    """Notes when each LLM token passed on its way to the TTS."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, str]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.seen.append((time.monotonic(), frame.text))
        await self.push_frame(frame, direction)


def contexts_in_order(down: list[Frame]) -> list[str]:
    return [f.context_id for f in down if isinstance(f, TTSStartedFrame)]


def our_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if not t.done() and "glmtts" in t.get_name()]


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_every_corpus_reply_is_the_segmenters_pieces_prefetched_and_exact(rate: int) -> None:
    rng = random.Random(rate)
    tone = ToneEngine(ms_per_char=150)  # ~ speech rate; the server streams it at twice real time
    replies = REPLIES[[8000, 16000, 24000].index(rate) :: 3]
    turns = [llm_tokens(r, rng) for r in replies]
    with local_server(tone, faults="rtf=0.5;first_byte_ms=60") as srv:
        stamps = Stamps()
        frames: list[Frame] = []
        for tokens in turns:
            frames += [*turn(tokens, 0.01), SleepFrame(0.2)]
        down, up = await run_test(
            Pipeline([stamps, service(srv)]), frames_to_send=frames, pipeline_params=params(rate)
        )
        records = {r.body["input"]: r for r in srv.records}  # the turns overlap on the wire
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    by_context = contexts_in_order(down)
    assert len(by_context) == len(turns)
    seen = 0
    for i, (tokens, ctx) in enumerate(zip(turns, by_context, strict=True)):
        pieces = pieces_of(tokens)
        recs = [records[p] for p in pieces]  # exactly the core segmenter's pieces, requested in order
        seen += len(pieces)
        assert [r.started for r in recs] == sorted(r.started for r in recs), i
        if len(recs) > 1:
            # the first request left before the reply's last token reached the service
            last_token_at = [t for t, _ in stamps.seen][sum(len(t) for t in turns[: i + 1]) - 1]
            assert recs[0].started < last_token_at, i
            assert recs[1].started < recs[0].ended, i  # prefetch: the next piece while one streams
        for r in recs:  # never more than prefetch + 1 = 2 requests of one turn in flight
            assert sum(1 for o in recs if o.started <= r.started < o.ended) <= 2, i
        got = sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame) and f.context_id == ctx) // 2
        assert got == samples(tone, pieces, rate), i
        texts = [f.text for f in down if isinstance(f, TTSTextFrame) and f.context_id == ctx]
        # punctuation kept, a space put back only between two Latin-script pieces, none between others
        assert "".join(texts).replace(" ", "") == replies[i].replace(" ", ""), (i, texts)
        for prev, text in itertools.pairwise(texts):
            assert not text.startswith(" ") or (prev[-1].isascii() and text[1:2].isascii()), i
        assert [t.strip() for t in texts] == pieces, i
    assert seen == len(records)


async def test_text_frame_of_each_piece_follows_its_audio_with_its_exact_text() -> None:
    tone = ToneEngine()
    text = "Hello there, this is the Xinghe Bank card center. How can I help you today? Please tell me."
    tokens = llm_tokens(text, random.Random(1))
    with local_server(tone) as srv:
        down, _ = await run_test(service(srv), frames_to_send=turn(tokens), pipeline_params=params(16000))
        inputs = [r.body["input"] for r in srv.records]
    pieces = pieces_of(tokens)
    assert inputs == pieces and len(pieces) >= 2
    kinds = [
        f for f in down if isinstance(f, TTSStartedFrame | TTSAudioRawFrame | TTSTextFrame | TTSStoppedFrame)
    ]
    assert isinstance(kinds[0], TTSStartedFrame) and isinstance(kinds[-1], TTSStoppedFrame)
    assert sum(isinstance(f, TTSStartedFrame) for f in kinds) == 1  # once per turn
    # each piece: its audio, then its text frame; the text frames rebuild the reply with its spaces
    texts = [f for f in kinds if isinstance(f, TTSTextFrame)]
    assert "".join(f.text for f in texts) == text and all(f.includes_inter_frame_spaces for f in texts)
    assert [f.text.strip() for f in texts] == pieces
    positions = [kinds.index(f) for f in texts]
    for k, pos in enumerate(positions):
        before = kinds[(positions[k - 1] + 1 if k else 1) : pos]
        n = sum(len(f.audio) for f in before if isinstance(f, TTSAudioRawFrame)) // 2
        assert n == samples(tone, [pieces[k]], 16000), k


@pytest.mark.parametrize(
    "reply",
    [
        "您好，这里是星河银行信用卡中心。请问有什么可以帮您？我们今天有一个新的优惠活动，您想了解一下吗？",
        "Sure. Your balance is 3,268.50 yuan, due on December 8. Shall I set up automatic payment for you?",
    ],
)
async def test_the_assistant_context_keeps_the_reply_exactly(reply: str) -> None:
    context = LLMContext()
    with local_server() as srv:
        await run_test(
            Pipeline([service(srv), LLMAssistantAggregator(context)]),
            frames_to_send=turn(llm_tokens(reply, random.Random(3))),
            pipeline_params=params(16000),
        )
        assert len(srv.records) >= 2
    assert context.get_messages() == [{"role": "assistant", "content": reply}]


async def test_random_interruptions_during_streamed_turns() -> None:
    """60 barge-ins at random moments (before first audio, mid-piece, during prefetch, while tokens still
    arrive), each followed by a clean turn, in one pipeline."""
    rng = random.Random(14)
    tone = ToneEngine()
    cycles = 60
    frames: list[Frame] = []
    plans = []
    for i in range(cycles):
        tokens = llm_tokens(REPLIES[i % len(REPLIES)], rng)
        k = rng.randint(1, len(tokens))  # tokens pushed before the barge-in
        wait = rng.choice([0.0, rng.uniform(0.0, 0.1), rng.uniform(0.1, 0.8)])
        interrupted = [LLMFullResponseStartFrame()]
        for t in tokens[:k]:
            interrupted += [LLMTextFrame(t), SleepFrame(0.01)]
        # 50 ms at least, or the system frame overtakes the turn's frames still queued in the harness
        interrupted += [SleepFrame(0.05 + wait), InterruptionFrame()]
        interrupted += [LLMTextFrame(t) for t in tokens[k:]]  # still streaming in: dropped
        interrupted += [LLMFullResponseEndFrame(), SleepFrame(0.05)]
        clean = f"好的，第{i}次。"
        frames += [*interrupted, *turn(llm_tokens(clean, rng)), SleepFrame(0.3)]
        plans.append(clean)
    with local_server(tone, faults="rtf=0.5;first_byte_ms=50") as srv:
        tts = service(srv)
        down, up = await run_test(tts, frames_to_send=frames, pipeline_params=params(8000))
        assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 5)
        records = list(srv.records)
        assert not our_tasks() and not tts._turns
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    cuts = [i for i, f in enumerate(down) if isinstance(f, InterruptionFrame)]
    assert len(cuts) == cycles
    disconnected = 0
    for c, cut in enumerate(cuts):
        end = cuts[c + 1] if c + 1 < cycles else len(down)
        started = [f.context_id for f in down[:cut] if isinstance(f, TTSStartedFrame)]
        interrupted_ctx = started[-1]
        assert not [
            f for f in down[cut:] if isinstance(f, TTSAudioRawFrame) and f.context_id == interrupted_ctx
        ], c
        # the next turn to start after the barge-in is the clean one (the dropped tokens started nothing)
        clean_ctx = next(f.context_id for f in down[cut:end] if isinstance(f, TTSStartedFrame))
        texts = [f.text for f in down[cut:end] if isinstance(f, TTSTextFrame) and f.context_id == clean_ctx]
        assert texts == pieces_of([plans[c]]), c
        got = sum(
            len(f.audio) for f in down[cut:] if isinstance(f, TTSAudioRawFrame) and f.context_id == clean_ctx
        )
        assert got // 2 == samples(tone, pieces_of([plans[c]]), 8000), c
    clean_inputs = {p for plan in plans for p in pieces_of([plan])}
    for r in records:
        assert r.outcome in ("completed", "disconnected"), r.outcome
        if r.outcome == "disconnected":
            assert r.body["input"] not in clean_inputs
            disconnected += 1
    assert (
        disconnected > cycles // 4
    )  # many barge-ins found requests in flight, and the server saw them close


async def test_a_failing_middle_piece_delivers_the_audio_before_it_then_the_error() -> None:
    tone = ToneEngine(chunk_bytes=960)
    reply = "您好，这里是星河银行信用卡中心。请问有什么可以帮您？我们今天有一个新的优惠活动，您想了解一下吗？"
    tokens = llm_tokens(reply, random.Random(2))
    pieces = pieces_of(tokens)
    assert len(pieces) >= 2
    with local_server(tone, faults=f"disconnect_after=3;when_input={pieces[1][:4]}") as srv:
        down, up = await run_test(service(srv), frames_to_send=turn(tokens), pipeline_params=params(8000))
        inputs = [r.body["input"] for r in srv.records]
    assert inputs[:2] == pieces[:2] and inputs.count(pieces[1]) == 1  # nothing retried after audio
    errors = [f for f in up if isinstance(f, ErrorFrame) and "GLM-TTS" in f.error]
    assert len(errors) == 1 and errors[0].category is ErrorCategory.CONNECTIVITY
    got = sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2
    assert got == samples(tone, pieces[:1], 8000) + 3 * 960 // 2 // 3
    assert [f.text for f in down if isinstance(f, TTSTextFrame)] == pieces[:1]
    assert isinstance(
        [f for f in down if isinstance(f, TTSStartedFrame | TTSStoppedFrame)][-1], TTSStoppedFrame
    )


async def test_turns_back_to_back_and_text_after_a_function_call_are_spoken_in_order() -> None:
    """A reply, a second LLM response after a function call, and a TTSSpeakFrame: complete and in order."""
    tone = ToneEngine()
    rng = random.Random(9)
    first = llm_tokens("我帮您查一下，请稍等。", rng)
    second = llm_tokens("查到了：您本期账单是三千二百元，最后还款日是十二月八日。", rng)
    with local_server(tone, faults="rtf=0.5") as srv:
        down, up = await run_test(
            service(srv),
            frames_to_send=[*turn(first), *turn(second), TTSSpeakFrame("还有别的问题吗？")],
            pipeline_params=params(16000),
        )
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    contexts = contexts_in_order(down)
    assert len(contexts) == 3
    spans = [[i for i, f in enumerate(down) if getattr(f, "context_id", None) == c] for c in contexts]
    assert spans[0][-1] < spans[1][0] and spans[1][-1] < spans[2][0]  # one turn after the other, never mixed
    expected = [pieces_of(first), pieces_of(second), ["还有别的问题吗？"]]
    for ctx, pieces in zip(contexts, expected, strict=True):
        got = sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame) and f.context_id == ctx) // 2
        assert got == samples(tone, pieces, 16000)
        assert [f.text for f in down if isinstance(f, TTSTextFrame) and f.context_id == ctx] == pieces


async def test_sentence_mode_still_works_as_before() -> None:
    tone = ToneEngine()
    reply = "您好，这里是星河银行信用卡中心。请问有什么可以帮您？"
    tokens = llm_tokens(reply, random.Random(4))
    with local_server(tone, faults="rtf=0.5") as srv:
        tts = service(srv, text_aggregation_mode=TextAggregationMode.SENTENCE)
        down, up = await run_test(tts, frames_to_send=turn(tokens, 0.01), pipeline_params=params(8000))
        records = list(srv.records)
    assert [r.body["input"] for r in records] == ["您好，这里是星河银行信用卡中心。", "请问有什么可以帮您？"]
    assert records[1].started >= records[0].ended  # strictly one after the other, as before
    assert [f.text for f in down if isinstance(f, TTSTextFrame)] == [r.body["input"] for r in records]
    got = sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2
    assert got == samples(tone, [r.body["input"] for r in records], 8000)
    assert not [f for f in up if isinstance(f, ErrorFrame)]


async def test_ttfb_and_usage_metrics_once_per_turn() -> None:
    from pipecat.frames.frames import MetricsFrame
    from pipecat.metrics.metrics import TTFBMetricsData, TTSUsageMetricsData

    replies = ["您好，这里是星河银行信用卡中心。请问有什么可以帮您？", "好的，我帮您查一下，请稍等。"]
    rng = random.Random(6)
    with local_server() as srv:
        frames = [f for r in replies for f in turn(llm_tokens(r, rng), 0.01)]
        down, _ = await run_test(service(srv), frames_to_send=frames, pipeline_params=params(16000))
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    ttfb = [d for d in data if isinstance(d, TTFBMetricsData) and d.value > 0]
    usage = [d.value for d in data if isinstance(d, TTSUsageMetricsData)]
    assert len(ttfb) == len(replies)
    assert usage == [len(r) for r in replies]


async def test_prefetch_zero_is_one_request_at_a_time_and_bad_values_are_refused() -> None:
    tokens = llm_tokens(REPLIES[0] + REPLIES[1], random.Random(8))
    with local_server(faults="rtf=0.5") as srv:
        await run_test(service(srv, prefetch=0), frames_to_send=turn(tokens), pipeline_params=params(8000))
        records = sorted(srv.records, key=lambda r: r.started)
    assert [r.body["input"] for r in records] == pieces_of(tokens) and len(records) >= 2
    assert all(b.started >= a.ended for a, b in itertools.pairwise(records))
    with pytest.raises(ValueError, match="prefetch"):
        GLMHttpTTSService(api_key=API_KEY, prefetch=-1)


async def test_text_outside_an_llm_turn_is_spoken_at_once() -> None:
    from pipecat.frames.frames import TextFrame

    tone = ToneEngine()
    with local_server(tone) as srv:
        t0 = time.monotonic()
        down, up = await run_test(
            service(srv),
            frames_to_send=[TextFrame("你好。"), TextFrame("再见。")],
            pipeline_params=params(8000),
        )
        elapsed = time.monotonic() - t0
        inputs = [r.body["input"] for r in srv.records]
    assert inputs == ["你好。", "再见。"] and elapsed < 4.0, elapsed  # no stop_frame_timeout_s (12 s) wait
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    assert sum(len(f.audio) for f in down if isinstance(f, TTSAudioRawFrame)) // 2 == samples(
        tone, inputs, 8000
    )
