"""xiaozhi-esp32 speakers on Pipecat: the device's WebSocket protocol, Opus both ways, paced replies.

The pipeline has the same shape as a Twilio bot: ``FastAPIWebsocketTransport`` with
:class:`XiaozhiFrameSerializer`, then turns, STT, LLM, ``GLMHttpTTSService``::

    session = await accept_device(websocket, token=TOKEN)       # headers, token, hello (None: refused)
    transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, serializer=XiaozhiFrameSerializer(session)))
    Pipeline([transport.input(), XiaozhiTurns(session, vad_analyzer=...), stt, user, llm, tts,
              XiaozhiSpeaker(session), transport.output(), assistant])

Where the work happens, and why:

* :class:`XiaozhiFrameSerializer` is the wire format only: binary protocol versions 1/2/3, device Opus
  decoded to the pipeline's input rate, device JSON turned into ``XiaozhiMessageFrame``s, and
  whatever :class:`XiaozhiSpeaker` sends turned into text or binary frames. Malformed input is logged
  and ignored (oversized frames close the connection with 1009, more than 100 malformed messages with
  1008).
* :class:`XiaozhiTurns` (right after the transport input) turns ``listen``/``abort`` into Pipecat's
  frames: ``manual`` turns start and end with ``listen start``/``stop``; in ``auto``/``realtime`` its VAD
  decides; ``abort`` broadcasts an interruption at once.
* :class:`XiaozhiSpeaker` (right after the TTS) owns the device's audio. Pipecat's websocket output
  transport paces audio itself at exactly real time with no pre-buffer (any network jitter is then an
  audible gap) and only hands audio frames and messages to a serializer, never ``TTSStartedFrame`` or
  the sentence texts. So the speaker encodes each reply with its own core ``OpusEncoder`` (a fresh one
  per reply, each sentence's last frame padded to a whole frame), paces it with the core's
  :func:`~glmtts_plugins.pace` (``prebuffer_ms``, 300 by default) and sends ``tts start``,
  ``sentence_start`` (before each sentence's first packet, with the text of the ``AggregatedTextFrame``
  the service announces it with: each core piece of a streamed turn, or each of Pipecat's sentences in
  ``SENTENCE`` mode), the packets and ``tts stop`` in order as
  urgent transport messages. The PCM still flows on to the output transport, whose serializer drops it,
  so Pipecat's bot-speaking events keep their real-time meaning. On an interruption it cancels the
  sender (nothing more of that reply is sent), sends ``tts stop`` and ignores late audio of that reply;
  the TTS service closes the request itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.audio.vad.vad_controller import VADController
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from glmtts_plugins import InvalidRequestError, SpeechFrame, pace
from glmtts_plugins.audio import Framer, OpusDecoder, OpusEncoder, StreamResampler

if TYPE_CHECKING:  # FastAPI/Starlette come with pipecat-ai[websocket]; not needed to import this module
    from starlette.websockets import WebSocket

__all__ = [
    "DEVICE_FRAME_MS",
    "HELLO_TIMEOUT_S",
    "OUTPUT_RATES",
    "XiaozhiFrameSerializer",
    "XiaozhiMessageFrame",
    "XiaozhiPacket",
    "XiaozhiSession",
    "XiaozhiSpeaker",
    "XiaozhiTurns",
    "accept_device",
    "pack",
    "unpack",
]

HELLO_TIMEOUT_S = 10.0
"""The firmware gives up on a server that does not answer its hello within 10 s."""
OUTPUT_RATES = (16000, 24000)
"""Rates the server may announce for its Opus (the reference server sends 24000)."""
DEVICE_FRAME_MS = (20, 40, 60)
MAX_TEXT_BYTES = 64 * 1024  # of a text frame as it came on the wire: UTF-8 bytes, not characters
MAX_BINARY_BYTES = 8 * 1024  # an Opus packet of 120 ms at 510 kbit/s is 7.7 kB
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
MAX_MALFORMED = 100  # a device that sends more malformed messages than this is disconnected
_LISTEN_MODES = ("manual", "auto", "realtime")
_V2 = struct.Struct(">HHIII")  # version, type (0 opus, 1 json), reserved, timestamp_ms, payload_size
_V3 = struct.Struct(">BBH")  # type, reserved, payload_size


@dataclass
class XiaozhiSession:
    """One device connection after the hello: what both sides agreed on, and the listening state."""

    websocket: WebSocket
    session_id: str
    protocol_version: int
    """Binary framing: 1 bare Opus, 2 a 16-byte header, 3 a 4-byte header."""
    device_id: str | None
    client_id: str | None
    device_sample_rate: int
    """Rate of the Opus the device sends."""
    sample_rate: int
    """Rate of the Opus the server sends (announced in the server hello)."""
    frame_ms: int
    features: dict[str, Any] = field(default_factory=dict)
    listen_mode: str | None = None
    """``manual``, ``auto`` or ``realtime`` from the last ``listen start``."""
    listening: bool = False
    malformed: int = 0
    """Malformed messages received (logged and ignored)."""
    abort_requested: bool = False
    """Set by :class:`XiaozhiTurns` on ``abort``: the speaker answers it with ``tts stop`` in any case."""

    def server_hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "transport": "websocket",
            "session_id": self.session_id,
            "audio_params": {
                "format": "opus",
                "sample_rate": self.sample_rate,
                "channels": 1,
                "frame_duration": self.frame_ms,
            },
        }


@dataclass(frozen=True, slots=True)
class XiaozhiPacket:
    """An Opus packet for the device; ``timestamp_ms`` goes into the version-2 header."""

    opus: bytes
    timestamp_ms: int = 0

    def __repr__(self) -> str:
        return f"XiaozhiPacket({len(self.opus)} bytes, t={self.timestamp_ms} ms)"


@dataclass
class XiaozhiMessageFrame(SystemFrame):
    """A JSON message from the device (``listen``, ``abort``, ``mcp``, ``goodbye``), pushed downstream.

    Its own frame type (not ``InputTransportMessageFrame``, which Pipecat also broadcasts upstream to its
    RTVI processor) and a system frame, so an ``abort`` is never queued behind data frames.
    """

    message: dict[str, Any]


class _BadFrame(ValueError):
    pass


def pack(payload: bytes, version: int, *, kind: int = 0, timestamp_ms: int = 0) -> bytes:
    """Frame ``payload`` (``kind`` 0: Opus, 1: JSON) for binary protocol ``version``."""
    if version == 1:
        return payload
    if version == 2:
        return _V2.pack(2, kind, 0, timestamp_ms & 0xFFFFFFFF, len(payload)) + payload
    if version == 3:
        return _V3.pack(kind, 0, len(payload)) + payload
    raise ValueError(f"protocol version must be 1, 2 or 3; got {version!r}")


def unpack(data: bytes, version: int) -> tuple[int, bytes]:
    """``(kind, payload)`` of a binary frame; raises ``ValueError`` for a header that does not fit."""
    if version == 1:
        return 0, data
    if version == 2:
        if len(data) < _V2.size:
            raise _BadFrame(f"{len(data)} bytes is shorter than the 16-byte version-2 header")
        ver, kind, _, _, size = _V2.unpack_from(data)
        if ver != 2:
            raise _BadFrame(f"version-2 header says version {ver}")
        payload = data[_V2.size :]
    elif version == 3:
        if len(data) < _V3.size:
            raise _BadFrame(f"{len(data)} bytes is shorter than the 4-byte version-3 header")
        kind, _, size = _V3.unpack_from(data)
        payload = data[_V3.size :]
    else:
        raise ValueError(f"protocol version must be 1, 2 or 3; got {version!r}")
    if size != len(payload):
        raise _BadFrame(f"header says {size} payload bytes, frame has {len(payload)}")
    if kind not in (0, 1):
        raise _BadFrame(f"unknown payload type {kind}")
    return kind, payload


def _version(value: object) -> int | None:
    try:
        version = int(value)  # type: ignore[call-overload]  # any header or JSON value: int() decides
    except (TypeError, ValueError):
        return None
    return version if version in (1, 2, 3) else None


def _token_ok(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())


async def accept_device(
    websocket: WebSocket,
    *,
    token: str | None = None,
    sample_rate: int = 24000,
    hello_timeout: float = HELLO_TIMEOUT_S,
) -> XiaozhiSession | None:
    """Check a device's headers, accept it and run the hello exchange; ``None`` if it was refused.

    With ``token`` set, a device without ``Authorization: Bearer <token>`` is refused before the
    WebSocket opens (HTTP 403), as is an unknown ``Protocol-Version``. The server hello announces
    ``sample_rate`` (16000 or 24000) and the device's own ``frame_duration`` (20/40/60 ms, else 60).
    Messages before the hello are ignored; no hello within ``hello_timeout`` closes with 1002.
    """
    if type(sample_rate) is not int or sample_rate not in OUTPUT_RATES:
        raise InvalidRequestError(
            f"sample_rate must be one of {', '.join(map(str, OUTPUT_RATES))}; got {sample_rate!r}",
            field="sample_rate",
        )
    if (
        not isinstance(hello_timeout, int | float)
        or isinstance(hello_timeout, bool)
        or not 0 < hello_timeout < float("inf")
    ):
        raise InvalidRequestError(
            f"hello_timeout must be a number of seconds > 0; got {hello_timeout!r}", field="hello_timeout"
        )
    headers = websocket.headers
    device_id, client_id = headers.get("device-id"), headers.get("client-id")
    if token is not None and not _token_ok(headers.get("authorization"), token):
        logger.warning(f"xiaozhi: refused device {device_id!r}: missing or wrong token")
        await websocket.close(code=1008)
        return None
    header_version = headers.get("protocol-version")
    if header_version is not None and _version(header_version) is None:
        logger.warning(f"xiaozhi: refused device {device_id!r}: Protocol-Version {header_version[:20]!r}")
        await websocket.close(code=CLOSE_PROTOCOL_ERROR)
        return None
    await websocket.accept()
    hello = await _read_hello(websocket, hello_timeout, device_id)
    if hello is None:
        return None
    params = hello.get("audio_params")
    if not isinstance(params, dict):
        params = {}
    if params.get("format", "opus") != "opus":
        logger.warning(f"xiaozhi: device {device_id!r} sends {params.get('format')!r}, not opus")
        await _close(websocket, CLOSE_UNSUPPORTED)
        return None
    device_rate = params.get("sample_rate")
    frame_ms = params.get("frame_duration")
    session = XiaozhiSession(
        websocket=websocket,
        session_id=str(uuid.uuid4()),
        protocol_version=_version(header_version) or _version(hello.get("version")) or 1,
        device_id=device_id,
        client_id=client_id,
        device_sample_rate=device_rate
        if type(device_rate) is int and device_rate in (8000, 12000, 16000, 24000, 48000)
        else 16000,
        sample_rate=sample_rate,
        frame_ms=frame_ms if type(frame_ms) is int and frame_ms in DEVICE_FRAME_MS else 60,
        features=features if isinstance(features := hello.get("features"), dict) else {},
    )
    await websocket.send_text(json.dumps(session.server_hello()))
    logger.info(
        f"xiaozhi: device {device_id!r} session {session.session_id} protocol v{session.protocol_version}"
        f" in {session.device_sample_rate} Hz, out {session.sample_rate} Hz / {session.frame_ms} ms"
    )
    return session


async def _read_hello(websocket: WebSocket, within: float, device_id: str | None) -> dict[str, Any] | None:
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(websocket.receive(), remaining)
        except TimeoutError:
            logger.warning(f"xiaozhi: device {device_id!r} sent no hello within {within:g} s")
            await _close(websocket, CLOSE_PROTOCOL_ERROR)
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            logger.warning(f"xiaozhi: device {device_id!r} sent binary data before its hello; ignored")
            continue
        if _utf8_size(text) > MAX_TEXT_BYTES:
            await _close(websocket, CLOSE_TOO_BIG)
            return None
        try:
            hello = json.loads(text)
        except ValueError:
            hello = None
        if isinstance(hello, dict) and hello.get("type") == "hello":
            return hello
        logger.warning(f"xiaozhi: device {device_id!r} sent {text[:80]!r} before its hello; ignored")


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8, as the device sent it (a Chinese character is 3 bytes, not 1).

    A text of more characters than ``MAX_TEXT_BYTES`` is too big whatever its bytes: its length is
    returned without encoding it (a lower bound).
    """
    if len(text) > MAX_TEXT_BYTES:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


