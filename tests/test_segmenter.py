"""Streaming segmenter: where it cuts, where it never cuts, and that streaming changes nothing.

``python tests/test_segmenter.py`` prints the corpus measurements behind the default ``first_min_chars``
and ``target_chars`` (quoted in the docstring of ``glmtts_plugins/text/segmenter.py``).
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmtts_plugins.text import FIRST_MIN_CHARS, MAX_INPUT_CHARS, TARGET_CHARS, Segmenter, speech_units

CORPUS = Path(__file__).parents[1].parent / "shared/corpus/replies.jsonl"


def load_corpus() -> list[str]:
    if not CORPUS.is_file():
        return []
    return [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]


REPLIES = load_corpus()
needs_corpus = pytest.mark.skipif(not REPLIES, reason=f"corpus not found at {CORPUS}")

SPEAKABLE = re.compile(r"[^\W_]")
# Every boundary is taken: makes the "never cut here" cases sharp.
EAGER = {"first_min_chars": 0, "target_chars": 1}


def segment(text: str, sizes: list[int] | int | None = None, **options: int) -> list[str]:
    """Push ``text`` in tokens of ``sizes`` (cycled; None = all at once), then flush."""
    seg = Segmenter(**options)
    if sizes is None:
        return seg.push(text) + seg.flush()
    sizes = [sizes] if isinstance(sizes, int) else sizes
    pieces: list[str] = []
    pos = i = 0
    while pos < len(text):
        size = sizes[i % len(sizes)]
        pieces += seg.push(text[pos : pos + size])
        pos += size
        i += 1
    return pieces + seg.flush()


def both_ways(text: str, **options: int) -> list[str]:
    """Pieces for ``text`` pushed whole, asserting one character at a time gives the same."""
    whole = segment(text, **options)
    assert segment(text, 1, **options) == whole
    return whole


def assert_lossless(text: str, pieces: list[str]) -> None:
    """The pieces are ``text`` in order, cut only where there is (or strip removed) whitespace."""
    pos = 0
    for piece in pieces:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert text.startswith(piece, pos), (piece, text[pos : pos + len(piece) + 10])
        pos += len(piece)
    assert not text[pos:].strip()


def speakable(text: str) -> str:
    return "".join(SPEAKABLE.findall(text))


# -- never cut inside -------------------------------------------------------------------------------

NO_CUT_CASES = {
    "decimal": ("The rate is 3.5 percent today. Thanks.", ["The rate is 3.5 percent today.", "Thanks."]),
    "thousands": ("您本期账单金额是3,268.50元。谢谢。", ["您本期账单金额是3,268.50元。", "谢谢。"]),
    "thousands-en": ("You owe 3,268.50 dollars. Pay now.", ["You owe 3,268.50 dollars.", "Pay now."]),
    "time": ("The meeting is at 12:30 today. See you.", ["The meeting is at 12:30 today.", "See you."]),
    "time-zh": ("会议在12:30开始。请准时。", ["会议在12:30开始。", "请准时。"]),
    "Mr.": ("Mr. Smith called. He will call back.", ["Mr. Smith called.", "He will call back."]),
    "Dr.": ("Dr. Li is in. Please wait.", ["Dr. Li is in.", "Please wait."]),
    "e.g.": ("Bring fruit e.g. Apples or pears. Thanks.", ["Bring fruit e.g. Apples or pears.", "Thanks."]),
    "i.e.": ("Come early i.e. At noon. Thanks.", ["Come early i.e. At noon.", "Thanks."]),
    "U.S.": ("She works for the U.S. Army now. Bye.", ["She works for the U.S. Army now.", "Bye."]),
    "No. 5": ("Take exit No. 5 please. Thanks.", ["Take exit No. 5 please.", "Thanks."]),
    "url": (
        "请访问 www.example.com/help?id=3;x=1 获取帮助。谢谢！",
        ["请访问 www.example.com/help?id=3;x=1 获取帮助。", "谢谢！"],
    ),
    "url-end": (
        "Go to https://example.com/a.html. Then log in.",
        ["Go to https://example.com/a.html.", "Then log in."],
    ),
    "email": (
        "Write to support@example.com.cn today. Thanks.",
        ["Write to support@example.com.cn today.", "Thanks."],
    ),
    "email-end": ("发送邮件到 support@example.com。谢谢。", ["发送邮件到 support@example.com。", "谢谢。"]),
    "order-code": ("工单号是GD20261123-0457。请记好。", ["工单号是GD20261123-0457。", "请记好。"]),
    "policy-code": (
        "Your policy is PA-7731.0092-X now. Bye.",
        ["Your policy is PA-7731.0092-X now.", "Bye."],
    ),
    "book-title": ("正在播放《你好！世界。》这首歌。好的。", ["正在播放《你好！世界。》这首歌。", "好的。"]),
    "cn-quote": ("活动是“满200减30！”每人一次。好的。", ["活动是“满200减30！”每人一次。", "好的。"]),
    "corner-quote": ("他说「はい。わかった」就走了。好的。", ["他说「はい。わかった」就走了。", "好的。"]),
    "ascii-quote": (
        'The sign says "Stop. Look. Go" in red. Ok.',
        ['The sign says "Stop. Look. Go" in red.', "Ok."],
    ),
    "quote-clause": ("活动叫“满200，减30”。好的。", ["活动叫“满200，减30”。", "好的。"]),
}


@pytest.mark.parametrize("case", NO_CUT_CASES, ids=list(NO_CUT_CASES))
def test_never_cuts_inside(case: str) -> None:
    text, expected = NO_CUT_CASES[case]
    assert both_ways(text, **EAGER) == expected
    assert segment(text, [3, 1, 2], **EAGER) == expected


def test_trailing_dot_waits_for_the_next_character() -> None:
    seg = Segmenter(**EAGER)
    assert seg.push("The price is 3.") == []  # 3. could become 3.5
    assert seg.push("5") == []
    assert seg.push(" euros. ") == []  # the next word might be lowercase
    assert seg.push("Next") == ["The price is 3.5 euros."]
    assert seg.push(" we go e.") == []
    assert seg.push("g. Paris") == []
    assert seg.flush() == ["Next we go e.g. Paris"]
    seg = Segmenter(**EAGER)
    assert seg.push("The answer is 3.") == []
    assert seg.flush() == ["The answer is 3."]  # only flush resolves it


def test_full_stop_waits_for_closing_bracket_or_emoji() -> None:
    seg = Segmenter(**EAGER)
    assert seg.push("他点头（好的。") == []
    assert seg.push("）") == []
    assert seg.push("😊") == []
    assert seg.push("我们") == ["他点头（好的。）😊"]
    assert seg.flush() == ["我们"]


def test_long_quotation_is_not_a_title() -> None:
    # A quote that does not close within QUOTE_SPAN_MAX characters is speech, cut like normal text.
    text = "他说：“" + "今天天气很好。" * 12 + "”"
    pieces = both_ways(text, **EAGER)
    assert len(pieces) > 10
    assert_lossless(text, pieces)


# -- corpus lines ---------------------------------------------------------------------------------


@needs_corpus
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "好的，我已经帮您查询到了。您本期账单金额是3,268.50元，最后还款日是12月8日。"
            "需要我帮您设置自动还款吗？",
            [
                "好的，我已经帮您查询到了。",
                "您本期账单金额是3,268.50元，最后还款日是12月8日。需要我帮您设置自动还款吗？",
            ],
        ),
        (
            "非常抱歉给您带来不便！您反映的问题我已经记录下来了，"
            "工单号是GD20261123-0457，技术人员会在24小时内联系您。",
            [
                "非常抱歉给您带来不便！",
                "您反映的问题我已经记录下来了，工单号是GD20261123-0457，技术人员会在24小时内联系您。",
            ],
        ),
        (
            "Sure! Your flight NW 482 to Seattle departs at 6:45 PM from gate C12. Boarding starts thirty "
            "minutes before departure.",
            [
                "Sure! Your flight NW 482 to Seattle departs at 6:45 PM from gate C12.",
                "Boarding starts thirty minutes before departure.",
            ],
        ),
        (
            "Your order has been shipped. 您的订单已经发货，物流单号是SF1234567890，预计后天送达。",
            ["Your order has been shipped.", "您的订单已经发货，物流单号是SF1234567890，预计后天送达。"],
        ),
        (
            "请访问 www.example.com/help 获取更多帮助，或者发送邮件到 support@example.com。",
            ["请访问 www.example.com/help 获取更多帮助，", "或者发送邮件到 support@example.com。"],
        ),
    ],
)
def test_corpus_lines(line: str, expected: list[str]) -> None:
    assert line in REPLIES
    assert both_ways(line) == expected


@needs_corpus
def test_whole_corpus_streams_like_whole() -> None:
    for text in REPLIES:
        pieces = both_ways(text)
        assert segment(text, [1, 4, 2, 7]) == pieces
        assert_lossless(text, pieces)
        assert speech_units(pieces[0]) >= FIRST_MIN_CHARS or len(pieces) == 1


# -- latency rule and merging -----------------------------------------------------------------------


def test_first_piece_cut_at_clause_once_long_enough() -> None:
    text = "为了保护您的账户安全，我需要先核实一下您的身份：请您说一下身份证号码的后四位，好吗？"
    assert speech_units("为了保护您的账户安全，") == 10
    seg = Segmenter(first_min_chars=10)
    assert seg.push("为了保护您的账户安全，") == []  # waits for what follows the comma
    assert seg.push("我") == ["为了保护您的账户安全，"]
    assert seg.push(text[12:]) == []
    assert seg.flush() == ["我需要先核实一下您的身份：请您说一下身份证号码的后四位，好吗？"]
    # One unit more and that clause is too short: the next clause boundary is used.
    assert segment(text, 1, first_min_chars=11)[0] == "为了保护您的账户安全，我需要先核实一下您的身份："


def test_first_piece_not_cut_before_minimum() -> None:
    text = "好的，嗯，我已经帮您查询到了，请稍等。"
    assert both_ways(text, first_min_chars=6) == ["好的，嗯，我已经帮您查询到了，", "请稍等。"]
    assert both_ways(text, first_min_chars=0)[0] == "好的，"
    # A short first sentence waits for more too.
    assert both_ways("Sure! I can help with that, just a moment.", first_min_chars=6)[0] == (
        "Sure! I can help with that,"
    )
    assert both_ways("OK, thanks. Bye.", first_min_chars=6) == ["OK, thanks. Bye."]


def test_english_clause_needs_comma_and_space() -> None:
    text = "We charged 3,268.50 today, thank you for your patience."
    assert both_ways(text, first_min_chars=3) == [
        "We charged 3,268.50 today,",
        "thank you for your patience.",
    ]


def test_later_pieces_merge_up_to_target() -> None:
    ten = "甲乙丙丁戊己庚辛壬癸。"
    eight = "子丑寅卯辰巳午未。"
    text = "开始了。" + ten * 4 + eight
    pieces = both_ways(text, first_min_chars=1, target_chars=20)
    assert pieces == ["开始了。", ten * 2, ten * 2, eight]
    # Emitted as soon as the merged piece reaches the target, without waiting for flush.
    seg = Segmenter(first_min_chars=1, target_chars=20)
    assert seg.push("开始了。" + ten + ten) == ["开始了。"]
    assert seg.push("子") == [ten * 2]
    # A piece is emitted when the next sentence would take it past the target.
    seg = Segmenter(first_min_chars=1, target_chars=20)
    assert seg.push("开始了。" + eight + eight) == ["开始了。"]
    assert seg.push(eight) == []
    assert seg.push("好") == [eight * 2]
    assert seg.flush() == [eight + "好"]


def test_later_pieces_ignore_clauses() -> None:
    text = "好的，我帮您查一下。" + "第一，滤网太脏；第二，模式不对；第三，散热不好。"
    pieces = both_ways(text, first_min_chars=6, target_chars=200)
    assert pieces == ["好的，我帮您查一下。", "第一，滤网太脏；第二，模式不对；第三，散热不好。"]


def test_flush_resets_latency_rule() -> None:
    seg = Segmenter(first_min_chars=6, target_chars=200)
    turn = "您好，这里是星河银行信用卡中心，我是智能客服小星。请问有什么可以帮您？"
    first = seg.push(turn) + seg.flush()
    assert first == ["您好，这里是星河银行信用卡中心，", "我是智能客服小星。请问有什么可以帮您？"]
    assert seg.push(turn) + seg.flush() == first


def test_reset_drops_everything() -> None:
    seg = Segmenter(first_min_chars=6)
    assert seg.push("您好，这里是星河银行信用卡中心，我是") == ["您好，这里是星河银行信用卡中心，"]
    assert seg.push("智能客服小星。请问") == []
    seg.reset()
    assert seg.flush() == []
    assert seg.push("好的，我已经帮您查询到了，") == []
    assert seg.push("请") == ["好的，我已经帮您查询到了，"]  # a new turn: the latency rule applies again


def test_invalid_options() -> None:
    for options in ({"first_min_chars": -1}, {"target_chars": 0}, {"max_chars": 1}):
        with pytest.raises(ValueError):
            Segmenter(**options)


def test_speech_units() -> None:
    assert speech_units("好的，") == 2
    assert speech_units("Thanks for calling") == 2 + 1 + 3
    assert speech_units("3,268.50元") == 7
    assert speech_units("😊 ……, .") == 0


# -- never punctuation-only -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("好的！😊", ["好的！😊"]),
        ("谢谢您！😊 再见！👋", ["谢谢您！😊", "再见！👋"]),
        ("……好的，我查一下。", ["……好的，", "我查一下。"]),
        ("“好的。”……", ["“好的。”……"]),
        ("好的。 …… ！！", ["好的。 …… ！！"]),
        ("晚安～", ["晚安～"]),
        ("好的。“你好”", ["好的。", "“你好”"]),
        ("Done. (See below.)", ["Done.", "(See below.)"]),
        ("😊", []),
        ("。。。！！", []),
        ("   ", []),
        ("", []),
    ],
)
def test_no_punctuation_only_pieces(text: str, expected: list[str]) -> None:
    assert both_ways(text, **EAGER) == expected
    assert segment(text, [2, 1], **EAGER) == expected


# -- max_chars --------------------------------------------------------------------------------------


def check_limit(text: str, pieces: list[str], max_chars: int) -> None:
    assert pieces
    assert all(0 < len(p) <= max_chars for p in pieces)
    assert_lossless(text, pieces)


def test_max_chars_without_punctuation() -> None:
    cjk = "我们在这里等你回来" * 334  # 3006 characters, no punctuation at all
    pieces = segment(cjk, [5, 3])
    check_limit(cjk, pieces, MAX_INPUT_CHARS)
    assert segment(cjk) == pieces
    words = " ".join(["call", "GD20261123-0457", "at", "3,268.50", "or", "12:30", "now"] * 110)
    pieces = segment(words, [4, 1, 6])
    check_limit(words, pieces, MAX_INPUT_CHARS)
    tokens = set(words.split())
    for piece in pieces:  # cut between words only: every word and number is whole
        assert set(piece.split()) <= tokens


def test_max_chars_with_punctuation() -> None:
    sentence = "您的保单号是PA-7731-0092，保障期限从2026年1月1日到2026年12月31日，目前还有38天到期。"
    text = (sentence * 60)[:3000]
    pieces = segment(text, 3)
    check_limit(text, pieces, MAX_INPUT_CHARS)
    # A small limit forces cuts inside sentences: at clauses, never inside a number or a code.
    pieces = segment(text, 3, max_chars=40)
    check_limit(text, pieces, 40)
    for a, b in itertools.pairwise(pieces):
        assert not (a[-1].isascii() and a[-1].isalnum() and b[0].isascii() and b[0].isalnum()), (a, b)
        assert a[-1] in "，。", a
    english = "I am calling about order GD20261123-0457, placed on 12:30, worth 3,268.50 dollars " * 40
    pieces = segment(english, 2, max_chars=60)
    check_limit(english, pieces, 60)
    assert pieces[:2] == ["I am calling about order GD20261123-0457,", "placed on 12:30,"]
    tokens = set(english.split())
    assert all(set(p.split()) <= tokens for p in pieces)  # at a clause or between words


def test_max_chars_after_a_long_punctuation_tail() -> None:
    text = "好" * 1020 + "！" * 10 + "再见。"
    pieces = both_ways(text)
    assert all(len(p) <= MAX_INPUT_CHARS for p in pieces)
    assert speakable("".join(pieces)) == speakable(text)


# -- property ---------------------------------------------------------------------------------------

WORDS = [
    "hello", "World", "Mr.", "e.g.", "U.S.", "3.5", "3,268.50", "12:30", "GD20261123-0457",
    "www.example.com/help", "support@example.com", "OK", "No.", "I'm", "《晴天》", "“满200减30”",
]  # fmt: skip
PUNCT = ["。", "，", "！", "？", "……", ",", ".", ";", ":", " ", "  ", "、", "；", "“", "”", '"', "~"]
EMOJI = ["😊", "👍", "🎉", "❤️", "👋🏽"]
BUILTIN = ["好的，我已经帮您查询到了。", "Thanks for calling. How can I help?", "稍等一下……系统显示正常"]


def fragments() -> st.SearchStrategy[str]:
    lines = REPLIES or BUILTIN
    line_slices = st.tuples(st.sampled_from(lines), st.integers(0, 80), st.integers(1, 120)).map(
        lambda t: t[0][t[1] : t[1] + t[2]]
    )
    return st.one_of(
        line_slices,
        st.sampled_from(PUNCT),
        st.sampled_from(EMOJI),
        st.sampled_from(WORDS).map(lambda w: w + " "),
    )


texts = st.lists(fragments(), max_size=40).map("".join)
options = st.fixed_dictionaries(
    {
        "first_min_chars": st.integers(0, 14),
        "target_chars": st.integers(1, 120),
        "max_chars": st.sampled_from([12, 40, 100, MAX_INPUT_CHARS]),
    }
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, opts=options, sizes=st.lists(st.integers(1, 8), min_size=1, max_size=10))
def test_property_streaming(text: str, opts: dict[str, int], sizes: list[int]) -> None:
    whole = segment(text, **opts)
    assert segment(text, sizes, **opts) == whole  # token sizes never change the pieces
    for piece in whole:
        assert piece and piece == piece.strip()
        assert SPEAKABLE.search(piece), piece  # never only punctuation, emoji or whitespace
        assert len(piece) <= opts["max_chars"]
    assert speakable("".join(whole)) == speakable(text)  # every speakable character, in order
    if len(text) <= opts["max_chars"] and SPEAKABLE.search(text):
        assert_lossless(text, whole)  # nothing at all lost but whitespace at the cuts
    if not SPEAKABLE.search(text):
        assert whole == []


def test_push_is_cheap() -> None:
    text = "".join(REPLIES or BUILTIN * 20)
    start = time.perf_counter()
    pieces = segment(text, 1)
    per_char = (time.perf_counter() - start) / len(text)
    assert pieces == segment(text)
    assert per_char < 200e-6, f"{per_char * 1e6:.1f} µs per one-character push"


# -- corpus measurements (python tests/test_segmenter.py) -------------------------------------------

CLAUSE_END = tuple("，、：,:")


def _p90(values: list[int]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def first_sentence_units(text: str) -> int:
    """Units up to the first sentence end: what a sentence-only splitter waits for."""
    pieces = segment(text, first_min_chars=0, target_chars=1)
    head = pieces[0] + (pieces[1] if pieces[0].endswith(CLAUSE_END) and len(pieces) > 1 else "")
    return speech_units(head)


def corpus_report(replies: list[str]) -> dict[str, object]:
    """The numbers behind FIRST_MIN_CHARS and TARGET_CHARS."""
    report: dict[str, object] = {}
    first_boundary = [speech_units(segment(t, first_min_chars=0)[0]) for t in replies]
    report["first boundary units: replies"] = sorted(Counter(first_boundary).items())
    sentence = [first_sentence_units(t) for t in replies]
    report["first sentence units: median/p90/max"] = (
        statistics.median(sentence),
        _p90(sentence),
        max(sentence),
    )
    for minimum in (0, 3, 4, 5, 6, 8, 10, 11, 12):
        first = [speech_units(segment(t, first_min_chars=minimum)[0]) for t in replies]
        early = sum(f < s for f, s in zip(first, sentence, strict=True))
        report[f"first_min_chars={minimum}: first piece median/p90/max, early, under 5"] = (
            statistics.median(first),
            _p90(first),
            max(first),
            f"{early}/{len(replies)}",
            sum(f < 5 for f in first),
        )
    rest = [speech_units(t) - speech_units(segment(t)[0]) for t in replies]
    report["rest after first piece: median/p90/max"] = (statistics.median(rest), _p90(rest), max(rest))
    for target in (20, 40, 60, 80, 100, 120):
        runs = [segment(t, target_chars=target) for t in replies]
        counts = [len(r) for r in runs]
        later = [speech_units(p) for r in runs for p in r[1:]]
        report[f"target_chars={target}: requests mean, <=2, max; later piece median/max"] = (
            round(statistics.mean(counts), 3),
            sum(c <= 2 for c in counts),
            max(counts),
            statistics.median(later),
            max(later),
        )
    return report


@needs_corpus
def test_defaults_fit_corpus() -> None:
    report = corpus_report(REPLIES)
    assert report
    firsts = [segment(t)[0] for t in REPLIES]
    early = sum(speech_units(f) < first_sentence_units(t) for f, t in zip(firsts, REPLIES, strict=True))
    assert early * 2 > len(REPLIES)  # the first request leaves before the first sentence ends in most replies
    pairs = list(zip(firsts, REPLIES, strict=True))
    assert all(speech_units(f) >= FIRST_MIN_CHARS or f == t.strip() for f, t in pairs)
    assert sum(len(segment(t)) <= 2 for t in REPLIES) >= 0.9 * len(REPLIES)
    assert TARGET_CHARS > FIRST_MIN_CHARS


if __name__ == "__main__":
    if not REPLIES:
        raise SystemExit(f"corpus not found at {CORPUS}")
    for key, value in corpus_report(REPLIES).items():
        print(f"{key}: {value}")
