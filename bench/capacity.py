"""Issue 15: how many calls one core carries. Client CPU per second of audio at 1-200 concurrent calls.

Run: ``.venv/bin/python -m bench.capacity`` (about 10 minutes); ``--quick`` for a one-minute look.

The server runs in its own process (``bench/_paced_server.py``: the cloud's SSE events of 20 ms of
24 kHz audio, paced at real time, a few microseconds per event, because the local server cannot pace more
than ~70 streams on this machine), so only the client is measured. Each configuration runs in a fresh
child process: N calls, each speaking random corpus replies back to back, started at random moments of
a warm-up; then a window of process CPU time (all threads) divided by the seconds of audio the calls
received. Side by side, in one run:

* ``glmtts``: ``Synthesizer(CloudEngine(...), sample_rate=8000, encoding="mulaw", frame_ms=20)`` (or 16 kHz
  PCM), one engine per call, as each adapter instance makes by default (the default transport: ours, on
  aiohttp);
* ``glmtts on httpx's transport``: the same with ``http_client=httpx.AsyncClient()`` (h11 and httpcore, the
  default before issue 15);
* ``glmtts + httpx-aiohttp``: the same with ``http_client=httpx.AsyncClient(transport=AiohttpTransport())``
  from the ``httpx-aiohttp`` package (the ready-made alternative to our transport);
* ``zai-sdk chain``: what a user would otherwise write: the official SDK's streaming in a thread per call,
  soxr HQ ``ResampleStream``, ``audioop`` G.711 (our codec where audioop is gone), 20 ms frames.

Also reported: RSS per concurrent call, the event loop's lag (a 10 ms ticker, sampled for 4 s after the
CPU window: each wake-up of an idle loop costs ~0.2 ms of CPU on the bench VM), CPU per utterance
against text length (server paced 20x faster than real time there, to keep the run short), and a cProfile
of the 100-call run split by stage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glmtts_plugins import Synthesizer
    from glmtts_plugins.synthesizer import Encoding

WAYS = {
    "glmtts": "glmtts",
    "httpcore": "glmtts on httpx's transport",
    "httpx_aiohttp": "glmtts + httpx-aiohttp",
    "sdk": "zai-sdk chain",
}
FORMATS: dict[str, tuple[int, Encoding]] = {"mulaw8k": (8000, "mulaw"), "pcm16k": (16000, "pcm_s16le")}


def corpus() -> list[str]:
    from ._corpus import replies

    return replies(fallback="您好，这里是星河银行信用卡中心，我是智能客服小星。请问有什么可以帮您？")


def text_of_length(n: int, replies: list[str]) -> str:
    text = ""
    while len(text) < n:
        text += "".join(replies)
    return text[:n]


# -- the child: one configuration in a fresh process -----------------------------------------------


class Counter:
    """Audio received, per call (threads write their own slot, so no lock is needed)."""

    def __init__(self, n: int, rate: int) -> None:
        self.samples = [0] * n
        self.rate = rate

    def seconds(self) -> float:
        return sum(self.samples) / self.rate


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _glmtts_call_factory(
    spec: dict[str, Any],
) -> tuple[
    Callable[[], AbstractAsyncContextManager[Synthesizer]],
    Callable[[Synthesizer, str, Counter, int, threading.Event], Awaitable[None]],
]:
    import httpx
    from httpx_aiohttp import AiohttpTransport

    from glmtts_plugins import CloudEngine, Synthesizer

    from ._server import TOKEN

    rate, encoding = FORMATS[spec["format"]]
    per_sample = 1 if encoding != "pcm_s16le" else 2

    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[Synthesizer]:
        client: httpx.AsyncClient | None = None
        if spec["way"] == "httpcore":
            client = httpx.AsyncClient(trust_env=False)
        elif spec["way"] == "httpx_aiohttp":
            client = httpx.AsyncClient(transport=AiohttpTransport())
        engine = CloudEngine(api_key=TOKEN, base_url=spec["url"], http_client=client)
        try:
            yield Synthesizer(engine, sample_rate=rate, encoding=encoding, frame_ms=20)
        finally:
            await engine.aclose()
            if client is not None:
                await client.aclose()

    async def speak(synth: Synthesizer, text: str, counter: Counter, i: int, stop: threading.Event) -> None:
        async with synth.speak(text) as utterance:
            async for frame in utterance:
                counter.samples[i] += len(frame.audio) // per_sample
                if stop.is_set():
                    break

    return session, speak


def _sdk_call(
    spec: dict[str, Any],
    texts: Iterator[str],
    counter: Counter,
    i: int,
    stop: threading.Event,
    start_at: float,
) -> None:
    import numpy as np
    import soxr
    from zai import ZhipuAiClient

    from glmtts_plugins.text import split_text

    from ._server import TOKEN
    from .client_overhead import sdk_stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            def ulaw(pcm: bytes) -> bytes:
                return audioop.lin2ulaw(pcm, 2)
        except ImportError:  # pragma: no cover - Python >= 3.13
            from glmtts_plugins.audio import lin2ulaw as ulaw

    rate, encoding = FORMATS[spec["format"]]
    frame_bytes = rate // 50 * (1 if encoding == "mulaw" else 2)
    per_sample = 1 if encoding == "mulaw" else 2
    client = ZhipuAiClient(api_key=TOKEN, base_url=spec["url"], max_retries=0)
    time.sleep(max(0.0, start_at - time.monotonic()))
    while not stop.is_set():
        for piece in split_text(next(texts)):
            rs = soxr.ResampleStream(24000, rate, 1, dtype="int16", quality="HQ")
            buf = bytearray()
            chunks = sdk_stream(client, piece)
            for pcm in chunks:
                out = rs.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes()
                buf += ulaw(out) if encoding == "mulaw" else out
                while len(buf) >= frame_bytes:
                    frame = bytes(buf[:frame_bytes])
                    del buf[:frame_bytes]
                    counter.samples[i] += len(frame) // per_sample
                if stop.is_set():
                    chunks.close()
                    return
            out = rs.resample_chunk(np.zeros(0, "<i2"), last=True).tobytes()
            buf += ulaw(out) if encoding == "mulaw" else out
            counter.samples[i] += len(buf) // per_sample


class LoopLag:
    """Lateness of a 10 ms ticker on the event loop, sampled only while ``active``."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.active = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            if self.active:
                self.samples.append(1000 * (loop.time() - t - 0.01))


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def _child_calls_async(spec: dict[str, Any]) -> dict[str, Any]:
    session, speak = _glmtts_call_factory(spec)
    n, warmup, seconds = spec["calls"], spec["warmup"], spec["seconds"]
    rate = FORMATS[spec["format"]][0]
    counter, stop = Counter(n, rate), threading.Event()
    replies = corpus()
    lag = LoopLag()
    rss0 = _rss()
    t0 = time.monotonic()

    async def call(i: int) -> None:
        rng = random.Random(i)
        await asyncio.sleep(rng.uniform(0, 0.8 * warmup))
        async with session() as synth:
            while not stop.is_set():
                await speak(synth, rng.choice(replies), counter, i, stop)

    tasks = [asyncio.create_task(call(i)) for i in range(n)]
    await asyncio.sleep(max(0.0, t0 + warmup - time.monotonic()))
    profiler = cProfile.Profile(time.process_time) if spec.get("profile") else None  # CPU, not idle
    cpu0, audio0, wall0 = time.process_time(), counter.seconds(), time.monotonic()
    if profiler:
        profiler.enable()
    rss_peak = rss0
    while time.monotonic() < wall0 + seconds:
        await asyncio.sleep(2.0)
        rss_peak = max(rss_peak, _rss())
    if profiler:
        profiler.disable()
    cpu1, audio1, wall1 = time.process_time(), counter.seconds(), time.monotonic()
    # The loop's lag is sampled after the CPU window: on this VM every wake-up of an idle loop costs
    # ~0.2 ms of CPU, so a 10 ms ticker would add ~20 ms per second to the one-call figure.
    lag.active = True
    lag_task = asyncio.create_task(lag.run())
    await asyncio.sleep(min(4.0, seconds / 3))
    lag.active = False
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    lag_task.cancel()
    result = _summary(spec, cpu1 - cpu0, audio1 - audio0, wall1 - wall0, rss0, rss_peak)
    result["lag_p50"], result["lag_p99"] = _pct(lag.samples, 0.5), _pct(lag.samples, 0.99)
    if profiler:
        result["stages"], result["top"] = stages(profiler)
    return result


