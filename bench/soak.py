"""Issue 15 soak: N concurrent calls for M minutes, random barge-ins and faults, checks that must all hold.

Run: ``.venv/bin/python -m bench.soak`` (100 calls, 10 minutes); ``--calls 20 --minutes 0.5`` is the short
version ``make test`` runs (``tests/test_soak.py``); ``--faults`` mixes in injected faults. Exits 1 when a
check fails, so it can gate a release.

Each call owns a ``Synthesizer(CloudEngine(...), sample_rate=8000, encoding="mulaw", frame_ms=20)`` (as
each adapter instance does) and speaks random corpus replies as LLM tokens (``speak_stream``, prefetch 1)
against the local server in its own process (tone engine, 20 ms events paced at real time). A share of
utterances is cancelled from another task (as a barge-in is), at a moment drawn from: before the first
audio, mid-piece, or while the next piece is being prefetched (the moment actually hit is what is
reported). With ``--faults`` a share of utterances carries a fault header: the connection dropped after a
few events (``TruncatedStreamError``), an in-stream error (``InvalidRequestError``), a slow first byte
(no error), or a first byte slower than the request's ``timeout`` (``APITimeoutError``).

Checks: no frame after ``cancel()`` returned; every completed utterance has exactly
``round(engine samples * 8000 / 24000)`` samples per piece; errors only of the injected types (none without
a fault); no utterance left hanging; RSS growth after warm-up below a bound; open file descriptors and
asyncio tasks equal before and after; no server request record left ``running``. Also measured: the
latency of ``cancel()`` (call to return) beside the event loop's lag, sampled by a 10 ms ticker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx
import psutil

from glmtts_plugins import CloudEngine, GLMTTSError, Synthesizer
from glmtts_plugins.errors import APITimeoutError, InvalidRequestError, TruncatedStreamError
from glmtts_plugins.testing import llm_tokens

from ._server import TOKEN

RATE = 8000
SAMPLES_PER_CHAR = 960  # the server's tone engine: 40 ms of 24 kHz audio per character
FAULT = contextvars.ContextVar[str]("FAULT", default="")
FAULT_HEADER = "X-GLMTTS-Fault"
# kind: (header spec, errors allowed, the per-request timeout to pass, if any)
FAULTS: dict[str, tuple[str, tuple[type[BaseException], ...], float | None]] = {
    "disconnect": ("disconnect_after={n}", (TruncatedStreamError,), None),
    "stream error": ("error_after={n};error_code=1214", (InvalidRequestError,), None),
    "slow first byte": ("first_byte_ms=300", (), None),
    "first byte timeout": ("first_byte_ms=5000", (APITimeoutError,), None),
}
FIRST_BYTE_TIMEOUT = 3.0  # the engines' first-byte deadline in the soak: the timeout fault exceeds it
MOMENTS = ("before first audio", "mid-piece", "during prefetch")


def replies() -> list[str]:
    from . import _corpus

    return _corpus.replies(fallback="您好，这里是星河银行信用卡中心。请问有什么可以帮您？今天天气很好。")


# -- the server, in its own process -------------------------------------------------------------------


def serve() -> None:
    """Child: run the local server; print its URL; answer ``summary`` on stdin with its records."""
    import logging

    from glmtts_plugins.server import LocalServer, RequestRecord
    from glmtts_plugins.testing import ToneEngine

    logging.disable(logging.CRITICAL)  # clients leaving mid-body make uvicorn log tracebacks (issue 13)
    seen: dict[str, RequestRecord] = {}
    server = LocalServer(ToneEngine(ms_per_char=40, chunk_bytes=960), tokens=[TOKEN], faults="rtf=1")
    server.start()

    def scan() -> None:  # keep every record (the server trims old ones on a long run)
        while True:
            for rec in list(server.records):
                seen.setdefault(rec.id, rec)
            time.sleep(0.5)

    threading.Thread(target=scan, daemon=True).start()
    print(server.base_url, flush=True)
    for line in sys.stdin:
        if line.strip() == "summary":
            for rec in list(server.records):
                seen.setdefault(rec.id, rec)
            deadline = time.monotonic() + 5  # let the last disconnects land
            while any(r.outcome == "running" for r in seen.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            outcomes: dict[str, int] = {}
            for rec in seen.values():
                outcomes[rec.outcome] = outcomes.get(rec.outcome, 0) + 1
            print(json.dumps(outcomes), flush=True)
        elif line.strip() == "quit":
            break
    server.stop()


class ServerProcess:
    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the soak server did not start")
        return self

    def summary(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("summary\n")
        self.proc.stdin.flush()
        outcomes: dict[str, int] = json.loads(self.proc.stdout.readline())
        return outcomes

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


# -- the calls ----------------------------------------------------------------------------------------


@dataclass
class Stats:
    utterances: int = 0
    completed: int = 0
    inexact: int = 0
    frames_after_cancel: int = 0
    hung: int = 0
    cancels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MOMENTS, 0))
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    errors: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    cancel_ms: list[float] = field(default_factory=list)
    audio_s: float = 0.0


async def _add_fault(request: httpx.Request) -> None:
    spec = FAULT.get()
    if spec:
        request.headers[FAULT_HEADER] = spec


def _client() -> httpx.AsyncClient:
    """CloudEngine's own client settings, plus a hook that adds the utterance's fault header."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=10.0, write=5.0, pool=5.0),
        limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60.0),
        trust_env=False,
        event_hooks={"request": [_add_fault]},
    )


