"""GLM-TTS for LiveKit Agents: ``from livekit.plugins import glmtts`` then ``glmtts.TTS(voice="tongtong")``.

Install with ``pip install "glmtts-plugins[livekit]"``. The plugin is a thin layer over the glmtts-plugins
core (engines, segmenter, resampler, cancellable utterances).
"""

from livekit.agents import Plugin

from .log import logger
from .tts import TTS, ChunkedStream, SynthesizeStream
from .version import __version__

__all__ = ["TTS", "ChunkedStream", "SynthesizeStream", "__version__"]


class GLMTTSPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(GLMTTSPlugin())
