"""The LiveKit agent example's session, run without a room against the local server: say, interrupt."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("livekit.agents")


from examples.livekit_agent.agent import GREETING, AgentConfig, CallCenterAgent, build_session
from glmtts_plugins import OfflineEngine

from ._livekit import start_roomless
from .conftest import local_server

TOKEN = "example-token-3b1c"


async def test_agent_session_says_the_greeting_and_stops_on_interruption() -> None:
    with local_server(OfflineEngine(), tokens=[TOKEN], faults="rtf=0.5") as srv:
        session = build_session(AgentConfig(tts_base_url=srv.base_url, tts_api_key=TOKEN))
        sink, sync = await start_roomless(session, CallCenterAgent())  # no LiveKit server needed

        # a full greeting first: all of its audio arrives, at 24 kHz, as real speech
        await session.say(GREETING).wait_for_playout()
        greeting_s = sum(f.duration for _, f in sink.frames)
        assert greeting_s > 2.0 and {f.sample_rate for _, f in sink.frames} == {24000}

        # then a long answer, interrupted by the caller after 1.5 s
        answer = (
            "好的，我帮您查一下。您本期账单金额是三千二百六十八元五角，"
            "最后还款日是十二月八日。需要我帮您设置自动还款吗？"
        )
        handle = session.say(answer)
        await asyncio.sleep(1.5)
        handle.interrupt()
        await handle.wait_for_playout()
        assert await srv.wait_for(lambda: all(r.outcome != "running" for r in srv.records), 2)
        outcomes = [r.outcome for r in srv.records]
        history = [m for m in session.history.items if m.type == "message" and m.role == "assistant"]
        await session.aclose()
        await sync.aclose()
    assert "disconnected" in outcomes  # the interrupted answer's request was closed, not left running
    assert not [t for t, _ in sink.frames if sink.cleared_at is not None and t > sink.cleared_at]
    assert history[0].text_content == GREETING and not history[0].interrupted
    said = history[-1].text_content or ""
    assert history[-1].interrupted and 0 < len(said) < len(answer) and answer.startswith(said.rstrip())


class RecordingEnviron(dict):
    """An environment that remembers which variables were looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def test_the_documented_settings_are_the_ones_read(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "examples" / "livekit_agent" / "README.md").read_text()
    table = readme.split("## Settings (environment)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, flags=re.M))
    values = {name: f"value-of-{name.lower()}" for name in documented}
    env = RecordingEnviron(values)
    monkeypatch.setattr(os, "environ", env)
    config = AgentConfig.from_env()
    assert env.read == documented  # nothing undocumented is read, nothing documented is ignored
    used = set(vars(config).values())
    assert all(value in used for value in values.values())  # each one lands in the configuration
