"""The GLM-TTS cloud's named voices."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_VOICE", "VOICES", "Voice"]


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    name: str
    description: str


VOICES: dict[str, Voice] = {
    v.id: v
    for v in (
        Voice("tongtong", "彤彤", "default female voice"),
        Voice("xiaochen", "小陈", "male voice"),
        Voice("chuichui", "锤锤", "lively character voice"),
        Voice("jam", "jam", "character voice"),
        Voice("kazi", "kazi", "character voice"),
        Voice("douji", "douji", "character voice"),
        Voice("luodo", "luodo", "character voice"),
    )
}
DEFAULT_VOICE = "tongtong"
