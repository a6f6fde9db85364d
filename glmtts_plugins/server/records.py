"""What the server remembers of its requests, bounded by count and by bytes.

Tests read :class:`RequestRecord`\\ s to prove what happened on the wire, and ``requests_seen`` to tell a
reused connection from a new one. A long-running server must not grow with its traffic, so both logs are
capped: records by number and by the size of the bodies they hold, the seen-requests log by number with each
path cut short. With ``max_records=0`` (``glmtts serve``) nothing is kept.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .faults import Faults

__all__ = ["MAX_RECORDS", "MAX_RECORD_BYTES", "RequestLog", "RequestRecord"]

MAX_RECORDS = 10_000
MAX_RECORD_BYTES = 64 * 1024 * 1024  # of request bodies held by the records, approximately
MAX_SEEN_PATH = 256  # characters of a path kept in ``requests_seen``
MAX_FAULT_SPECS = 1024  # distinct fault specs whose ``times`` are counted


@dataclass
class RequestRecord:
    """What the server saw of one request; tests read these to prove client behaviour."""

    id: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    #: request headers, names lower-cased; an ``authorization`` value is masked as ``Bearer ***``
    headers: dict[str, str] = field(default_factory=dict)
    fault: str = ""
    status: int = 200
    code: str | None = None
    events: int = 0
    audio_bytes: int = 0
    #: completed | disconnected | aborted (cut short by a fault, or at shutdown) | error | rejected
    outcome: str = "running"
    started: float = field(default_factory=time.monotonic)
    first_audio_at: float | None = None  # time.monotonic() when the first audio event was written
    ended: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    #: approximate bytes this record holds (its body and headers), for the log's byte bound
    size: int = field(default=0, repr=False)
    #: listed in its log's ``records`` (its ``size`` counts against the byte bound); False once trimmed
    listed: bool = field(default=False, repr=False)

    def finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.ended = time.monotonic()
        self.done.set()


class RequestLog:
    """The records of recent requests, the ``(method, path, client port)`` of recent HTTP requests and the
    per-spec counts of ``times``-limited faults, each bounded.

    When the records pass ``max_records`` or ``max_bytes`` the oldest are dropped until half of each bound
    is left (a record still running lives on with whoever holds it; it is just no longer listed).
    """

    def __init__(self, *, max_records: int = MAX_RECORDS, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self.max_records, self.max_bytes = max_records, max_bytes
        self.records: list[RequestRecord] = []
        self.seen: deque[tuple[str, str, int]] = deque(maxlen=max_records)
        self.fault_counts: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes held by the listed records: the sum of their ``size``."""
        return self._bytes

    def new(self, path: str) -> RequestRecord:
        """A record for a request to ``path``, listed if this log keeps records."""
        rec = RequestRecord(id=secrets.token_hex(8), path=path[:MAX_SEEN_PATH])
        if self.max_records > 0:
            with self._lock:
                rec.listed = True
                self.records.append(rec)
                self._trim()
        return rec

    def hold(self, rec: RequestRecord, nbytes: int) -> None:
        """Count ``nbytes`` more held by ``rec`` (its body, its headers) against the byte bound.

        A record already trimmed (its body can arrive after newer requests pushed it out) holds nothing of
        the log's, so only its own ``size`` grows.
        """
        with self._lock:
            rec.size += nbytes
            if rec.listed:
                self._bytes += nbytes
                self._trim()

    def _trim(self) -> None:
        records = self.records
        if len(records) <= self.max_records and self._bytes <= self.max_bytes:
            return
        keep_count, keep_bytes = self.max_records // 2, self.max_bytes // 2
        drop, held = 0, self._bytes
        while drop < len(records) and (len(records) - drop > keep_count or held > keep_bytes):
            held -= records[drop].size
            records[drop].listed = False
            drop += 1
        del records[:drop]
        self._bytes = held

    def saw(self, method: str, path: str, port: int) -> None:
        """Note one HTTP request (any path), to show connection reuse."""
        self.seen.append((method, path[:MAX_SEEN_PATH], port))

    def take(self, faults: Faults, spec: str) -> bool:
        """Whether this request gets the injected HTTP error, honouring ``times`` per spec."""
        if not faults.status and not faults.code:
            return False
        if faults.times < 0:
            return True
        with self._lock:
            used = self.fault_counts.get(spec, 0)
            if spec not in self.fault_counts and len(self.fault_counts) >= MAX_FAULT_SPECS:
                del self.fault_counts[next(iter(self.fault_counts))]
            self.fault_counts[spec] = used + 1
        return used < faults.times