def _child_calls_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    n, warmup, seconds = spec["calls"], spec["warmup"], spec["seconds"]
    rate = FORMATS[spec["format"]][0]
    counter, stop = Counter(n, rate), threading.Event()
    replies = corpus()
    rss0 = _rss()
    t0 = time.monotonic()
    threads = []
    for i in range(n):
        rng = random.Random(i)
        texts = iter(functools.partial(rng.choice, replies), None)
        start_at = t0 + rng.uniform(0, 0.8 * warmup)
        th = threading.Thread(target=_sdk_call, args=(spec, texts, counter, i, stop, start_at), daemon=True)
        th.start()
        threads.append(th)
    time.sleep(max(0.0, t0 + warmup - time.monotonic()))
    cpu0, audio0, wall0 = time.process_time(), counter.seconds(), time.monotonic()
    rss_peak = rss0
    while time.monotonic() < wall0 + seconds:
        time.sleep(2.0)
        rss_peak = max(rss_peak, _rss())
    cpu1, audio1, wall1 = time.process_time(), counter.seconds(), time.monotonic()
    stop.set()
    for th in threads:
        th.join(timeout=10)
    return _summary(spec, cpu1 - cpu0, audio1 - audio0, wall1 - wall0, rss0, rss_peak)


def _summary(
    spec: dict[str, Any], cpu: float, audio: float, wall: float, rss0: int, rss_peak: int
) -> dict[str, Any]:
    n = spec["calls"]
    return {
        "cpu_ms_per_s": 1000 * cpu / audio if audio else float("nan"),
        "audio_s": audio,
        "pace": audio / wall / n,  # 1.0: every call received audio in real time
        "rss_per_call_kb": (rss_peak - rss0) / n / 1024,
    }


