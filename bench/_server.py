"""A local server in its own process (so its CPU is not charged to the client being measured), and the
start-up every server process of the benches and tests goes through."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

TOKEN = "bench-token"


def free_port() -> int:
    """A free loopback port: nothing listens on it (connecting is refused) until someone binds it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    argv: list[str], port: int, *, within: float = 30.0, quiet: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv``, a server that will listen on ``port`` of loopback, for the ``with`` block.

    Yields the process once ``GET /health`` answers 2xx; raises ``RuntimeError`` if it has not after
    ``within`` seconds or the process ended. ``quiet`` discards its output. Terminated at the end.
    """
    output = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(argv, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the server did not start (exit code {proc.poll()})") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def server_process(faults: str = "", engine: str = "tone") -> Iterator[str]:
    """Run ``python -m bench._server`` and yield its base URL."""
    port = free_port()
    with running([sys.executable, "-m", "bench._server", str(port), engine, faults], port, within=20):
        yield f"http://127.0.0.1:{port}/api/paas/v4"


if __name__ == "__main__":
    from glmtts_plugins import BaseEngine
    from glmtts_plugins.server import serve
    from glmtts_plugins.testing import ToneEngine

    port, engine_name, faults = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    engine: BaseEngine
    if engine_name == "tone":
        engine = ToneEngine(ms_per_char=40, chunk_bytes=960)
    else:
        from glmtts_plugins import OfflineEngine

        engine = OfflineEngine()
    import logging

    logging.disable(logging.INFO)
    serve(engine, port=port, tokens=[TOKEN], faults=faults or None)
