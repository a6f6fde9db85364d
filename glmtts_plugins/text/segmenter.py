"""Cut text streaming out of an LLM into TTS requests: early first piece, then long merged pieces.

``Segmenter`` is fed token by token (``push``) and returns the pieces that are final; ``flush`` ends the
turn. Every cut decision depends only on the text, never on where the tokens happened to be split, so
the same reply gives the same pieces whether it arrives one character at a time or all at once.

The rule
    * Cuts at sentence ends (``。！？；｡ ! ? ;``, ellipses, a sentence-ending ``.``); the first piece of a
      turn may also end at a clause (``，、：``, or ASCII ``,`` / ``:`` before whitespace). Closing quotes,
      emoji and whitespace after a sentence end stay with it.
    * Never inside a number, URL, e-mail, product/order code, after an abbreviation or initial, or inside
      a quoted title that closes within ``QUOTE_SPAN_MAX`` (64) characters. A boundary is decided once
      the next speakable character has arrived (``3.`` may become ``3.5``), or at ``flush()``.
    * Lengths are :func:`speech_units` (about syllables: one per CJK character or digit, one per three
      letters of a Latin word), so Chinese and English compare; ``max_chars`` (the API's 1024) counts
      plain characters and is never exceeded. No piece is empty or only punctuation/emoji/whitespace, and
      ``"".join(pieces)`` is the input but for stripped whitespace.

Why the defaults (the 40 replies of ``shared/corpus/replies.jsonl``; the full study is
``docs/segmenter.md``)
    * ``first_min_chars = 6``: the first piece ends at the first boundary at which it has at least 6
      units. 21 of 40 replies open with an interjection or label of at most 4 units ("好的，", "Sure!")
      and no first boundary falls at 5, so 6 sits just above that gap: the first piece is 12 units in the
      median (36 at most) against 17.5 for the first sentence, and none is a fragment under 5 units.
    * ``target_chars = 80``: later pieces merge whole sentences up to 80 units, because GLM-TTS takes
      prosody from the whole request. Requests per reply: 2.025 at 80 against 2.3 at 20; the one long
      reply takes 5 requests from 75 to 105, and 80 keeps the wait for a merged piece to ~80 units plus
      one sentence of LLM output (1-2 s), while the first piece plays for ~2.5 s.

Known limitations (details in ``docs/segmenter.md``): an English sentence ending in an abbreviation is
merged with the next; every boundary waits for one more token; a turn's last piece can be short.
"""

from __future__ import annotations

import re
import unicodedata

from .limit import MAX_INPUT_CHARS, split_text

__all__ = [
    "FIRST_MIN_CHARS",
    "QUOTE_SPAN_MAX",
    "TARGET_CHARS",
    "Segmenter",
    "is_speakable",
    "speech_units",
    "spoken_prefix",
]

FIRST_MIN_CHARS = 6
TARGET_CHARS = 80
QUOTE_SPAN_MAX = 64

# Characters of look-ahead needed before a forced (over-limit) cut can be masked deterministically.
_LOOKAHEAD = QUOTE_SPAN_MAX + 2
# Keep this much already emitted text for look-behind (abbreviations, quote openers) when trimming.
_KEEP_BEHIND = 128
_TRIM_AT = 8192

_TERMINATORS = "。！？；｡!?;.…"
_FULL_STOPS = frozenset("。！？；｡")
_CLAUSES = "，、：,:"
_CLOSERS = frozenset("”’\"'）)」』》〉】］]｝}»")
_QUOTE_PAIRS = {"《": "》", "“": "”", "「": "」", "『": "』", "〈": "〉", '"': '"'}

_CANDIDATE = re.compile("[" + re.escape(_TERMINATORS + _CLAUSES) + "]")
_TERM_RUN = re.compile("[" + re.escape(_TERMINATORS) + "]+")
_SPEAKABLE = re.compile(r"[^\W_]")
_OPENER = re.compile("[" + re.escape("".join(_QUOTE_PAIRS)) + "]")
_WORD_BEFORE = re.compile(r"[A-Za-z]+(?:\.[A-Za-z]+)*$")
_ASCII_TOKEN = re.compile(r"[!-~]+")
_TOKEN_EDGE_LEFT = "\"'([{<"
_TOKEN_EDGE_RIGHT = ".,;:!?\"')]}>"

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
_UNIT = re.compile(r"([^\W\d_" + _CJK + r"]+)|[^\W_]")

