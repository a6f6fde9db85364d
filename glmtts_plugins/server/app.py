"""The local server's ASGI app: the cloud's ``POST /api/paas/v4/audio/speech``, from any engine.

It also answers vLLM-Omni's OpenAI-compatible ``POST /v1/audio/speech`` (``ref_audio`` + ``ref_text``,
raw PCM streaming), so a client for a self-hosted GLM-TTS can be tested offline. Each API is a small
:class:`~.handler.SpeechAPI` (``cloud_api``, ``vllm_api``) over the one shared request handler
(``handler``); the streaming replies are in ``responses``, the request records in ``records``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engines.base import Engine
from ..voices import VOICES
from .cloud_api import CloudAPI
from .faults import Faults
from .handler import BODY_TIMEOUT, ServerState, handle
from .records import MAX_RECORD_BYTES, MAX_RECORDS, RequestLog
from .vllm_api import VllmAPI

__all__ = ["create_app"]


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class _SeenMiddleware:
    """Notes each HTTP request's method, path and client port (bounded), so tests can tell a reused
    connection from a new one."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app, self.log = app, log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client") or ("", 0)
            self.log.saw(scope["method"], scope["path"], client[1])
        await self.app(scope, receive, send)


def create_app(
    engine: Engine,
    *,
    tokens: Collection[str] | None = None,
    faults: Faults | str | None = None,
    voices: Collection[str] | None = None,
    fault_header: bool = True,
    max_records: int = MAX_RECORDS,
    max_record_bytes: int = MAX_RECORD_BYTES,
    body_timeout: float = BODY_TIMEOUT,
) -> Starlette:
    """Build the ASGI app serving ``engine`` with the cloud's protocol and vLLM-Omni's ``/v1/audio/speech``.

    ``tokens``: accepted bearer tokens (None accepts any non-empty key on the cloud path, like a dev
    server, and no key at all on the vLLM path, like ``vllm serve`` without ``--api-key``).
    ``faults``: faults applied to every request; with ``fault_header`` a request's ``X-GLMTTS-Fault``
    header adds to them (tests want that; a shared server should not let clients stall it).
    ``max_records`` / ``max_record_bytes``: how many request records are kept, and how many bytes of
    bodies they may hold (0 records: keep none). ``body_timeout``: seconds for a body to arrive in full.
    """
    routes = [
        Route(api.path, functools.partial(handle, api), methods=["POST"]) for api in (CloudAPI(), VllmAPI())
    ]
    app = Starlette(routes=[*routes, Route("/health", _health, methods=["GET"])])
    log = RequestLog(max_records=max_records, max_bytes=max_record_bytes)
    app.state.glmtts = ServerState(
        engine=engine,
        tokens=frozenset(tokens) if tokens is not None else None,
        faults=faults if isinstance(faults, Faults) else Faults.parse(faults),
        voices=tuple(voices) if voices is not None else tuple(VOICES),
        fault_header=fault_header,
        body_timeout=body_timeout,
        log=log,
    )
    app.add_middleware(_SeenMiddleware, log=log)
    return app
