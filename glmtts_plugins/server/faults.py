"""Fault injection for the local server: what a flaky network or a misbehaving cloud would do.

A fault spec is ``key=value`` pairs separated by ``;`` (flags may omit ``=value``), set per server or
per request with the ``X-GLMTTS-Fault`` header (the header's keys override the server's). Keys:

==========================  =======================================================================
``first_byte_ms=N``         wait N ms after the headers before the first audio event
``chunk_bytes=N``           re-cut the audio into events of N bytes (odd values split samples)
``rtf=R``                   pace events at real-time factor R (0.5: one second of audio per 0.5 s)
``chunk_ms=N``              pause N ms between events
``disconnect_after=N``      drop the TCP connection after N audio events
``error_after=N``           after N audio events send an in-stream error (``error_code``, default 1214)
``status=S`` / ``code=C``   reject the request with HTTP S (200-599; 204 and 304 carry no body) and
                            business code C before any audio
``times=N``                 apply ``status``/``code`` to only the first N such requests (per server)
``no_finish``               end the stream cleanly without the ``finish_reason: "stop"`` event
``split``                   write the SSE bytes in irregular 1-7 byte pieces
``newline=crlf|cr|lf``      line ends of the SSE stream
``comments``                keep-alive comment lines and extra fields between events
``done``                    end with ``data: [DONE]``
``no_trailing_newline``     the last event has no trailing newline
``when_input=S``             apply this spec only to requests whose ``input`` contains S (others get
                            no faults); S cannot contain ``;`` or ``,``
``stamp``                   write the send time (``time.monotonic_ns``, little-endian) into each event's
                            first 8 audio bytes, for latency benchmarks
==========================  =======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["FAULT_HEADER", "Faults"]

FAULT_HEADER = "X-GLMTTS-Fault"


@dataclass(frozen=True, slots=True)
class Faults:
    first_byte_ms: float = 0.0
    chunk_bytes: int = 0
    rtf: float = 0.0
    chunk_ms: float = 0.0
    disconnect_after: int = -1
    error_after: int = -1
    error_code: str = "1214"
    status: int = 0
    code: str = ""
    times: int = -1
    no_finish: bool = False
    split: bool = False
    newline: str = "lf"
    comments: bool = False
    done: bool = False
    no_trailing_newline: bool = False
    stamp: bool = False
    when_input: str = ""

    @classmethod
    def parse(cls, spec: str | None, base: Faults | None = None) -> Faults:
        """Parse a spec, starting from ``base``; raises ``ValueError`` naming a bad key or value."""
        result = base or cls()
        if not spec:
            return result
        types = {f.name: f.type for f in fields(cls)}
        changes: dict[str, Any] = {}  # each value of its field's type, parsed below
        for item in spec.replace(",", ";").split(";"):
            item = item.strip()
            if not item:
                continue
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in types:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(sorted(types))}")
            kind = types[key]
            try:
                if kind == "bool":
                    changes[key] = value.strip().lower() not in ("0", "false", "no")
                elif kind == "int":
                    changes[key] = int(value)
                elif kind == "float":
                    changes[key] = float(value)
                else:
                    changes[key] = value.strip()
            except ValueError:
                raise ValueError(f"fault {key!r} needs a {kind} value, got {value!r}") from None
        _check(changes)
        return replace(result, **changes)

    @property
    def eol(self) -> bytes:
        return {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}[self.newline]


#: the least value of each numeric fault (``-1`` is "never" for the ``*_after`` keys, "always" for times)
_MINIMUM = {"disconnect_after": -1, "error_after": -1, "times": -1}


def _check(changes: dict[str, Any]) -> None:
    """Refuse values the server cannot act on: an HTTP status it cannot send, a negative or non-finite
    number, an unknown line end."""
    status = changes.get("status", 0)
    if status and not 200 <= status <= 599:
        raise ValueError(f"fault 'status' must be an HTTP status from 200 to 599, got {status}")
    for key, value in changes.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            least = _MINIMUM.get(key, 0)
            if not math.isfinite(value) or value < least:
                raise ValueError(f"fault {key!r} must be a finite number >= {least}, got {value!r}")
    if changes.get("newline", "lf") not in ("lf", "crlf", "cr"):
        raise ValueError("fault 'newline' must be lf, crlf or cr")
