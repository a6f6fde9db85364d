"""An incremental Server-Sent-Events decoder that survives what real GLM-TTS streams do.

Feed it network reads of any size; it returns the ``data`` payload of each completed event. It accepts
LF, CRLF and lone CR line ends (also when a CRLF is split across reads), comment and keep-alive lines,
multi-line data, and a last event with no trailing newline (call :meth:`SSEDecoder.close`). Lines may be
arbitrarily long: a read is scanned once, never re-scanned, so a 1 MB line costs linear time;
:attr:`SSEDecoder.pending` (bytes held for an unfinished line or event) lets the caller bound them.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Turn a byte stream into SSE ``data`` payloads (bytes, one per event)."""

    __slots__ = ("_buf", "_data", "_data_len", "_skip_lf")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        self._data_len = 0
        self._skip_lf = False

    @property
    def pending(self) -> int:
        """Bytes held for the line and event not finished yet."""
        return len(self._buf) + self._data_len

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume one read; return the payloads of the events it completed."""
        # The common read: exactly one whole event, one ``data: `` line (GLM-TTS sends one event per
        # write). Same result as the general path, without splitting lines.
        if (
            chunk[-2:] == b"\n\n"
            and chunk[:6] == b"data: "
            and not (self._buf or self._data or self._skip_lf)
            and chunk.count(b"\n") == 2
            and b"\r" not in chunk
        ):
            return [chunk[6:-2]]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return []
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if end < 0:
            self._buf += chunk
            return []
        if self._buf:
            self._buf += chunk
            end += len(self._buf) - len(chunk)
            complete = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
        else:
            complete = chunk[: end + 1]
            self._buf += chunk[end + 1 :]
        # A CR that ends the read may be the first half of a CRLF.
        self._skip_lf = chunk.endswith(b"\r")
        events: list[bytes] = []
        for line in complete.splitlines():
            self._line(line, events)
        return events

    def close(self) -> list[bytes]:
        """End of stream: return the last event even if it had no trailing newline."""
        events: list[bytes] = []
        if self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line, events)
        self._dispatch(events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            self._dispatch(events)
        elif line.startswith(b"data"):
            if len(line) == 4:
                self._data.append(b"")
            elif line[4:5] == b":":
                value = line[5:]
                self._data.append(value[1:] if value[:1] == b" " else value)
                self._data_len += len(value)
        # Comments (":"), "event", "id", "retry" and unknown fields carry nothing we use.

    def _dispatch(self, events: list[bytes]) -> None:
        if self._data:
            events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
            self._data = []
            self._data_len = 0
