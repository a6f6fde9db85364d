"""Run the local server: in a background thread (tests, the demo) or in the foreground (``glmtts serve``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn

from ..engines.base import Engine
from ..errors import InvalidRequestError
from .app import create_app
from .cloud_api import CLOUD_PATH
from .faults import Faults
from .handler import ServerState
from .limits import ConnectionLimits
from .records import MAX_RECORD_BYTES, MAX_RECORDS, RequestRecord
from .responses import AbortConnection

__all__ = ["LocalServer", "ThreadedServer", "check_bind", "listening_socket", "serve"]

SHUTDOWN_TIMEOUT = 5.0
"""Seconds a background server's ``stop()`` lets running responses finish before cancelling them."""
_JOIN_TIMEOUT = 10.0  # seconds stop() waits for the server thread (the shutdown, then the app's lifespan)


class _DropInjectedAborts(logging.Filter):
    """Injected disconnects are intended, and so are responses cancelled at shutdown (uvicorn announces
    those in one line); keep their tracebacks out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, AbortConnection | asyncio.CancelledError)


logging.getLogger("uvicorn.error").addFilter(_DropInjectedAborts())


def check_bind(host: str, tokens: Collection[str] | None) -> None:
    """Refuse to expose an unauthenticated server beyond loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not tokens:
        raise ValueError(
            f"refusing to listen on {host} without a bearer token: pass --token (or GLMTTS_SERVER_TOKEN), "
            "or bind 127.0.0.1"
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections get ``TCP_NODELAY``.

    asyncio disables Nagle only on sockets whose ``proto`` is ``IPPROTO_TCP``, and a socket made as
    ``socket.socket(AF_INET)`` (as uvicorn's own binding does) has ``proto`` 0, as do the connections it
    accepts. Nagle then holds the first SSE event behind the unacknowledged response head until the
    client's delayed ACK, adding ~40 ms to the first audio of every request on a reused connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class ThreadedServer:
    """Any ASGI app on a free loopback port, in a thread with its own event loop (tests, examples).

    ``lifespan`` is uvicorn's setting ("off" for apps without startup/shutdown, "on" otherwise);
    ``limits`` bound idle, slow and surplus connections. ``stop()`` lets running responses finish for up
    to ``shutdown_timeout`` seconds, then cancels them (each streamed reply's record still ends).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "off",
        limits: ConnectionLimits | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        if (
            not isinstance(shutdown_timeout, int | float)
            or isinstance(shutdown_timeout, bool)
            or not 0 <= shutdown_timeout < _JOIN_TIMEOUT
        ):
            raise InvalidRequestError(
                f"shutdown_timeout must be a number of seconds from 0 to under {_JOIN_TIMEOUT:g};"
                f" got {shutdown_timeout!r}",
                field="shutdown_timeout",
            )
        self.app = app
        self._host, self._port, self._lifespan = host, port, lifespan
        self.limits = limits or ConnectionLimits()
        self.shutdown_timeout = shutdown_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def _uvicorn(self, **options: Any) -> tuple[uvicorn.Server, socket.socket]:
        """A uvicorn server for the app and its bound socket (an OSError, e.g. port in use, surfaces here)."""
        sock = listening_socket(self._host, self._port)
        self.port = sock.getsockname()[1]
        limits = self.limits.uvicorn_options()
        config = uvicorn.Config(
            self.app, host=self._host, port=self.port, lifespan=self._lifespan, **limits, **options
        )
        return uvicorn.Server(config), sock

    def run(self) -> None:
        """Serve in the foreground until interrupted, with uvicorn's info and access logs."""
        server, sock = self._uvicorn(log_level="info")
        server.run(sockets=[sock])

    def start(self) -> Self:
        """Serve in a background thread; returns once the server accepts connections."""
        server, sock = self._uvicorn(
            log_level="warning", access_log=False, timeout_graceful_shutdown=self.shutdown_timeout
        )
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name=f"glmtts-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=_JOIN_TIMEOUT)
            self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> bool:
        """Poll ``predicate`` until true or ``within`` seconds pass; returns its last value."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True


class LocalServer(ThreadedServer):
    """The cloud-compatible server on a free loopback port, in a thread with its own event loop.

    ``base_url`` is what a ``CloudEngine`` (or the official SDK) takes; ``records`` lists the requests
    the server saw and how they ended (the latest ``max_records``, holding at most ``max_record_bytes``
    of bodies), so tests can prove what happened on the wire. ``fault_header``: honour a request's
    ``X-GLMTTS-Fault`` header. ``limits`` bound idle, slow and surplus connections.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Collection[str] | None = None,
        faults: Faults | str | None = None,
        voices: Collection[str] | None = None,
        fault_header: bool = True,
        limits: ConnectionLimits | None = None,
        max_records: int = MAX_RECORDS,
        max_record_bytes: int = MAX_RECORD_BYTES,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    ) -> None:
        check_bind(host, tokens)
        if engine is None:
            from ..engines.offline import OfflineEngine

            engine = OfflineEngine()
        limits = limits or ConnectionLimits()
        app = create_app(
            engine,
            tokens=tokens,
            faults=faults,
            voices=voices,
            fault_header=fault_header,
            max_records=max_records,
            max_record_bytes=max_record_bytes,
            body_timeout=limits.body_timeout,
        )
        super().__init__(app, host=host, port=port, limits=limits, shutdown_timeout=shutdown_timeout)

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.glmtts
        return state

    @property
    def records(self) -> list[RequestRecord]:
        return self.state.records

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}{CLOUD_PATH.rsplit('/audio/', 1)[0]}"


def serve(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens: Collection[str] | None = None,
    faults: str | None = None,
    fault_header: bool = False,
    voices: Collection[str] | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve in the foreground until interrupted (``glmtts serve``); fault headers only when asked.

    Keeps no request records: nothing reads them in a foreground server, and a long-running one must not
    grow with its traffic.
    """
    options: dict[str, Any] = {"tokens": tokens, "faults": faults, "voices": voices, "limits": limits}
    LocalServer(engine, host=host, port=port, fault_header=fault_header, max_records=0, **options).run()
