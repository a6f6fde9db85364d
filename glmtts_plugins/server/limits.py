"""Connection limits: what the server holds for clients that connect and send nothing useful.

uvicorn's h11 protocol closes a keep-alive connection only after a response, and any byte cancels that
timer; a connection that never sends a whole request head is held forever, and it accepts any number of
connections. :class:`ConnectionLimits` adds a deadline for each request head (from the connection, or from
the previous response) and a cap on open connections, as a small subclass of uvicorn's protocol.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from .handler import BODY_TIMEOUT

__all__ = ["ConnectionLimits"]

_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on idle, slow and surplus connections (the defaults are those of ``glmtts serve``).

    ``header_timeout``: a request head must arrive in full within this many seconds of the connection
    opening or of the previous response ending, else the connection is closed (idle keep-alive
    connections, slow-loris clients, and a client still sending the body of a refused request alike).
    ``body_timeout``: seconds for the body to follow (a 408 after that). ``max_connections``: connections
    beyond this are answered 503 and closed at once.
    ``max_header_bytes``: how much of an unfinished request head is buffered (more is a 400; h11's bound
    on an incomplete event).
    """

    header_timeout: float = 5.0
    body_timeout: float = BODY_TIMEOUT
    max_connections: int = 512
    max_header_bytes: int = 16 * 1024

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config`` that enforce these limits."""
        protocol = type("LimitedH11Protocol", (_LimitedH11Protocol,), {"limits": self})
        return {
            "http": protocol,
            "timeout_keep_alive": self.header_timeout,
            "h11_max_incomplete_event_size": self.max_header_bytes,
        }


class _LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(_REFUSED)
            transport.close()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.get_protocol() is not self or self._in_request():  # upgraded, or a head arrived
            self._cancel_head_deadline()
        elif self._head_deadline is None:  # a new head is awaited (the last body just ended)
            self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():  # not a pipelined request
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self) -> None:
        """(Re)start the deadline for the next request head; more bytes of it do not extend it."""
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