async def _child_lengths_async(spec: dict[str, Any]) -> dict[str, Any]:
    session, speak = _glmtts_call_factory(spec)
    rate = FORMATS[spec["format"]][0]
    out = {}
    async with session() as synth:
        for length, reps in spec["lengths"]:
            text = text_of_length(length, corpus())
            cpu, audio = [], []
            for _ in range(reps):
                counter = Counter(1, rate)
                t = time.process_time()
                await speak(synth, text, counter, 0, threading.Event())
                cpu.append(time.process_time() - t)
                audio.append(counter.seconds())
            out[str(length)] = {"cpu_ms": 1000 * statistics.median(cpu), "audio_s": statistics.median(audio)}
    return out


def _child_lengths_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    rate = FORMATS[spec["format"]][0]
    out = {}
    for length, reps in spec["lengths"]:
        text = text_of_length(length, corpus())
        cpu, audio = [], []
        for _ in range(reps):
            counter, stop = Counter(1, rate), threading.Event()
            texts = iter([text])
            t = time.process_time()
            with contextlib.suppress(StopIteration):
                _sdk_call(spec, texts, counter, 0, stop, 0.0)
            cpu.append(time.process_time() - t)
            audio.append(counter.seconds())
        out[str(length)] = {"cpu_ms": 1000 * statistics.median(cpu), "audio_s": statistics.median(audio)}
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["mode"] == "lengths":
        return _child_lengths_sdk(spec) if spec["way"] == "sdk" else asyncio.run(_child_lengths_async(spec))
    return _child_calls_sdk(spec) if spec["way"] == "sdk" else asyncio.run(_child_calls_async(spec))


# -- the profile, by stage ----------------------------------------------------------------------------

