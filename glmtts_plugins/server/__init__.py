"""A local server that speaks the GLM-TTS cloud protocol from any engine, with fault injection.

Needs the ``server`` extra (Starlette and uvicorn).
"""

from .app import MAX_BODY_BYTES, RequestRecord, create_app
from .faults import FAULT_HEADER, Faults
from .runner import LocalServer, ThreadedServer, serve

__all__ = [
    "FAULT_HEADER",
    "MAX_BODY_BYTES",
    "Faults",
    "LocalServer",
    "RequestRecord",
    "ThreadedServer",
    "create_app",
    "serve",
]