# Abbreviations that are never sentence ends (checked lower-case, without the dot).
_TITLES = frozenset(
    "mr mrs ms mx dr prof sr jr st mt ft gen col capt cpt lt sgt cmdr adm rev hon gov sen rep pres "
    "messrs mme mlle vs al".split()
)
# Abbreviations that are not sentence ends when a number follows ("No. 5", "Jan. 12", "approx. 30").
_BEFORE_NUMBER = frozenset(
    "no nos nr fig figs vol vols p pp ch sec art para approx ca tel ext ref est "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)

_UNDECIDED = None
_NO_CUT = -1


def speech_units(text: str) -> int:
    """Approximate syllables: 1 per CJK character or digit, ceil(letters / 3) per alphabetic word."""
    return sum(-(-len(word) // 3) if word else 1 for word in _UNIT.findall(text))


def is_speakable(text: str) -> bool:
    """Whether ``text`` has anything to say: a letter, digit or CJK character (not only punctuation)."""
    return _SPEAKABLE.search(text) is not None


def _is_trailing_symbol(ch: str) -> bool:
    """Emoji and similar symbols (and their joiners and modifiers) that go with the preceding text."""
    return ch in "~～" or unicodedata.category(ch) in ("So", "Sk", "Cf", "Mn", "Me")


def _ascii_quote_opens(text: str, q: int) -> bool:
    """Whether the ASCII ``"`` at ``q`` opens a quotation (rather than closing one or meaning inches)."""
    before = text[q - 1] if q > 0 else " "
    after = text[q + 1] if q + 1 < len(text) else " "
    return (before.isspace() or not before.isascii() or before in "([{<") and not after.isspace()


def _mask(view: str) -> str:
    """``view`` with numbers, codes, URLs, e-mails, words and quoted titles turned into runs of ``a``.

    Feeding this to ``split_text`` keeps it from cutting inside any of them; the cut positions apply to
    ``view`` unchanged because the mask has the same length.
    """
    chars = list(view)
    for match in _ASCII_TOKEN.finditer(view):
        start, end = match.span()
        while start < end and view[start] in _TOKEN_EDGE_LEFT:
            start += 1
        while end > start and view[end - 1] in _TOKEN_EDGE_RIGHT:
            end -= 1
        chars[start:end] = "a" * (end - start)
    for match in _OPENER.finditer(view):
        q = match.start()
        if view[q] == '"' and not _ascii_quote_opens(view, q):
            continue
        close = view.find(_QUOTE_PAIRS[view[q]], q + 1, q + 1 + QUOTE_SPAN_MAX)
        if close != -1:
            chars[q : close + 1] = "a" * (close + 1 - q)
    return "".join(chars)


class Segmenter:
    """Streaming text segmenter for TTS requests (see the module docstring for the rules).

    ``push(text)`` returns the pieces that became final; ``flush()`` ends the turn, returns everything
    left and resets, so the next turn's first piece again gets the latency rule; ``reset()`` drops
    everything (barge-in). Lengths ``first_min_chars`` and ``target_chars`` are in speech units
    (:func:`speech_units`), ``max_chars`` in characters.
    """

    def __init__(
        self,
        *,
        first_min_chars: int = FIRST_MIN_CHARS,
        target_chars: int = TARGET_CHARS,
        max_chars: int = MAX_INPUT_CHARS,
    ) -> None:
        if first_min_chars < 0:
            raise ValueError("first_min_chars must be >= 0")
        if target_chars < 1:
            raise ValueError("target_chars must be >= 1")
        if max_chars < 2:
            raise ValueError("max_chars must be >= 2")
        self.first_min_chars = first_min_chars
        self.target_chars = target_chars
        self.max_chars = max_chars
        self.reset()

    def reset(self) -> None:
        """Drop all buffered text and start a new turn."""
        self._buf = ""
        self._seg = 0  # start of the text not yet emitted
        self._pend = 0  # end of the complete sentences waiting to be merged ([_seg, _pend))
        self._pend_units = 0
        self._scan = 0  # every boundary candidate before this index has been decided
        self._first = True  # the turn's first piece has not been emitted yet

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the pieces that are now final (often none)."""
        if not text:
            return []
        self._buf += text
        out = self._advance(final=False)
        if self._seg > _TRIM_AT:
            self._trim()
        return out

    def flush(self) -> list[str]:
        """End the turn: return every remaining piece, then reset."""
        out = self._advance(final=True)
        end = len(self._buf)
        if self._first:
            out += self._emit(self._seg, end)
        else:
            if _SPEAKABLE.search(self._buf, self._pend):
                out += self._add_sentence(end)
            else:  # only whitespace/punctuation left: it goes with the pending piece
                self._pend = end
            out += self._emit(self._seg, self._pend)
        self.reset()
        return out

    # -- scanning ----------------------------------------------------------------------------------

    def _advance(self, *, final: bool) -> list[str]:
        out: list[str] = []
        buf = self._buf
        while True:
            match = _CANDIDATE.search(buf, self._scan)
            nxt = match.start() if match else len(buf)
            if nxt - self._pend >= self.max_chars:  # the current sentence cannot end within the limit
                if len(buf) - self._pend < self.max_chars + _LOOKAHEAD and not final:
                    break
                out += self._forced_cut()
                continue
            if match is None:
                break
            cut = self._decide(nxt, final)
            if cut is _UNDECIDED:
                break
            if cut == _NO_CUT:  # skip the whole run of marks: "..." is one candidate, not three
                run = _TERM_RUN.match(buf, nxt)
                self._scan = run.end() if run else nxt + 1
                continue
            if self._first:
                out += self._emit(self._seg, cut)
                self._seg = self._pend = cut
                self._pend_units = 0
                self._first = False
            else:
                out += self._add_sentence(cut)
            self._scan = cut
        return out

    def _decide(self, i: int, final: bool) -> int | None:
        """The cut index for the boundary candidate at ``i``, ``_NO_CUT``, or ``_UNDECIDED``."""
        buf = self._buf
        ch = buf[i]
        if ch in _CLAUSES:
            if not self._first:
                return _NO_CUT
            j = i + 1
            if ch in ",:":
                if j == len(buf):
                    return _NO_CUT if final else _UNDECIDED
                if not buf[j].isspace():
                    return _NO_CUT
            run = ""
        else:
            j = _TERM_RUN.match(buf, i).end()  # type: ignore[union-attr]  # buf[i] is a terminator: a match
            run = buf[i:j]

        speakable = _SPEAKABLE.search(buf, j)
        if speakable is None:
            if not final:
                return _UNDECIDED
            cut, spaced, nc = len(buf), True, ""
        else:
            cut, spaced = self._absorb(j, speakable.start())
            nc = buf[cut]

        if run and not _FULL_STOPS.intersection(run):
            if nc.isascii() and nc.islower():
                return _NO_CUT  # "Mr. smith", "Wait... what": a sentence goes on
            if "…" not in run:
                if not spaced and nc.isascii() and not nc.isspace():
                    return _NO_CUT  # glued to ASCII: 3.5, e.g, example.com, ?q=1, a;b
                if run == "." and self._abbreviation_before(i, nc):
                    return _NO_CUT

        protected = self._in_quote(i + 1, final)
        if protected is None:
            return _UNDECIDED
        if protected:
            return _NO_CUT
        start = self._seg if self._first else self._pend
        if not _SPEAKABLE.search(buf, start, cut):
            return _NO_CUT  # leading punctuation/emoji goes with the next piece
        if self._first and speech_units(buf[start:cut]) < self.first_min_chars:
            return _NO_CUT
        return cut

    def _absorb(self, j: int, limit: int) -> tuple[int, bool]:
        """Extend a boundary ending at ``j`` over closers, emoji and whitespace (not past ``limit``)."""
        buf = self._buf
        k, spaced = j, False
        while k < limit:
            ch = buf[k]
            if ch.isspace():
                spaced = True
            elif not (ch in _TERMINATORS or _is_trailing_symbol(ch) or (not spaced and ch in _CLOSERS)):
                break
            k += 1
        return k, spaced

    def _abbreviation_before(self, i: int, nc: str) -> bool:
        match = _WORD_BEFORE.search(self._buf, max(0, i - 32), i)
        if match is None:
            return False
        word = match.group()
        if "." in word:
            return all(len(part) <= 2 for part in word.split("."))
        if len(word) == 1:
            return True
        word = word.lower()
        return word in _TITLES or (word in _BEFORE_NUMBER and nc.isdigit())

    def _in_quote(self, cut: int, final: bool) -> bool | None:
        """Whether a cut before ``cut`` falls inside a short quotation (None: cannot tell yet).

        Called with the index just after the boundary mark, so a mark inside 《你好！》 or “满200减30！”
        is no boundary even though the cut itself would come after the closing quote.
        """
        buf = self._buf
        for match in _OPENER.finditer(buf, max(self._seg, cut - QUOTE_SPAN_MAX), cut):
            q = match.start()
            if buf[q] == '"' and not _ascii_quote_opens(buf, q):
                continue
            close = buf.find(_QUOTE_PAIRS[buf[q]], q + 1, q + 1 + QUOTE_SPAN_MAX)
            if close == -1:
                if not final and len(buf) < q + 1 + QUOTE_SPAN_MAX:
                    return None
            elif close >= cut:
                return True
        return False

    # -- emitting ----------------------------------------------------------------------------------

    def _add_sentence(self, cut: int) -> list[str]:
        """Merge the sentence ``[_pend, cut)`` into the pending piece, emitting what is complete."""
        out: list[str] = []
        units = speech_units(self._buf[self._pend : cut])
        if self._pend > self._seg and (
            self._pend_units + units > self.target_chars or cut - self._seg > self.max_chars
        ):
            out += self._emit(self._seg, self._pend)
            self._seg = self._pend
            self._pend_units = 0
        self._pend = cut
        self._pend_units += units
        if self._pend_units >= self.target_chars:
            out += self._emit(self._seg, cut)
            self._seg = cut
            self._pend_units = 0
        return out

    def _forced_cut(self) -> list[str]:
        """Cut the sentence at ``_pend``, longer than ``max_chars``, where ``split_text`` would."""
        out: list[str] = []
        if self._pend > self._seg:
            out += self._emit(self._seg, self._pend)
        start = self._pend
        view = self._buf[start : start + self.max_chars + _LOOKAHEAD]
        cut = start + len(split_text(_mask(view), self.max_chars)[0])
        out += self._emit(start, cut)
        self._seg = self._pend = self._scan = cut
        self._pend_units = 0
        self._first = False
        return out

    def _emit(self, start: int, end: int) -> list[str]:
        """The piece ``[start, end)`` stripped, split if over ``max_chars``; nothing if unspeakable."""
        text = self._buf[start:end]
        if len(text.strip()) <= self.max_chars:
            piece = text.strip()
            return [piece] if is_speakable(piece) else []
        # Over the limit (only when no usable boundary exists): split_text on the masked text, then
        # attach chunks without a speakable character to a neighbour where that stays within the limit.
        spans: list[list[int]] = []
        carry: int | None = None
        pos = 0
        for chunk in split_text(_mask(text), self.max_chars):
            s, e = pos, pos + len(chunk)
            pos = e
            if is_speakable(text[s:e]):
                if carry is not None and len(text[carry:e].strip()) <= self.max_chars:
                    s = carry
                carry = None
                spans.append([s, e])
            elif spans and len(text[spans[-1][0] : e].strip()) <= self.max_chars:
                spans[-1][1] = e
            elif carry is None:
                carry = s
        return [text[s:e].strip() for s, e in spans]

    def _trim(self) -> None:
        drop = self._seg - _KEEP_BEHIND
        self._buf = self._buf[drop:]
        self._seg -= drop
        self._pend -= drop
        self._scan -= drop


def spoken_prefix(text: str, fraction: float) -> str:
    """The start of ``text`` whose speech units are at most ``fraction`` of its total.

    Cuts only after a whole unit-bearing token (a CJK character, a digit, a whole Latin word), so a
    partly heard piece is reported up to its last complete word; ``fraction >= 1`` returns all of it.
    """
    if fraction >= 1:
        return text
    tokens = [(m.end(), -(-len(m.group(1)) // 3) if m.group(1) else 1) for m in _UNIT.finditer(text)]
    budget = max(0.0, fraction) * sum(units for _, units in tokens)
    end, spent = 0, 0
    for token_end, units in tokens:
        if spent + units > budget + 1e-9:
            break
        spent += units
        end = token_end
    return text[:end]