STAGES = [
    # (stage, path fragments, function names or None for any)
    (
        "HTTP client (httpx, httpcore, h11, anyio / aiohttp)",
        (
            "/httpx/",
            "/httpcore/",
            "/h11/",
            "/anyio/",
            "/aiohttp/",
            "/httpx_aiohttp/",
            "/multidict/",
            "/yarl/",
            "/sniffio/",
            "/ssl.py",
            "/socket.py",
            "glmtts_plugins/engines/aiohttp_transport.py",
        ),
        None,
    ),
    ("read deadlines", ("glmtts_plugins/engines/deadline.py", "/asyncio/timeouts.py"), None),
    ("SSE events and base64", ("glmtts_plugins/engines/sse.py",), None),
    ("SSE events and base64", ("glmtts_plugins/engines/cloud.py",), None),  # the decoder, per event
    ("engine read loop (http.py, base.py)", ("glmtts_plugins/engines/",), None),
    ("queues between tasks (asyncio.Queue)", ("/asyncio/queues.py",), None),
    ("resampling", ("glmtts_plugins/audio/stream_resampler.py",), None),
    ("G.711 encoding", ("glmtts_plugins/audio/g711.py",), None),
    ("framing", ("glmtts_plugins/audio/framer.py",), None),
    ("utterance (synthesizer.py: steps, frames, bookkeeping)", ("glmtts_plugins/synthesizer.py",), None),
    ("event loop (asyncio, selectors)", ("/asyncio/", "/selectors.py"), None),
]


def _stage(func: tuple[str, int, str]) -> str | None:
    filename, _, name = func
    for stage, paths, names in STAGES:
        if any(p in filename for p in paths) and (names is None or name in names):
            return stage
    if filename == "~" or filename.endswith(("/contextlib.py", "/functools.py")):
        return None  # a builtin or a generic helper: charged to its callers
    return "other (the benchmark's own loop, contextlib, ...)"


