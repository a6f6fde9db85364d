"""The short soak (``bench/soak.py``, 20 calls for 30 s, faults on) must pass every one of its checks.

It runs the harness as a user would, in its own process against the local server in another: barge-ins at
each of the three moments, injected disconnects, in-stream errors and first-byte timeouts, and the checks
(no frame after cancel, exact sample counts, only injected error types, no hang, bounded RSS, descriptors,
tasks and server records back where they started).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_short_soak_passes_all_checks(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.soak",
        "--calls",
        "20",
        "--minutes",
        "0.5",
        "--faults",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=280)
    report = json.loads(out.read_text())
    failed = {name: c["value"] for name, c in report["checks"].items() if not c["ok"]}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:], proc.stderr[-3000:])
    # the run exercised what it checks: cancels at every moment, every fault, and the errors they cause
    assert all(n > 0 for n in report["cancels"].values()), report["cancels"]
    assert all(n > 0 for n in report["faults"].values()), report["faults"]
    assert {"TruncatedStreamError", "InvalidRequestError", "APITimeoutError"} <= set(report["errors"])
    assert report["completed"] > 50
    assert report["server"].get("completed", 0) > 50 and report["server"].get("disconnected", 0) > 0
