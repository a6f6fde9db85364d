"""A local server that speaks the GLM-TTS cloud protocol (and vLLM-Omni's) from any engine, with fault
injection, bounded memory and connection limits.

Layout: ``handler`` runs every request's shared steps over one small module per API (``cloud_api``,
``vllm_api``); ``responses`` streams the audio, ``records`` keeps the bounded request log, ``streams``
closes engine streams, ``limits`` bounds connections, ``runner`` serves in a thread or the foreground.
Needs the ``server`` extra (Starlette and uvicorn).
"""

from .app import create_app
from .cloud_api import CLOUD_PATH, MAX_BODY_BYTES
from .faults import FAULT_HEADER, Faults
from .limits import ConnectionLimits
from .records import RequestRecord
from .runner import LocalServer, ThreadedServer, check_bind, listening_socket, serve
from .vllm_api import VLLM_MAX_BODY_BYTES, VLLM_PATH

__all__ = [
    "CLOUD_PATH",
    "FAULT_HEADER",
    "MAX_BODY_BYTES",
    "VLLM_MAX_BODY_BYTES",
    "VLLM_PATH",
    "ConnectionLimits",
    "Faults",
    "LocalServer",
    "RequestRecord",
    "ThreadedServer",
    "check_bind",
    "create_app",
    "listening_socket",
    "serve",
]