def stages(profiler: cProfile.Profile) -> tuple[dict[str, float], list[tuple[str, float, int, str]]]:
    """Seconds of profiled time per stage: each function's own time, builtins charged to their callers
    (in proportion to the time spent in them from each caller)."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]  # not in typeshed
    totals: dict[str, float] = {}

    def charge(func: tuple[str, int, str], seconds: float, depth: int = 0) -> None:
        stage = _stage(func)
        if stage is None:
            callers = stats[func][4]
            spent = sum(c[2] for c in callers.values())
            if not callers or not spent or depth > 5:
                stage = "other (the benchmark's own loop, contextlib, ...)"
            else:
                for caller, c in callers.items():
                    charge(caller, seconds * c[2] / spent, depth + 1)
                return
        totals[stage] = totals.get(stage, 0.0) + seconds

    for func, (_, _, tottime, _, _) in stats.items():
        charge(func, tottime)
    top = sorted(
        ((f"{Path(f[0]).name}:{f[2]}", s[2], s[1], _stage(f) or "builtin") for f, s in stats.items()),
        key=lambda r: -r[1],
    )[:60]
    return totals, top


# -- the parent -----------------------------------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=spec.get("seconds", 0) + spec.get("warmup", 0) + 600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a short look: 1 and 10 calls, 3 s windows")
    parser.add_argument("--calls", default="1,10,50,100,200")
    parser.add_argument("--ways", default="glmtts,httpcore,httpx_aiohttp,sdk")
    parser.add_argument("--formats", default="mulaw8k,pcm16k")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per configuration")
    parser.add_argument("--warmup", type=float, default=4.0, help="calls start at random in this time")
    parser.add_argument("--lengths", default="10,100,1000,3000")
    parser.add_argument("--profile-calls", type=int, default=100)
    parser.add_argument("--json", help="also write every result here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        args.calls, args.seconds, args.warmup, args.lengths, args.profile_calls = (
            "1,10",
            3.0,
            1.5,
            "10,100",
            10,
        )
    calls = [int(c) for c in args.calls.split(",")]
    ways, formats = args.ways.split(","), args.formats.split(",")
    lengths = [int(n) for n in args.lengths.split(",")]
    from ._paced_server import paced_server

    results: dict[str, Any] = {"calls": [], "lengths": {}, "profile": {}}
    base = {"mode": "calls", "seconds": args.seconds, "warmup": args.warmup}
    with paced_server(1.0) as url:
        for fmt in formats:
            for n in calls:
                for way in ways:
                    r = run_child({**base, "url": url, "way": way, "format": fmt, "calls": n})
                    results["calls"].append({"way": way, "format": fmt, "calls": n, **r})
                    print(
                        f"{WAYS[way]:>16} {fmt} {n:>4} calls: {r['cpu_ms_per_s']:.2f} ms/s", file=sys.stderr
                    )
        for way in [w for w in ways if w in ("glmtts", "httpcore")]:
            spec = {**base, "url": url, "way": way, "format": "mulaw8k", "calls": args.profile_calls}
            results["profile"][way] = run_child({**spec, "profile": True})
    with paced_server(0.05) as url:
        reps = [(n, 5 if n <= 100 else 3 if n <= 1000 else 1) for n in lengths]
        for way in ways:
            spec = {"mode": "lengths", "url": url, "way": way, "format": "mulaw8k", "lengths": reps}
            results["lengths"][way] = run_child(spec)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nClient CPU per second of audio ({args.seconds:.0f} s window after {args.warmup:.0f} s warm-up; "
        "pace 1.00 = every call got its audio in real time)\n"
    )
    print(
        "| format | calls | way | CPU per s of audio | calls per core | vs glmtts | RSS per call "
        "| loop lag p50 / p99 | pace |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = results["calls"]
    for r in rows:
        ours = next(
            x
            for x in rows
            if x["format"] == r["format"] and x["calls"] == r["calls"] and x["way"] == "glmtts"
        )
        lag = f"{r['lag_p50']:.1f} / {r['lag_p99']:.1f} ms" if "lag_p50" in r else "(threads)"
        print(
            f"| {r['format']} | {r['calls']} | {WAYS[r['way']]} | {r['cpu_ms_per_s']:.2f} ms "
            f"| {1000 / r['cpu_ms_per_s']:.0f} | {r['cpu_ms_per_s'] / ours['cpu_ms_per_s']:.2f}× "
            f"| {r['rss_per_call_kb']:.0f} KB | {lag} | {r['pace']:.2f} |"
        )
    if results["lengths"]:
        lengths = list(next(iter(results["lengths"].values())))
        print("\nCPU per utterance against text length (8 kHz μ-law, one call, server at 20× real time)\n")
        print("| way | " + " | ".join(f"{n} chars" for n in lengths) + " |")
        print("|---|" + "---:|" * len(lengths))
        for way, res in results["lengths"].items():
            cells = [f"{res[n]['cpu_ms']:.1f} ms ({res[n]['audio_s']:.1f} s audio)" for n in lengths]
            print(f"| {WAYS[way]} | " + " | ".join(cells) + " |")
    for way, prof in results["profile"].items():
        total = sum(prof["stages"].values())
        plain = next(
            (
                r["cpu_ms_per_s"]
                for r in rows
                if r["way"] == way and r["format"] == "mulaw8k" and r["calls"] == args.profile_calls
            ),
            prof["cpu_ms_per_s"],
        )
        print(
            f"\nWhere the CPU goes: {WAYS[way]}, {args.profile_calls} calls, 8 kHz μ-law (cProfile's shares "
            f"applied to the unprofiled {plain:.2f} ms per s of audio)\n"
        )
        print("| stage | share | ms per s of audio |")
        print("|---|---:|---:|")
        for stage, secs in sorted(prof["stages"].items(), key=lambda kv: -kv[1]):
            share = secs / total
            print(f"| {stage} | {100 * share:.0f}% | {share * plain:.2f} |")
        print("\nTop functions by own time (profiled seconds, calls):")
        for name, secs, ncalls, stage in prof["top"][:15]:
            print(f"    {name:<50} {secs:7.3f} s {ncalls:>9}  {stage[:30]}")


if __name__ == "__main__":
    main()
