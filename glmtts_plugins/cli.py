"""The ``glmtts`` command: ``say``, ``serve``, ``voices`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .audio import resample_buffer, write_wav
from .engines.base import BaseEngine
from .engines.cloud import KEY_ENV_VARS, CloudEngine
from .errors import GLMTTSError
from .voices import DEFAULT_VOICE, VOICES

__all__ = ["main"]

RATES = (8000, 16000, 24000, 48000)
OFFLINE_NOTE = "offline engine: an espeak-ng stand-in for development, not GLM-TTS"

# A short call-center exchange: what the demo's agent says.
DEMO_LINES = (
    "您好，这里是星河银行信用卡中心，我是智能客服小星。请问有什么可以帮您？",
    "好的，我已经帮您查询到了。您本期账单金额是3,268.50元，最后还款日是12月8日。",
    "您的工单号是GD20261123-0457，技术人员会在24小时内联系您。",
    "Thank you for calling. Is there anything else I can help you with today?",
)


@dataclass
class Timing:
    """How one utterance streamed: time to first audio, real-time factor, seconds of audio."""

    pcm: bytes
    first_audio_s: float
    wall_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else float("inf")


async def timed_stream(
    engine: BaseEngine, text: str, *, voice: str = DEFAULT_VOICE, speed: float = 1.0, volume: float = 1.0
) -> Timing:
    """Stream ``text`` and measure it the way a listener experiences it."""
    start = time.perf_counter()
    first = None
    pcm = bytearray()
    async for chunk in engine.stream(text, voice=voice, speed=speed, volume=volume):
        if first is None:
            first = time.perf_counter() - start
        pcm += chunk
    wall = time.perf_counter() - start
    return Timing(bytes(pcm), first or wall, wall, len(pcm) / 2 / engine.sample_rate)


def _has_key() -> bool:
    return any(os.environ.get(v) for v in KEY_ENV_VARS)


def _make_engine(name: str | None, base_url: str | None, voices: str | None = None) -> BaseEngine:
    if name == "vllm-omni":
        if not base_url or not voices:
            raise SystemExit(
                "glmtts: --engine vllm-omni needs --base-url (the vLLM-Omni server) and --voices"
            )
        from .engines.vllm_omni import VllmOmniEngine

        return VllmOmniEngine(base_url, voices=voices)
    if name is None:
        name = "cloud" if _has_key() or base_url else "offline"
        reason = "no key set" if name == "offline" else "a key is set" if _has_key() else "--base-url given"
        print(f"engine: {name} ({reason})", file=sys.stderr)
    if name == "cloud":
        if not _has_key():
            raise SystemExit(f"glmtts: the cloud engine needs an API key: set {' or '.join(KEY_ENV_VARS)}")
        return CloudEngine(base_url=base_url)
    from .engines.offline import OfflineEngine

    print(OFFLINE_NOTE, file=sys.stderr)
    return OfflineEngine()


async def _say(args: argparse.Namespace) -> None:
    text = sys.stdin.read() if args.text == "-" else args.text
    async with _make_engine(args.engine, args.base_url, args.voices) as engine:
        timing = await timed_stream(engine, text, voice=args.voice, speed=args.speed, volume=args.volume)
    pcm = resample_buffer(timing.pcm, engine.sample_rate, args.rate)
    try:
        write_wav(args.output, pcm, args.rate)
    except OSError as exc:
        raise SystemExit(f"glmtts: cannot write {args.output}: {exc.strerror or exc}") from None
    print(
        f"wrote {args.output} ({timing.audio_s:.2f} s at {args.rate} Hz); "
        f"time to first audio {timing.first_audio_s * 1000:.0f} ms; real-time factor {timing.rtf:.3f}"
    )


async def _demo(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if _has_key():
        engine, server, label = CloudEngine(), None, "GLM-TTS cloud API"
    else:
        from .engines.offline import OfflineEngine
        from .server import LocalServer

        token = secrets.token_urlsafe(16)
        server = LocalServer(OfflineEngine(), tokens=[token]).start()
        engine = CloudEngine(api_key=token, base_url=server.base_url)
        label = f"local server at {server.base_url} over the cloud protocol; {OFFLINE_NOTE}"
    print(f"engine: {label}\n")
    rows = []
    try:
        async with engine:
            await engine.prewarm()
            for i, line in enumerate(DEMO_LINES, 1):
                timing = await timed_stream(engine, line, voice=args.voice)
                for rate in (8000, 16000):
                    path = out / f"{i:02d}_agent_{rate // 1000}k.wav"
                    write_wav(path, resample_buffer(timing.pcm, engine.sample_rate, rate), rate)
                rows.append((i, timing, line))
    finally:
        if server is not None:
            server.stop()
    print(f"{'#':>2}  {'first audio':>11}  {'RTF':>6}  {'audio':>6}  text")
    for i, t, line in rows:
        short = line if len(line) <= 28 else line[:27] + "…"
        print(f"{i:>2}  {t.first_audio_s * 1000:>8.0f} ms  {t.rtf:>6.3f}  {t.audio_s:>5.2f}s  {short}")
    print(f"\nwrote {2 * len(rows)} WAV files (8 kHz and 16 kHz) to {out}/")


def _serve(args: argparse.Namespace) -> None:
    from .server import serve

    tokens = [args.token] if args.token else None
    voices = None
    if args.engine == "offline":
        from .engines.offline import OfflineEngine

        engine: BaseEngine = OfflineEngine()
        print(OFFLINE_NOTE, file=sys.stderr)
    elif args.engine == "vllm-omni":
        # gateway: the cloud's API, with named voices, in front of a vLLM-Omni server
        if not args.upstream or not args.voices:
            raise SystemExit("glmtts: --engine vllm-omni needs --upstream URL and --voices DIR_OR_FILE")
        from .engines.vllm_omni import VllmOmniEngine

        gateway = VllmOmniEngine(args.upstream, voices=args.voices)
        voices = sorted(gateway.voices or ())
        print(f"gateway to {gateway.base_url}, voices: {', '.join(voices)}", file=sys.stderr)
        engine = gateway
    else:
        engine = _make_engine("cloud", args.upstream)
    try:
        serve(
            engine,
            host=args.host,
            port=args.port,
            tokens=tokens,
            faults=args.fault,
            fault_header=args.fault_header,
            voices=voices,
        )
    except (ValueError, OSError) as exc:  # a refused bind address, a port in use
        raise SystemExit(f"glmtts: {exc}") from None


def _voices(args: argparse.Namespace) -> None:
    for voice in VOICES.values():
        print(f"{voice.id:<10} {voice.name:<8} {voice.description}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glmtts", description="GLM-TTS from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    say = sub.add_parser("say", help="synthesize text to a WAV file")
    say.add_argument("text", help="the text, or - to read standard input")
    say.add_argument("-o", "--output", default="out.wav")
    say.add_argument("--rate", type=int, choices=RATES, default=24000)
    say.add_argument("--voice", default=DEFAULT_VOICE)
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--volume", type=float, default=1.0)
    say.add_argument("--engine", choices=("offline", "cloud", "vllm-omni"))
    say.add_argument(
        "--base-url",
        help="cloud: a server speaking its protocol (default: the Zhipu cloud); vllm-omni: the server",
    )
    say.add_argument("--voices", help="with --engine vllm-omni: a folder (NAME.wav + NAME.txt) or TOML/JSON")

    serve = sub.add_parser("serve", help="serve the cloud's API locally")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--engine", choices=("offline", "cloud", "vllm-omni"), default="offline")
    serve.add_argument(
        "--upstream", help="with --engine cloud: the upstream base URL; with vllm-omni: the vLLM-Omni server"
    )
    serve.add_argument(
        "--voices", help="with --engine vllm-omni: a folder (NAME.wav + NAME.txt) or TOML/JSON"
    )
    serve.add_argument("--token", default=os.environ.get("GLMTTS_SERVER_TOKEN"), help="required bearer token")
    serve.add_argument("--fault", help="faults for every request, e.g. 'first_byte_ms=300;rtf=0.5'")
    serve.add_argument(
        "--fault-header", action="store_true", help="let clients inject faults with X-GLMTTS-Fault (testing)"
    )

    sub.add_parser("voices", help="list the voice ids")

    demo = sub.add_parser("demo", help="speak a call-center exchange and report latency")
    demo.add_argument("--out", default="out")
    demo.add_argument("--voice", default=DEFAULT_VOICE)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "say":
            asyncio.run(_say(args))
        elif args.command == "demo":
            asyncio.run(_demo(args))
        elif args.command == "serve":
            _serve(args)
        else:
            _voices(args)
    except GLMTTSError as exc:
        raise SystemExit(f"glmtts: {exc}") from None
    except OSError as exc:  # e.g. -o to a path that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        raise SystemExit(f"glmtts: {where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
