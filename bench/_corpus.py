"""The replies of ``shared/corpus/replies.jsonl`` (beside the project), for the benches and the tests."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "replies.jsonl"


def replies(*, fallback: str | None = None) -> list[str]:
    """Every reply's text, in file order. Without the corpus: ``[fallback]`` if given, else the
    ``FileNotFoundError``."""
    if fallback is not None and not CORPUS.exists():
        return [fallback]
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]