class _CancelState(TypedDict):
    returned: bool  # cancel() has returned
    frames: int
    canceller: asyncio.Task[None] | None


async def utterance(
    synth: Synthesizer, text: str, rng: random.Random, args: argparse.Namespace, st: Stats
) -> None:
    kind = rng.choice(list(FAULTS)) if args.faults and rng.random() < args.fault_share else None
    allowed: tuple[type[BaseException], ...] = ()
    timeout = None
    if kind is not None:
        spec, allowed, timeout = FAULTS[kind]
        FAULT.set(spec.format(n=rng.randint(1, 5)))
        st.faults[kind] += 1
    else:
        FAULT.set("")
    plan = rng.choice(MOMENTS) if rng.random() < args.cancel_share else None
    mid_after = rng.randint(1, 40)
    st.utterances += 1
    utt = synth.speak_stream(llm_tokens(text, rng), **({} if timeout is None else {"timeout": timeout}))
    per_segment: dict[int, int] = {}
    state: _CancelState = {"returned": False, "frames": 0, "canceller": None}
    error: BaseException | None = None

    async def cancel(moment: str) -> None:
        st.cancels[moment] += 1
        t = time.monotonic()
        await utt.cancel()
        st.cancel_ms.append(1000 * (time.monotonic() - t))
        state["returned"] = True

    def start_cancel() -> None:
        if state["canceller"] is not None:
            return
        segs = utt.segments
        if state["frames"] == 0:
            moment = "before first audio"
        elif len(segs) >= 2 and not segs[1].complete and current == 0:
            moment = "during prefetch"
        else:
            moment = "mid-piece"
        state["canceller"] = asyncio.create_task(cancel(moment))

    current = -1

    async def consume() -> None:
        nonlocal error, current
        try:
            async for frame in utt:
                if state["returned"]:
                    st.frames_after_cancel += 1
                state["frames"] += 1
                current = frame.segment_index
                per_segment[current] = per_segment.get(current, 0) + len(frame.audio)
                if plan == "mid-piece" and state["frames"] >= mid_after:
                    start_cancel()
                elif plan == "during prefetch" and len(utt.segments) >= 2 and current == 0:
                    start_cancel()
        except Exception as exc:  # what the utterance raised, checked below
            error = exc

    consumer = asyncio.create_task(consume())
    if plan == "before first audio":
        await asyncio.sleep(rng.uniform(0, 0.01))
        start_cancel()
    done, _ = await asyncio.wait([consumer], timeout=30)
    if not done:
        st.hung += 1
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    if state["canceller"] is not None:
        await state["canceller"]
    st.audio_s += sum(per_segment.values()) / RATE
    if error is not None:
        name = type(error).__name__
        st.errors[name] = st.errors.get(name, 0) + 1
        if not isinstance(error, GLMTTSError) or not isinstance(error, allowed):
            st.unexpected.append(f"{name} ({kind or 'no fault'}): {str(error)[:120]}")
    elif state["canceller"] is None and done:
        st.completed += 1
        want = {s.index: round(len(s.text) * SAMPLES_PER_CHAR * RATE / 24000) for s in utt.segments}
        if per_segment != {i: n for i, n in want.items() if n}:
            st.inexact += 1