async def _close(websocket: WebSocket, code: int) -> None:
    if getattr(websocket.application_state, "name", None) == "CONNECTED":
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code=code)


class XiaozhiFrameSerializer(FrameSerializer):
    """The xiaozhi-esp32 wire format for ``FastAPIWebsocketTransport`` (see the module docstring).

    Device → pipeline: Opus packets → ``InputAudioRawFrame`` at the pipeline's input rate; ``listen``
    and ``abort`` (and ``mcp``/``goodbye``, unused here) → :class:`XiaozhiMessageFrame`.
    Pipeline → device: transport messages carrying a dict (JSON text) or an :class:`XiaozhiPacket`
    (a binary frame in the session's protocol version). PCM audio frames are not sent: the device's
    audio comes from :class:`XiaozhiSpeaker`.
    """

    def __init__(self, session: XiaozhiSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self._decoder: OpusDecoder | None = None
        self._resampler: StreamResampler | None = None
        self._in_rate = 16000

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # as Pipecat's own
        await super().setup(setup)
        self._in_rate = setup.audio_in_sample_rate
        rate = self.session.device_sample_rate
        self._decoder = OpusDecoder(rate)
        self._resampler = StreamResampler(rate, self._in_rate)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            message = frame.message
            if isinstance(message, XiaozhiPacket):
                return pack(message.opus, self.session.protocol_version, timestamp_ms=message.timestamp_ms)
            if isinstance(message, dict) and not self.should_ignore_frame(frame):
                return json.dumps(message, ensure_ascii=False)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes | bytearray):
            frame = await self._binary(bytes(data))
        elif (size := _utf8_size(data)) > MAX_TEXT_BYTES:
            await self._too_big(size)
            frame = None
        else:
            frame = self._text(data)
        if self.session.malformed > MAX_MALFORMED:
            logger.warning(f"xiaozhi: device {self.session.device_id!r}: too much malformed input; closing")
            await _close(self.session.websocket, CLOSE_POLICY)
        return frame

    async def _binary(self, data: bytes) -> Frame | None:
        if len(data) > MAX_BINARY_BYTES:
            await self._too_big(len(data))
            return None
        try:
            kind, payload = unpack(data, self.session.protocol_version)
        except _BadFrame as exc:
            self._malformed(f"binary frame: {exc}")
            return None
        if kind == 1:
            return self._text(payload.decode("utf-8", "replace"))
        decoder, resampler = self._decoder, self._resampler
        if decoder is None or resampler is None:
            decoder, resampler = self._setup_default()
        try:
            pcm = decoder.decode(payload)
        except ValueError as exc:
            self._malformed(str(exc))
            return None
        audio = resampler.process(pcm)
        if not audio:
            return None
        return InputAudioRawFrame(audio=audio, sample_rate=self._in_rate, num_channels=1)

    def _setup_default(self) -> tuple[OpusDecoder, StreamResampler]:
        """Decoder set-up when the transport did not call :meth:`setup` (16 kHz input)."""
        self._decoder = OpusDecoder(self.session.device_sample_rate)
        self._resampler = StreamResampler(self.session.device_sample_rate, self._in_rate)
        return self._decoder, self._resampler

    def _text(self, text: str) -> Frame | None:
        try:
            message = json.loads(text)
        except ValueError:
            self._malformed(f"not JSON: {text[:80]!r}")
            return None
        if not isinstance(message, dict):
            self._malformed(f"not a JSON object: {text[:80]!r}")
            return None
        kind = message.get("type")
        if kind == "listen":
            state, mode = message.get("state"), message.get("mode")
            if state not in ("start", "stop", "detect") or (state == "start" and mode not in _LISTEN_MODES):
                self._malformed(f"listen with state={state!r} mode={mode!r}")
                return None
            if state == "start":
                self.session.listen_mode, self.session.listening = mode, True
            elif state == "stop":
                self.session.listening = False
            return XiaozhiMessageFrame(message=message)
        if kind in ("abort", "mcp", "goodbye"):
            return XiaozhiMessageFrame(message=message)
        if kind == "hello":
            logger.debug("xiaozhi: repeated hello ignored")
            return None
        self._malformed(f"unknown message type {str(kind)[:40]!r}")
        return None

    def _malformed(self, what: str) -> None:
        self.session.malformed += 1
        logger.warning(f"xiaozhi: device {self.session.device_id!r}: ignored malformed input ({what})")
        return None

    async def _too_big(self, size: int) -> None:
        logger.warning(f"xiaozhi: device {self.session.device_id!r} sent {size} bytes in one frame; closing")
        await _close(self.session.websocket, CLOSE_TOO_BIG)
        return None


