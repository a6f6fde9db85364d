"""What every adapter sets up the same way: validated voice options, and which engine to speak through."""

from __future__ import annotations

from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from typing import Any

from .engines.base import BaseEngine, Engine, as_engine, validate_options
from .voices import DEFAULT_VOICE

__all__ = ["VoiceOptions", "resolve_engine"]


@dataclass(frozen=True, slots=True)
class VoiceOptions:
    """Voice, speed (0.5-2.0) and volume ((0, 10]) of a request; invalid values raise
    :class:`~glmtts_plugins.InvalidRequestError` naming the field, at construction."""

    voice: str = DEFAULT_VOICE
    speed: float = 1.0
    volume: float = 1.0

    def __post_init__(self) -> None:
        validate_options(voice=self.voice, speed=self.speed, volume=self.volume)

    def replace(self, **changes: Any) -> VoiceOptions:
        """A validated copy with the given fields changed; a value of ``None`` keeps the current one."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown voice option(s): {', '.join(unknown)}; allowed: {', '.join(names)}")
        return _replace(self, **{k: v for k, v in changes.items() if v is not None})


def resolve_engine(
    engine: BaseEngine | Engine | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **cloud: Any,
) -> tuple[BaseEngine, bool]:
    """The engine an adapter speaks through, and whether the adapter owns it (and so closes it).

    Either ``engine`` (any core engine, or a custom one given the whole contract by
    :func:`~glmtts_plugins.as_engine`; left open by the adapter) or the cloud with ``api_key``/``base_url``
    and ``cloud`` keywords for :class:`~glmtts_plugins.CloudEngine`; not both.
    """
    if engine is not None:
        if api_key is not None or base_url is not None:
            raise ValueError("pass either engine or api_key/base_url, not both")
        return as_engine(engine), False
    from .engines.cloud import CloudEngine

    return CloudEngine(api_key, base_url, **cloud), True