async def call(
    i: int, url: str, args: argparse.Namespace, stop_at: float, st: Stats, corpus: list[str]
) -> None:
    rng = random.Random(args.seed * 100003 + i)
    await asyncio.sleep(rng.uniform(0, args.warmup * 0.5))
    client = _client()
    engine = CloudEngine(
        api_key=TOKEN, base_url=url, http_client=client, first_byte_timeout=FIRST_BYTE_TIMEOUT
    )
    synth = Synthesizer(engine, sample_rate=RATE, encoding="mulaw", frame_ms=20)
    try:
        while time.monotonic() < stop_at:
            await utterance(synth, rng.choice(corpus), rng, args, st)
    finally:
        await engine.aclose()
        await client.aclose()


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    st = Stats()
    corpus = replies()
    proc = psutil.Process()
    lag: list[float] = []
    rss: list[tuple[float, int]] = []
    fds: list[int] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            lag.append(1000 * (loop.time() - t - 0.01))

    async def sampler(t0: float) -> None:
        while True:
            rss.append((time.monotonic() - t0, proc.memory_info().rss))
            fds.append(proc.num_fds())
            await asyncio.sleep(2.0)

    t0 = time.monotonic()
    background = [asyncio.create_task(ticker()), asyncio.create_task(sampler(t0))]
    await asyncio.sleep(0.05)
    gc.collect()
    fds_before, tasks_before = proc.num_fds(), len(asyncio.all_tasks())
    stop_at = t0 + args.seconds
    await asyncio.gather(*(call(i, url, args, stop_at, st, corpus) for i in range(args.calls)))
    await asyncio.sleep(0.5)  # let closed sockets settle
    gc.collect()
    fds_after, tasks_after = proc.num_fds(), len(asyncio.all_tasks())
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    after_warmup = [r for t, r in rss if t >= args.warmup] or [rss[-1][1]]
    growth_mb = (max(after_warmup) - after_warmup[0]) / 2**20
    return {
        "stats": st,
        "lag": lag,
        "growth_mb": growth_mb,
        "rss_mb": [round(r / 2**20, 1) for _, r in rss],
        "fds": (fds_before, fds_after, max(fds)),
        "tasks": (tasks_before, tasks_after),
    }


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--faults", action="store_true", help="mix injected faults into a share of utterances"
    )
    parser.add_argument("--fault-share", type=float, default=0.1)
    parser.add_argument("--cancel-share", type=float, default=0.3)
    parser.add_argument("--max-rss-growth-mb", type=float, default=32.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    args.seconds = 60 * args.minutes
    args.warmup = min(60.0, args.seconds / 3)
    with ServerProcess() as server:
        result = asyncio.run(run(args, server.url))
        outcomes = server.summary()
    st: Stats = result["stats"]
    (fds_before, fds_after, fds_max), (tasks_before, tasks_after) = result["fds"], result["tasks"]
    checks = {
        "frames after cancel": (st.frames_after_cancel, st.frames_after_cancel == 0),
        "completed utterances with inexact sample counts": (st.inexact, st.inexact == 0),
        "errors of a type not injected": (len(st.unexpected), not st.unexpected),
        "utterances left hanging": (st.hung, st.hung == 0),
        f"RSS growth after warm-up (≤ {args.max_rss_growth_mb:.0f} MB)": (
            f"{result['growth_mb']:.1f} MB",
            result["growth_mb"] <= args.max_rss_growth_mb,
        ),
        "open file descriptors before / after": (f"{fds_before} / {fds_after}", fds_before == fds_after),
        "asyncio tasks before / after": (f"{tasks_before} / {tasks_after}", tasks_before == tasks_after),
        "server records left running": (outcomes.get("running", 0), outcomes.get("running", 0) == 0),
    }
    lag, cancel_ms = result["lag"], st.cancel_ms
    print(
        f"\nSoak: {args.calls} calls for {args.minutes:g} min, {'with' if args.faults else 'no'} faults; "
        f"{st.utterances} utterances, {st.completed} completed, {st.audio_s / 60:.1f} min of audio\n"
    )
    print("| check | value | ok |")
    print("|---|---:|---|")
    for name, (value, ok) in checks.items():
        print(f"| {name} | {value} | {'yes' if ok else '**NO**'} |")
    print("\n| measured | value |")
    print("|---|---:|")
    print(
        "| cancels: "
        + ", ".join(f"{k} {v}" for k, v in st.cancels.items())
        + f" | {sum(st.cancels.values())} |"
    )
    if args.faults:
        print(
            "| faults injected: "
            + ", ".join(f"{k} {v}" for k, v in st.faults.items())
            + f" | {sum(st.faults.values())} |"
        )
    print(
        "| errors by type | " + (", ".join(f"{k} {v}" for k, v in sorted(st.errors.items())) or "none") + " |"
    )
    print(
        f"| cancel() call to return: p50 / p99 / max | {pct(cancel_ms, 0.5):.1f} / "
        f"{pct(cancel_ms, 0.99):.1f} / "
        f"{max(cancel_ms, default=float('nan')):.1f} ms |"
    )
    print(
        f"| event-loop lag (10 ms ticker): p50 / p99 / max | {pct(lag, 0.5):.1f} / {pct(lag, 0.99):.1f} / "
        f"{max(lag, default=float('nan')):.1f} ms |"
    )
    print(
        f"| RSS over time (MB, every 2 s) | {result['rss_mb'][0]} → {max(result['rss_mb'])} max → "
        f"{result['rss_mb'][-1]} |"
    )
    print(f"| open file descriptors, max during the run | {fds_max} |")
    print(
        "| server records by outcome | " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) + " |"
    )
    for line in st.unexpected[:10]:
        print(f"unexpected: {line}")
    report = {
        "checks": {name: {"value": str(value), "ok": ok} for name, (value, ok) in checks.items()},
        "utterances": st.utterances,
        "completed": st.completed,
        "cancels": st.cancels,
        "faults": st.faults,
        "errors": st.errors,
        "cancel_ms": {
            "p50": pct(cancel_ms, 0.5),
            "p99": pct(cancel_ms, 0.99),
            "max": max(cancel_ms, default=None),
        },
        "lag_ms": {"p50": pct(lag, 0.5), "p99": pct(lag, 0.99), "max": max(lag, default=None)},
        "server": outcomes,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    ok = all(ok for _, ok in checks.values())
    print(f"\n{'all checks passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