def _is_device_message(frame: Frame) -> TypeGuard[XiaozhiMessageFrame]:
    return isinstance(frame, XiaozhiMessageFrame)


class XiaozhiTurns(FrameProcessor):
    """The device's turns as Pipecat frames; put it right after ``transport.input()``.

    ``manual``: ``listen start`` → ``VADUserStartedSpeakingFrame``, ``listen stop`` →
    ``VADUserStoppedSpeakingFrame``. ``auto``/``realtime``: ``vad_analyzer`` (at the pipeline's input rate)
    decides, as a ``VADProcessor`` would; a ``listen stop`` ends a turn the VAD had started. ``abort``
    (with or without ``reason``) → an interruption, at once.
    """

    def __init__(self, session: XiaozhiSession, *, vad_analyzer: VADAnalyzer | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.session = session
        self._speaking = False  # a user turn is open (from either source)
        self._vad: VADController | None = None
        if vad_analyzer is not None:
            self._vad = VADController(vad_analyzer)
            self._vad.add_event_handler("on_speech_started", self._vad_started)
            self._vad.add_event_handler("on_speech_stopped", self._vad_stopped)
            self._vad.add_event_handler("on_speech_activity", self._vad_activity)
            self._vad.add_event_handler("on_push_frame", self._vad_push)
            self._vad.add_event_handler("on_broadcast_frame", self._vad_broadcast)

    @property
    def _server_vad(self) -> bool:
        return self.session.listen_mode in ("auto", "realtime")

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # as Pipecat's own
        await super().setup(setup)
        if self._vad is not None:
            await self._vad.setup(setup)

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._vad is not None:
            await self._vad.cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if self._vad is not None:
            if isinstance(frame, StartFrame):
                await self._vad.start()
            elif isinstance(frame, EndFrame | CancelFrame):
                await self._vad.stop()
            elif isinstance(frame, InputAudioRawFrame) and self._server_vad:
                await self._vad.process_frame(frame)
        if direction is FrameDirection.DOWNSTREAM and _is_device_message(frame):
            await self._device_message(frame.message)

    async def _device_message(self, message: dict[str, Any]) -> None:
        kind, state = message.get("type"), message.get("state")
        if kind == "abort":
            logger.debug(f"xiaozhi: abort ({message.get('reason', 'no reason')})")
            self.session.abort_requested = True
            await self.broadcast_interruption()
        elif kind == "listen" and state == "start" and message.get("mode") == "manual":
            await self._start_turn(0.0)
        elif kind == "listen" and state == "stop" and self._speaking:
            await self._stop_turn(0.0)

    async def _start_turn(self, start_secs: float) -> None:
        if not self._speaking:
            self._speaking = True
            await self.broadcast_frame(VADUserStartedSpeakingFrame, start_secs=start_secs)

    async def _stop_turn(self, stop_secs: float) -> None:
        if self._speaking:
            self._speaking = False
            await self.broadcast_frame(VADUserStoppedSpeakingFrame, stop_secs=stop_secs)

    async def _vad_started(self, controller: VADController) -> None:
        if self._server_vad:
            await self._start_turn(controller._vad_analyzer.params.start_secs)

    async def _vad_stopped(self, controller: VADController) -> None:
        if self._server_vad:
            await self._stop_turn(controller._vad_analyzer.params.stop_secs)

    async def _vad_activity(self, _controller: VADController) -> None:
        if self._server_vad and self._speaking:
            await self.broadcast_frame(UserSpeakingFrame)

    async def _vad_push(self, _controller: VADController, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)

    async def _vad_broadcast(self, _controller: VADController, frame_cls: type[Frame], **kwargs: Any) -> None:
        await self.broadcast_frame(frame_cls, **kwargs)


class _Reply:
    """One TTS context on its way to the device: framed, Opus-encoded, queued for the sender."""

    def __init__(self, context_id: str | None, session: XiaozhiSession) -> None:
        self.context_id = context_id
        rate, frame_ms = session.sample_rate, session.frame_ms
        self.encoder = OpusEncoder(rate, frame_ms)  # fresh per reply: no state from the last one
        self.framer = Framer(rate, frame_ms, pad_last=True)
        self.resampler: StreamResampler | None = None
        self.queue: asyncio.Queue[SpeechFrame | None] = asyncio.Queue()  # None: the end
        self.segment = -1
        self.text = ""
        self.samples = 0
        self.rate = rate

    def sentence(self, text: str) -> None:
        self.end_piece()
        self.segment += 1
        self.text = text

    def audio(self, pcm: bytes, sample_rate: int) -> None:
        if sample_rate != self.rate:
            if self.resampler is None or self.resampler.in_rate != sample_rate:
                self.resampler = StreamResampler(sample_rate, self.rate)
            pcm = self.resampler.process(pcm)
        if self.segment < 0:
            self.segment = 0
        self._put(self.framer.push(pcm))

    def end_piece(self) -> None:
        """A sentence ended: its tail (resampler and a padded last frame) goes out now."""
        if self.resampler is not None:
            self._put(self.framer.push(self.resampler.flush()))
        self._put(self.framer.flush())

    def finish(self) -> None:
        self.end_piece()
        self.queue.put_nowait(None)

    def _put(self, frames: list[bytes]) -> None:
        for pcm in frames:
            n = len(pcm) // 2
            start_ms = 1000 * self.samples / self.rate
            frame = SpeechFrame(
                self.encoder.encode(pcm), self.rate, "opus", max(self.segment, 0), self.text, start_ms,
                1000 * n / self.rate,
            )  # fmt: skip
            self.samples += n
            self.queue.put_nowait(frame)

    async def frames(self) -> AsyncIterator[SpeechFrame]:
        while (item := await self.queue.get()) is not None:
            yield item


class XiaozhiSpeaker(FrameProcessor):
    """Sends the TTS's replies to the device; put it right after the TTS (see the module docstring).

    Each reply: ``tts start`` before its first packet, ``sentence_start`` with the sentence's text before
    each sentence's first packet, Opus packets of the session's ``frame_ms`` paced by
    :func:`~glmtts_plugins.pace` with ``prebuffer_ms``, and ``tts stop`` once the device has played the
    last packet. An interruption stops the reply at once and sends ``tts stop``. ``send_stt(text)``
    shows what was heard (``TranscriptionFrame``s that reach this processor are sent too).
    """

    def __init__(self, session: XiaozhiSession, *, prebuffer_ms: float = 300, **kwargs: Any) -> None:
        if (
            not isinstance(prebuffer_ms, int | float)
            or isinstance(prebuffer_ms, bool)
            or not 0 <= prebuffer_ms < float("inf")
        ):
            raise InvalidRequestError(
                f"prebuffer_ms must be a number of milliseconds >= 0; got {prebuffer_ms!r}",
                field="prebuffer_ms",
            )
        # the session's numbers set up each reply's encoder: refuse them here, not in the first reply
        if type(session.sample_rate) is not int or session.sample_rate not in OUTPUT_RATES:
            raise InvalidRequestError(
                f"session sample_rate must be one of {', '.join(map(str, OUTPUT_RATES))};"
                f" got {session.sample_rate!r}",
                field="sample_rate",
            )
        if type(session.frame_ms) is not int or session.frame_ms not in DEVICE_FRAME_MS:
            raise InvalidRequestError(
                f"session frame_ms must be one of {', '.join(map(str, DEVICE_FRAME_MS))};"
                f" got {session.frame_ms!r}",
                field="frame_ms",
            )
        super().__init__(**kwargs)
        self.session = session
        self.prebuffer_ms = prebuffer_ms
        self._reply: _Reply | None = None  # the reply the TTS is producing
        self._replies: asyncio.Queue[_Reply] = asyncio.Queue()  # replies waiting for / being sent
        self._sender: asyncio.Task[None] | None = None
        self._sending: _Reply | None = None  # the reply the sender is on
        # contexts interrupted since the last new context began: their late frames are ignored (see _begin)
        self._dropped: set[str] = set()
        self._device_speaking = False  # tts start sent, tts stop not yet
        self.replies_sent = 0
        """Replies sent to the end (tts stop after the last packet)."""

    async def send(self, message: dict[str, Any] | XiaozhiPacket) -> None:
        """Send a JSON message (a dict) or an Opus packet to the device now."""
        await self.push_frame(OutputTransportMessageUrgentFrame(message=message))

    async def send_stt(self, text: str) -> None:
        """Show the device what was heard: ``{"type": "stt", "text": text}``."""
        await self.send({"type": "stt", "text": text})

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_sender()
            return
        if isinstance(frame, InterruptionFrame):
            await self._interrupt()
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop_sender()
        elif direction is FrameDirection.DOWNSTREAM:
            await self._downstream(frame)
        await self.push_frame(frame, direction)

    async def _downstream(self, frame: Frame) -> None:
        context_id = getattr(frame, "context_id", None)
        if context_id is not None and context_id in self._dropped:
            return
        if isinstance(frame, TTSStartedFrame):
            self._begin(context_id)
        elif (
            isinstance(frame, AggregatedTextFrame)
            and frame.will_be_spoken
            and not isinstance(frame, TTSTextFrame)
        ):  # a sentence/piece announced before its audio; a TTSTextFrame comes after it
            reply = self._begin(context_id)
            reply.sentence(frame.text)
        elif isinstance(frame, TTSAudioRawFrame):
            if self._reply is not None and frame.audio:
                self._reply.audio(frame.audio, frame.sample_rate)
        elif isinstance(frame, TTSStoppedFrame):
            if self._reply is not None:
                self._reply.finish()
                self._reply = None
        elif isinstance(frame, TranscriptionFrame):
            await self.send_stt(frame.text)

    def _begin(self, context_id: str | None) -> _Reply:
        if self._reply is not None and self._reply.context_id == context_id:
            return self._reply
        if self._reply is not None:  # a new context without the old one's stop: end the old one
            self._reply.finish()
        # The TTS pushes its frames in order and ends an interrupted context before it starts another, so
        # no frame of a context interrupted before this one's first frame can come after it: forget them
        # (the set stays as small as one interruption's replies instead of growing with every one).
        self._dropped.clear()
        self._reply = _Reply(context_id, self.session)
        self._replies.put_nowait(self._reply)
        return self._reply

    async def _interrupt(self) -> None:
        """Stop sending now, tell the device, forget everything queued for it."""
        await self._stop_sender()
        pending = [r for r in (self._reply, self._sending, *self._drain()) if r is not None]
        for reply in pending:
            if reply.context_id is not None:
                self._dropped.add(reply.context_id)
        self._reply = self._sending = None
        abort, self.session.abort_requested = self.session.abort_requested, False
        if self._device_speaking or pending or abort:
            self._device_speaking = False
            await self.send({"type": "tts", "state": "stop"})
        self._start_sender()

    def _drain(self) -> list[_Reply]:
        replies = []
        while not self._replies.empty():
            replies.append(self._replies.get_nowait())
        return replies

    def _start_sender(self) -> None:
        if self._sender is None:
            self._sender = self.create_task(self._send_replies(), name="xiaozhi-sender")

    async def _stop_sender(self) -> None:
        if self._sender is not None:
            task, self._sender = self._sender, None
            await self.cancel_task(task)

    async def _send_replies(self) -> None:
        while True:
            self._sending = await self._replies.get()
            await self._send_reply(self._sending)
            self._sending = None

    async def _send_reply(self, reply: _Reply) -> None:
        segment = -1
        playing_until = 0.0
        async with contextlib.aclosing(pace(reply.frames(), prebuffer_ms=self.prebuffer_ms)) as paced:
            async for frame in paced:
                if not self._device_speaking:
                    self._device_speaking = True
                    await self.send({"type": "tts", "state": "start"})
                if frame.segment_index != segment:
                    segment = frame.segment_index
                    if frame.segment_text:
                        await self.send(
                            {"type": "tts", "state": "sentence_start", "text": frame.segment_text}
                        )
                await self.send(XiaozhiPacket(frame.audio, round(frame.start_ms)))
                playing_until = max(playing_until, time.monotonic()) + frame.duration_ms / 1000
        if self._device_speaking:
            await asyncio.sleep(max(0.0, playing_until - time.monotonic()))  # let the device play it out
            self._device_speaking = False
            await self.send({"type": "tts", "state": "stop"})
            self.replies_sent += 1
