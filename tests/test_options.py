"""VoiceOptions, resolve_engine and the Synthesizer's per-request timeout argument."""

import pytest

from glmtts_plugins import (
    CloudEngine,
    InvalidRequestError,
    Synthesizer,
    VoiceOptions,
    resolve_engine,
)
from glmtts_plugins.testing import ToneEngine


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"voice": ""}, "voice"), ({"speed": 3.0}, "speed"), ({"volume": 0}, "volume")],
)
def test_voice_options_refuse_bad_values_naming_the_field_and_keep_the_old(changes, field):
    opts = VoiceOptions("xiaochen", 1.2, 2.0)
    with pytest.raises(InvalidRequestError) as info:
        opts.replace(**changes)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert opts == VoiceOptions("xiaochen", 1.2, 2.0)


def test_voice_options_replace_keeps_fields_given_as_none():
    assert VoiceOptions().replace(speed=1.5, voice=None) == VoiceOptions(speed=1.5)
    with pytest.raises(TypeError, match="pitch"):
        VoiceOptions().replace(pitch=2)


async def test_resolve_engine_owns_only_the_cloud_engine_it_makes():
    tone = ToneEngine()
    assert resolve_engine(tone) == (tone, False)
    engine, owned = resolve_engine(api_key="k", base_url="http://127.0.0.1:9/api")
    assert isinstance(engine, CloudEngine) and owned
    await engine.aclose()
    with pytest.raises(ValueError, match="either engine"):
        resolve_engine(tone, api_key="k")


@pytest.mark.parametrize("timeout", [0, -1, "5", True, float("inf")])
def test_speak_refuses_a_bad_timeout_before_any_request(timeout):
    synth = Synthesizer(ToneEngine())
    with pytest.raises(InvalidRequestError) as info:
        synth.speak("你好。", timeout=timeout)
    assert info.value.field == "timeout"
    with pytest.raises(InvalidRequestError):
        synth.speak_stream(["你好。"], timeout=timeout)
